"""The benchmark suite: one run, one machine, one report (``sarvessel bench --quick|--full``).

In order: the host is recorded; the scaling scenes are generated (reused when present); the
peer is exported (cached); every backend kind of this build and the peers run over the backend
scene, each in its own process (:func:`~sarvessel.runtime.bench.scene.bench_scene`); the networks
are timed per tile with the same threads; the scaling backend runs over every scaling scene; the
FPGA side is put beside the published DPU system; accuracy is scored per configuration; the JSON,
Markdown and plots are written.

Presets (:class:`Mode`): ``quick`` (CI, a few minutes on 2 cores: scenes of 1, 2 and 4 MPx,
one 2048² held-out scene, 16 SSDD images) and ``full`` (the documented run: 10, 50, 200 and
700 MPx, the 700 being the average xView3 scene, 24,400 × 29,400; 32 held-out 4096² scenes; the
whole SSDD test split).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from sarvessel.benchmark.scenes import ensure_scene, scene_shape
from sarvessel.runtime.bench import (
    RunSpec,
    available_kinds,
    bench_scene,
    default_threads,
    host_info,
    measure_in_child,
    scaling_summary,
    write_report,
)
from sarvessel.runtime.bench.host import load_average
from sarvessel.runtime.bench.report import SCHEMA
from sarvessel.runtime.contract import TILE_SIZE
from sarvessel.runtime.power import detect_sensor

log = logging.getLogger(__name__)

__all__ = ["Mode", "SuiteSettings", "default_backends", "repo_file", "run_suite"]

#: The repository checkout this module runs from (models/ and the hardware estimate live there).
REPO = Path(__file__).resolve().parents[3]


class Mode(str, Enum):
    """Which preset of :class:`SuiteSettings`."""

    QUICK = "quick"  #: CI: small scenes, few repeats, a slice of the accuracy sets
    FULL = "full"  #: the documented run, up to a 700 MPx scene


def default_backends() -> list[str]:
    """Every backend kind of this build, and each other scene model shipped beside the default
    one as an ``onnx`` configuration of its own (the QCDQ export beside the integer-exact graph:
    the before and after of the CPU fallback, in the same run)."""
    from sarvessel.runtime.backends import DEFAULT_SCENE_MODEL, SHIPPED_MODELS

    kinds = available_kinds()
    others = [p for p in sorted(SHIPPED_MODELS.glob("*.onnx"))
              if p != DEFAULT_SCENE_MODEL and p.with_suffix(".json").is_file()]
    i = kinds.index("onnx") + 1 if "onnx" in kinds else len(kinds)
    return kinds[:i] + [f"onnx:{_short(p)}" for p in others] + kinds[i:]


def repo_file(relative: str) -> Path:
    """A file of the repository checkout (``models/...``), else relative to the current
    folder."""
    p = REPO / relative
    return _short(p) if p.exists() else Path(relative)


def _short(path: Path) -> Path:
    """``path`` relative to the current folder when it lies inside it (reports stay readable
    and comparable between checkouts)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return Path(path)


