#!/usr/bin/env python
"""Run hostile inputs through the ``sarvessel`` command and write docs/hostile_inputs.md.

Each case builds its inputs in a temporary folder, runs ``python -m sarvessel ...`` as a user
would, and records the exit code and the message (the last line on stderr; the temporary
folder shows as ``<tmp>``, pids, job ids and times as placeholders). A case fails when its exit
code is not the expected one or its output holds a traceback; the script then exits 1, so the
table in the docs is always what the command does.

    python scripts/hostile_inputs.py                       # every case -> docs/hostile_inputs.md
    python scripts/hostile_inputs.py --cases no-command,score-json-folder --out /tmp/t.md
    python scripts/hostile_inputs.py --list
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "hostile_inputs.md"
#: Exit codes: 0 success, 2 a refused input (one line on stderr).
OK, REFUSED = 0, 2

LABEL_HEADER = ("scene_id,detect_scene_row,detect_scene_column,is_vessel,is_fishing,"
                "vessel_length_m,confidence,distance_from_shore_km\n")
PRED_HEADER = ("scene_id,detect_scene_row,detect_scene_column,is_vessel,is_fishing,"
               "vessel_length_m,score\n")

#: A case's set-up: builds inputs under the folder, returns the arguments of ``sarvessel`` and
#: an optional context held while the command runs (e.g. another run's lock).
Setup = Callable[[Path], tuple[list[str], contextlib.AbstractContextManager | None]]


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    expect: int
    setup: Setup


@dataclass
class Outcome:
    case: Case
    argv: list[str]
    code: int | None
    message: str
    problem: str = ""  # why the case failed ("" when it behaved as expected)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", help="comma-separated case names (default: all)")
    ap.add_argument("--out", type=Path, default=DOC,
                    help=f"Markdown file to write (default {DOC.relative_to(ROOT)})")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    args = ap.parse_args()
    if args.list:
        for c in CASES:
            print(f"{c.name}\t{c.title}")
        return 0
    chosen = CASES
    if args.cases:
        names = args.cases.split(",")
        unknown = sorted(set(names) - {c.name for c in CASES})
        if unknown:
            ap.error(f"unknown case(s): {', '.join(unknown)} (see --list)")
        chosen = [c for c in CASES if c.name in names]
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = list(pool.map(run_case, chosen))
    text = render(outcomes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    bad = [o for o in outcomes if o.problem]
    for o in outcomes:
        print(f"{'FAIL' if o.problem else 'ok  '} {o.case.name}: exit {o.code}  {o.message}"
              + (f"  [{o.problem}]" if o.problem else ""))
    print(f"{len(outcomes) - len(bad)}/{len(outcomes)} cases as expected; wrote {args.out}")
    return 1 if bad else 0


def run_case(case: Case) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="hostile_") as d:
        tmp = Path(d).resolve()
        try:
            argv, hold = case.setup(tmp)
        except SkipCase as exc:
            return Outcome(case, [], None, f"skipped: {exc}")
        env = {**os.environ, "COLUMNS": "200"}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
        with hold or contextlib.nullcontext():
            proc = subprocess.run([sys.executable, "-m", "sarvessel", *argv], cwd=tmp,
                                  capture_output=True, text=True, timeout=600, env=env)
        lines = [x for x in proc.stderr.splitlines() if x.strip()]
        message = normalise(lines[-1] if lines else "", tmp)
        problem = ""
        if "Traceback" in proc.stderr or "Traceback" in proc.stdout:
            problem = "traceback"
        elif proc.returncode != case.expect:
            problem = f"expected exit {case.expect}"
        elif case.expect == REFUSED and not message.startswith(("sarvessel", "usage")):
            problem = "no one-line message"
        return Outcome(case, [normalise(a, tmp) for a in argv], proc.returncode, message,
                       problem)


class SkipCase(Exception):
    """A case that cannot run here (a package it needs to build its input is missing)."""


def normalise(text: str, tmp: Path) -> str:
    """Stable text for the docs: no temporary paths, pids, job ids or times."""
    text = text.replace(str(tmp), "<tmp>")
    text = re.sub(r"\bpid \d+", "pid <pid>", text)
    text = re.sub(r"\bjob [0-9a-f]{16}\b", "job <job>", text)
    text = re.sub(r"since \d{4}-\d\d-\d\dT[\d:]+[+-]\d{4}", "since <time>", text)
    return text


def render(outcomes: list[Outcome]) -> str:
    head = [
        "# Hostile inputs: what `sarvessel` does with them",
        "",
        "Generated by `python scripts/hostile_inputs.py`, which builds each input in a",
        "temporary folder (`<tmp>`), runs the command and records its exit code and the last",
        "line it writes to stderr; do not edit by hand, rerun it. Exit 0 is success, 2 a",
        "refused input: one line naming the file or option and the problem, no traceback,",
        "and nothing written (refusals come before any tile runs and before the journal or",
        "any output exists). `tests/test_hostile_inputs.py` runs a few of the rows with the",
        "tests. How the runtime treats each kind of input: [runtime.md](runtime.md).",
        "",
        "| case | command | exit | message |",
        "|---|---|---|---|",
    ]
    rows = []
    for o in outcomes:
        cmd = "" if o.code is None else " ".join(["sarvessel", *(_quote(a) for a in o.argv)])
        code = "skipped" if o.code is None else str(o.code)
        mark = f" **(unexpected: {o.problem})**" if o.problem else ""
        rows.append(f"| {_md(o.case.title)} <br>`{o.case.name}` | `{_md(cmd)}` | {code}{mark} "
                    f"| {_md(o.message)} |")
    return "\n".join(head + rows) + "\n"


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./<>=:,+-]*", arg) else repr(arg)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


# -- inputs -----------------------------------------------------------------------------------


def scene(tmp: Path, name: str = "S_v", *, vv: float | np.ndarray = -22.0, shape=(300, 300),
          vh: float | np.ndarray | None = None) -> Path:
    folder = tmp / name
    folder.mkdir(parents=True)
    a = np.broadcast_to(np.asarray(vv, np.float32), shape).copy()
    b = a - 8 if vh is None else np.broadcast_to(np.asarray(vh, np.float32), shape).copy()
    tifffile.imwrite(folder / "VV_dB.tif", a)
    tifffile.imwrite(folder / "VH_dB.tif", b)
    return folder


def csv_pair(tmp: Path, pred_row: str = "A,10,10,True,False,50,0.9",
             label_row: str = "A,11,10,True,False,60,HIGH,5") -> tuple[Path, Path]:
    (tmp / "p.csv").write_text(PRED_HEADER + pred_row + "\n")
    (tmp / "l.csv").write_text(LABEL_HEADER + label_row + "\n")
    return tmp / "p.csv", tmp / "l.csv"


def shoreline(tmp: Path, payload: bytes, scene_id: str = "A") -> Path:
    root = tmp / "shoreline"
    root.mkdir(exist_ok=True)
    (root / f"{scene_id}_shoreline.npy").write_bytes(payload)
    return root


def hostile_pickle(tmp: Path) -> bytes:
    """An .npy object-array header and a pickle that would create ``<tmp>/pwned``."""
    import pickle

    good = tmp / "good.npy"
    np.save(good, np.array([np.zeros((2, 2)), np.ones((3, 2))], dtype=object), allow_pickle=True)
    raw = good.read_bytes()

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp / "pwned",))

    return raw[: raw.index(b"\n") + 1] + pickle.dumps(Evil(), protocol=3)


def wrong_head_model(tmp: Path) -> Path:
    """A model whose graph makes a head map twice the contract's size, with symbolic output
    dims (the load-time check cannot see it)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise SkipCase("needs the onnx package to build the model") from exc
    from sarvessel.runtime.contract import ModelMetadata

    tile, stride, reg_max, nc, ch = 64, 8, 4, 2, 2
    nout = 4 * reg_max + nc
    w = np.zeros((nout, ch, 1, 1), np.float32)
    b = np.zeros(nout, np.float32)
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
         helper.make_node("Conv", ["p", "w", "b"], ["y"])], "wrong",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", ch, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", nout, "oh", "ow"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp / "wrong.onnx"
    onnx.save(model, str(path))
    ModelMetadata(name="wrong", tile_size=tile, channels=ch, stride=stride, reg_max=reg_max,
                  nc=nc, bands=["VV_dB", "VH_dB"], class_names=["a", "b"],
                  conf_threshold=0.5, iou_threshold=0.5).write_sidecar(path)
    return path


@contextlib.contextmanager
def another_run(lock: Path) -> Iterator[None]:
    """Hold a scene's job lock as a live run does."""
    from sarvessel.runtime.journal import JobLock

    with JobLock(lock, job="0123456789abcdef"):
        yield


def _s(argv: list[str], hold: contextlib.AbstractContextManager | None = None):
    return argv, hold


def _truncated(tmp: Path) -> list[str]:
    s = scene(tmp, shape=(512, 512))
    tifffile.imwrite(s / "VV_dB.tif", np.zeros((512, 512), np.float32), tile=(128, 128))
    (s / "VV_dB.tif").write_bytes((s / "VV_dB.tif").read_bytes()[:5000])
    return ["detect", "S_v", "--backend", "cfar"]


def _missing_band(tmp: Path) -> list[str]:
    s = scene(tmp)
    (s / "VH_dB.tif").unlink()
    return ["detect", "S_v", "--backend", "cfar"]


def _corrupt_shoreline_detect(tmp: Path) -> list[str]:
    scene(tmp / "scenes", "S_v")
    (tmp / "scenes" / "labels.csv").write_text(LABEL_HEADER + "S_v,10,10,True,False,50,HIGH,1\n")
    shoreline(tmp / "scenes", b"\x93NUMPY\x01\x00garbage", "S_v")
    return ["detect", "scenes/S_v", "--backend", "cfar", "--labels", "scenes/labels.csv"]