@dataclass
class SuiteSettings:
    """What one suite run measures. Sizes in megapixels (700 = the average xView3 scene)."""

    #: The preset these settings started from.
    mode: Mode
    #: Where the report (JSON, Markdown, PNGs) is written.
    report: Path
    #: Generated scenes, peer exports and run outputs, reused between runs.
    work: Path = Path("out/bench")
    #: Scaling scene sizes (MPx).
    sizes_mpx: tuple[float, ...] = (1.0, 2.0, 4.0)
    #: Size of the scene every backend and peer runs on (MPx); one of the scaling scenes shares
    #: it when the sizes include it.
    scene_mpx: float = 2.0
    #: Backend specs (``KIND[:PATH]``); the default is :func:`default_backends`.
    backends: list[str] = field(default_factory=default_backends)
    #: The backend of the scaling runs (the CPU fallback).
    scaling_backend: str = "onnx"
    #: Run the scaling scenes at all.
    scaling: bool = True
    #: Tile sizes the YOLOv8n peer runs at: ultralytics' 640 and our tile; empty for none.
    peer_tiles: tuple[int, ...] = (640, TILE_SIZE)
    #: onnxruntime threads, the same for every session; the default is every usable CPU.
    threads: int = field(default_factory=default_threads)
    #: Tiles per backend call.
    batch: int = 8
    #: Batch sizes and repeats of the per-tile network timing.
    network_batches: tuple[int, ...] = (1, 8)
    network_repeats: int = 3
    #: Score accuracy at all.
    accuracy: bool = True
    #: Held-out generated scenes (seeds >= 900) and their side (px).
    eval_seeds: tuple[int, ...] = (900,)
    eval_size: int = 2048
    #: SSDD split and how many of its images (None: all).
    ssdd_split: str = "test"
    ssdd_images: int | None = 16
    #: The SSDD model scored for network backends.
    ssdd_model: Path = field(default_factory=lambda: repo_file(
        "models/ssdd_w4a4/ssdd_w4a4.onnx"))
    #: The FINN estimate of the shipped scene model.
    hw_estimate: Path = field(default_factory=lambda: repo_file(
        "models/xview3_w4a4/hw_estimate/estimate.json"))
    #: Seed of the benchmark scenes (not held out: they are timed, not scored).
    seed: int = 0
    #: Longest one run may take (s); None for no limit.
    timeout_s: float | None = None

    @classmethod
    def preset(cls, mode: Mode | str, **overrides: Any) -> SuiteSettings:
        """The ``quick`` or ``full`` preset with ``overrides`` (None values are ignored)."""
        mode = Mode(mode)
        base = cls(mode=mode, report=Path(f"out/bench/{mode.value}"))
        if mode is Mode.FULL:
            base = replace(base, sizes_mpx=(10.0, 50.0, 200.0, 700.0), scene_mpx=50.0,
                           network_repeats=10, eval_seeds=tuple(range(900, 932)),
                           eval_size=4096, ssdd_images=None)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mode"] = self.mode.value
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def run_suite(settings: SuiteSettings, *, command: str = "") -> tuple[dict[str, Any], dict]:
    """Run the suite; return the report and the paths written (by kind)."""
    s = settings
    t_start = time.perf_counter()
    work = Path(s.work)
    report: dict[str, Any] = {
        "schema": SCHEMA, "mode": s.mode.value, "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": host_info(), "settings": s.to_dict(), "notes": [],
    }
    sensor = detect_sensor()
    report["power_sensor"] = sensor.name if sensor.kind.value != "none" else \
        getattr(sensor, "note", "none")

    # scenes: the scaling sizes and the backend scene, generated once
    sizes = sorted(set(s.sizes_mpx if s.scaling else ()) | {s.scene_mpx})
    t0 = time.perf_counter()
    scenes = {mpx: ensure_scene(work / "scenes", height=scene_shape(mpx)[0],
                                width=scene_shape(mpx)[1], seed=s.seed) for mpx in sizes}
    report["scene_generation_s"] = round(time.perf_counter() - t0, 1)

    peers, peer_note = _peers(s, work)
    if peer_note:
        report["notes"].append(peer_note)

    specs = [RunSpec.parse(b, threads=s.threads, batch=s.batch) for b in s.backends]
    scene = scenes[s.scene_mpx]
    sections = bench_scene(scene, specs=specs, out_dir=work / "runs" / scene.name,
                           peers=peers.paths if peers else None, threads=s.threads,
                           batch=s.batch, network_batches=s.network_batches,
                           network_repeats=s.network_repeats, hw_estimate=s.hw_estimate,
                           sensor=sensor, timeout_s=s.timeout_s)
    report |= sections
    if peers is not None:
        report.setdefault("peers", {})["architecture"] = peers.architecture
    elif peer_note:
        report["peers"] = {"skipped": peer_note}

    if s.scaling:
        report["scaling"] = _scaling(s, scenes, report["backends"], work, sensor)

    if s.accuracy:
        report["accuracy"] = _accuracy(s, specs, work)

    report["load_average_end"] = load_average()
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    paths = write_report(report, s.report)
    return report, paths


# -- steps ----------------------------------------------------------------------------------


def _peers(s: SuiteSettings, work: Path) -> tuple[Any, str]:
    if not s.peer_tiles:
        return None, ""
    from sarvessel.benchmark.peers import PeerUnavailable, export_peers

    try:
        return export_peers(work / "peers", s.peer_tiles), ""
    except PeerUnavailable as exc:
        log.warning("peer skipped: %s", exc)
        return None, f"YOLOv8n peer skipped: {exc}"


def _scaling(s: SuiteSettings, scenes: dict[float, Path], backend_runs: Sequence[dict],
             work: Path, sensor: Any) -> dict[str, Any]:
    spec = RunSpec.parse(s.scaling_backend, threads=s.threads, batch=s.batch)
    points = []
    for mpx in sorted(s.sizes_mpx):
        folder = scenes[mpx]
        same = next((r for r in backend_runs if r.get("spec") == spec.arg
                     and r.get("scene") == str(folder) and not r.get("skipped")), None)
        if same is not None:
            run = same
        else:
            log.info("scaling: %s on %s", spec.name, folder.name)
            run = measure_in_child(folder, spec, out_dir=work / "runs" / folder.name / spec.name,
                                   sensor=sensor, timeout_s=s.timeout_s)
        points.append({k: v for k, v in run.items() if k != "outputs"})
    out = {"backend": spec.name, "points": points, "summary": scaling_summary(points)}
    done = [p for p in points if not p.get("skipped")]
    if done:
        big = max(done, key=lambda p: p["megapixels"])
        out["headline"] = {"scene_id": big["scene_id"], "megapixels": big["megapixels"],
                           "height": big["height"], "width": big["width"],
                           "wall_s": big["wall_s"], "peak_rss_mb": big["peak_rss_mb"],
                           "command": f"sarvessel detect {big['scene']} --backend "
                                      f"{spec.arg.replace(':', ' --model ')} --threads "
                                      f"{s.threads} --no-resume"}
    return out


def _accuracy(s: SuiteSettings, specs: Sequence[RunSpec], work: Path) -> dict[str, Any]:
    from sarvessel.benchmark.accuracy import ssdd_accuracy, xview3_accuracy
    from sarvessel.runtime.errors import SarvesselError

    out: dict[str, Any] = {}
    try:
        out["xview3"] = xview3_accuracy(specs, root=work / "eval_scenes", seeds=s.eval_seeds,
                                        size=s.eval_size)
    except SarvesselError as exc:
        out["xview3"] = {"skipped": str(exc)}
    out["ssdd"] = ssdd_accuracy(specs, model=s.ssdd_model, split=s.ssdd_split,
                                limit=s.ssdd_images, threads=s.threads)
    return out