def _lock_held(tmp: Path):
    scene(tmp)
    return _s(["detect", "S_v", "--backend", "cfar", "--out", "out"],
              another_run(tmp / "out" / "S_v.journal.lock"))


def _folder_output(tmp: Path) -> list[str]:
    scene(tmp)
    (tmp / "out" / "S_v.csv").mkdir(parents=True)
    return ["detect", "S_v", "--backend", "cfar", "--out", "out"]


CASES: list[Case] = [
    Case("no-command", "no command at all", REFUSED, lambda t: _s([])),
    Case("unknown-command", "an unknown command", REFUSED, lambda t: _s(["detcet", "x"])),
    Case("detect-no-scene", "a scene folder that does not exist", REFUSED,
         lambda t: _s(["detect", "nowhere", "--backend", "cfar"])),
    Case("detect-missing-band", "a scene folder without VH_dB.tif", REFUSED,
         lambda t: _s(_missing_band(t))),
    Case("detect-truncated-tiff", "a truncated band TIFF", REFUSED,
         lambda t: _s(_truncated(t))),
    Case("detect-size-mismatch", "VV and VH of different sizes", REFUSED,
         lambda t: _s([*(_mismatch(t)), "--backend", "cfar"])),
    Case("detect-all-nan", "a scene of NaN only", REFUSED,
         lambda t: (scene(t, vv=np.nan, vh=np.nan), _s(["detect", "S_v", "--backend",
                                                          "cfar"]))[1]),
    Case("detect-all-nodata", "a scene of -32768 (nodata) only", REFUSED,
         lambda t: (scene(t, vv=-32768.0, vh=-32768.0),
                    _s(["detect", "S_v", "--backend", "cfar"]))[1]),
    Case("detect-vh-nodata", "VH all nodata, VV fine", REFUSED,
         lambda t: (scene(t, vh=-32768.0), _s(["detect", "S_v", "--backend", "cfar"]))[1]),
    Case("detect-linear-units", "bands in linear sigma0, not dB", REFUSED,
         lambda t: (scene(t, vv=0.03, vh=0.01),
                    _s(["detect", "S_v", "--backend", "cfar"]))[1]),
    Case("detect-out-is-file", "--out names a file", REFUSED,
         lambda t: ((t / "afile").write_text("x"), scene(t),
                    _s(["detect", "S_v", "--backend", "cfar", "--out", "afile"]))[2]),
    Case("detect-output-is-folder", "an output file name taken by a folder", REFUSED,
         lambda t: _s(_folder_output(t))),
    Case("detect-locked", "another live run writes the same scene into --out", REFUSED,
         _lock_held),
    Case("detect-overlap", "--overlap 511 (over half a tile)", REFUSED,
         lambda t: (scene(t), _s(["detect", "S_v", "--backend", "cfar", "--overlap",
                                  "511"]))[1]),
    Case("detect-batch", "--batch 0", REFUSED,
         lambda t: (scene(t), _s(["detect", "S_v", "--backend", "cfar", "--batch", "0"]))[1]),
    Case("detect-threads", "--threads -3", REFUSED,
         lambda t: (scene(t), _s(["detect", "S_v", "--threads", "-3"]))[1]),
    Case("detect-conf", "--conf 1.5", REFUSED,
         lambda t: (scene(t), _s(["detect", "S_v", "--conf", "1.5"]))[1]),
    Case("detect-cfar-model", "--model with --backend cfar", REFUSED,
         lambda t: (scene(t), _s(["detect", "S_v", "--backend", "cfar", "--model",
                                  "m.onnx"]))[1]),
    Case("detect-cfar-conf", "--conf with --backend cfar", REFUSED,
         lambda t: (scene(t), _s(["detect", "S_v", "--backend", "cfar", "--conf", "0.5"]))[1]),
    Case("detect-unknown-backend", "--backend gpu", REFUSED,
         lambda t: _s(["detect", "S_v", "--backend", "gpu"])),
    Case("detect-model-missing", "--model that does not exist", REFUSED,
         lambda t: (scene(t), _s(["detect", "S_v", "--backend", "onnx", "--model",
                                  "none.onnx"]))[1]),
    Case("detect-wrong-head", "a model whose head map is not its contract's shape", REFUSED,
         lambda t: (scene(t), wrong_head_model(t),
                    _s(["detect", "S_v", "--backend", "onnx", "--model", "wrong.onnx"]))[2]),
    Case("detect-labels-missing", "--labels that does not exist", REFUSED,
         lambda t: (scene(t), _s(["detect", "S_v", "--backend", "cfar", "--labels",
                                  "none.csv"]))[1]),
    Case("detect-labels-bad-shoreline", "--labels with a corrupt shoreline .npy", REFUSED,
         lambda t: _s(_corrupt_shoreline_detect(t))),
    Case("detect-no-georef", "a scene without georeferencing (no GeoJSON, noted)", OK,
         lambda t: (scene(t), _s(["-q", "detect", "S_v", "--backend", "cfar"]))[1]),
    Case("score-missing-column", "a predictions CSV without its columns", REFUSED,
         lambda t: (csv_pair(t), (t / "p.csv").write_text("scene_id,detect_scene_row\nA,1\n"),
                    _s(["score", "p.csv", "l.csv"]))[2]),
    Case("score-negative-row", "a negative detect_scene_row", REFUSED,
         lambda t: (csv_pair(t, pred_row="A,-3,10,True,False,50,0.9"),
                    _s(["score", "p.csv", "l.csv"]))[1]),
    Case("score-negative-length", "a negative vessel_length_m", REFUSED,
         lambda t: (csv_pair(t, label_row="A,11,10,True,False,-60,HIGH,5"),
                    _s(["score", "p.csv", "l.csv"]))[1]),
    Case("score-negative-tolerance", "--distance-tolerance-m -5", REFUSED,
         lambda t: (csv_pair(t), _s(["score", "p.csv", "l.csv", "--distance-tolerance-m",
                                     "-5"]))[1]),
    Case("score-nan-tolerance", "--shore-tolerance-km nan", REFUSED,
         lambda t: (csv_pair(t), _s(["score", "p.csv", "l.csv", "--shore-tolerance-km",
                                     "nan"]))[1]),
    Case("score-json-folder", "--json naming a folder", REFUSED,
         lambda t: (csv_pair(t), _s(["score", "p.csv", "l.csv", "--json", "."]))[1]),
    Case("score-json-under-file", "--json under a file", REFUSED,
         lambda t: (csv_pair(t), _s(["score", "p.csv", "l.csv", "--json", "p.csv/s.json"]))[1]),
    Case("score-corrupt-shoreline", "a corrupt shoreline .npy", REFUSED,
         lambda t: (csv_pair(t), shoreline(t, b"\x93NUMPY\x01\x00garbage"),
                    _s(["score", "p.csv", "l.csv", "--shoreline-dir", "shoreline"]))[2]),
    Case("score-hostile-pickle", "a shoreline .npy whose pickle would run code", REFUSED,
         lambda t: (csv_pair(t), shoreline(t, hostile_pickle(t)),
                    _s(["score", "p.csv", "l.csv", "--shoreline-dir", "shoreline"]))[2]),
    Case("eval-iou", "eval --iou 2", REFUSED,
         lambda t: _s(["eval", "m.onnx", "--data", "d", "--iou", "2"])),
    Case("eval-overlap", "eval --overlap -5", REFUSED,
         lambda t: _s(["eval", "m.onnx", "--data", "d", "--overlap", "-5"])),
    Case("eval-conf", "eval --conf 1.5", REFUSED,
         lambda t: _s(["eval", "m.onnx", "--data", "d", "--conf", "1.5"])),
    Case("eval-threads", "eval --threads -3", REFUSED,
         lambda t: _s(["eval", "m.onnx", "--data", "d", "--threads", "-3"])),
    Case("eval-pr-png-folder", "eval --pr-png naming a folder", REFUSED,
         lambda t: ((t / "d").mkdir(), _s(["eval", "m.onnx", "--data", "d", "--pr-png",
                                          "d"]))[1]),
    Case("eval-json-under-file", "eval --json under a file", REFUSED,
         lambda t: ((t / "f").write_text("x"),
                    _s(["eval", "m.onnx", "--data", "d", "--json", "f/r.json"]))[1]),
    Case("eval-gallery-folder", "eval --gallery naming a folder", REFUSED,
         lambda t: ((t / "g").mkdir(), _s(["eval", "m.onnx", "--data", "d", "--gallery",
                                          "g"]))[1]),
    Case("eval-proxy-threads", "eval-proxy --threads 0", REFUSED,
         lambda t: _s(["eval-proxy", "m.onnx", "--threads", "0"])),
    Case("eval-proxy-json-folder", "eval-proxy --json naming a folder", REFUSED,
         lambda t: _s(["eval-proxy", "m.onnx", "--json", "."])),
    Case("bench-repeat", "bench --repeat -1", REFUSED,
         lambda t: _s(["bench", "x", "--repeat", "-1"])),
    Case("bench-json-folder", "bench --json naming a folder", REFUSED,
         lambda t: _s(["bench", "x", "--json", "."])),
]


def _mismatch(tmp: Path) -> list[str]:
    s = scene(tmp)
    tifffile.imwrite(s / "VH_dB.tif", np.full((200, 300), -30.0, np.float32))
    return ["detect", "S_v"]


if __name__ == "__main__":
    sys.exit(main())
