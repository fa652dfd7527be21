"""Runtime commands: ``detect`` and ``bench`` (``demo`` is :mod:`sarvessel.demo`; ``synth``,
``score`` and ``eval`` are the ground tools' own commands; ``bench --quick|--full`` is run by
the benchmark suite, :mod:`sarvessel.benchmark`, which adds its options here).

Thin handlers: parse, call the library, print a short report. User errors are raised as
:class:`~sarvessel.runtime.errors.SarvesselError` and printed by :mod:`sarvessel.cli`.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from sarvessel.runtime.backends import BackendKind
from sarvessel.runtime.backends.tta import TTA_SETS
from sarvessel.runtime.bench.latency import LatencyRecorder, timed_detector
from sarvessel.runtime.bench.measure import available_kinds
from sarvessel.runtime.bench.memory import peak_rss_bytes, reset_peak_rss
from sarvessel.runtime.detect import detect_scene
from sarvessel.runtime.detector import Detector, make_detector
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io.outputs import check_writable_file, write_json
from sarvessel.runtime.io.scene import open_scene
from sarvessel.runtime.pipeline import PipelineConfig, SceneResult, run_scene
from sarvessel.runtime.power import DEFAULT_WINDOW_S, PowerGovernor, detect_sensor
from sarvessel.runtime.prescreen import PrescreenConfig, db_to_u8

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the runtime sub-commands (``detect``, ``bench``) to the ``sarvessel`` parser."""
    p = sub.add_parser(
        "detect", help="detect vessels in an xView3 scene folder or GeoTIFF",
        description="Stream a scene tile row by tile row through a detector and write an xView3 "
        "submission CSV, a GeoJSON and a quicklook PNG. An interrupted run resumes from its "
        "journal.",
    )
    p.add_argument("scene", type=Path, help="xView3 scene folder (VV_dB.tif, VH_dB.tif, ...) "
                   "or a GeoTIFF with VV, VH bands in dB")
    p.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out)")
    p.add_argument("--labels", type=Path, help="xView3 labels CSV: also score the result")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing journal")
    p.add_argument("--wait", action="store_true",
                   help="if another run is writing this scene into --out, wait for it to end "
                   "(default: refuse at once, naming its pid)")
    add_backend_args(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser(
        "bench", help="benchmarks: a scene's throughput cold and warm, a report per backend, "
        "or the whole suite (--quick / --full)",
        description="Three ways to run: `bench SCENE` times the pipeline on a scene, cold (the "
        "scene's files evicted from the page cache first) and warm, per stage (--backend noop "
        "for the I/O path alone). `bench SCENE --report DIR` measures every backend (and any "
        "--peer) on SCENE, each in its own process: per-tile p50/p99 by stage, MPx/s, peak RSS, "
        "energy where a sensor exists, the FPGA side, as JSON, Markdown and PNG plots. "
        "`bench --quick|--full` is the suite behind the documented figures: generated scenes "
        "up to 700 MPx, the YOLOv8n peer, accuracy beside speed (docs/benchmarks.md).",
    )
    p.add_argument("scene", type=Path, nargs="?",
                   help="xView3 scene folder or GeoTIFF to time (not with --quick/--full)")
    p.add_argument("--repeat", type=int, default=3, help="warm repetitions (default 3)")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    add_backend_args(p, default=BackendKind.NOOP)
    g = p.add_argument_group("report (--report, --quick, --full)")
    g.add_argument("--quick", action="store_true",
                   help="the suite's CI preset (a few minutes on 2 cores)")
    g.add_argument("--full", action="store_true",
                   help="the suite's documented run (scenes up to 700 MPx; tens of minutes)")
    g.add_argument("--report", type=Path, metavar="DIR",
                   help="write bench.json, bench.md and the PNG plots here (with SCENE: a "
                   "report on that scene; default for the suite: out/bench/quick|full)")
    g.add_argument("--backends", type=_specs, metavar="KIND[:MODEL],...",
                   help="backends to measure (default: every kind of this build: "
                   f"{','.join(available_kinds())})")
    g.add_argument("--peer", type=Path, action="append", metavar="ONNX",
                   help="a peer network (float [B,3,T,T] ONNX, e.g. the YOLOv8n export) run "
                   "through the same tiling and timed per tile beside ours (repeatable)")
    g.add_argument("--hw-estimate", type=Path, metavar="JSON",
                   help="`sarvessel hw estimate` report for the FPGA side (default for the "
                   "suite: models/xview3_w4a4/hw_estimate/estimate.json)")
    p.set_defaults(func=cmd_bench)


# -- handlers -----------------------------------------------------------------------------


def cmd_detect(args: argparse.Namespace) -> int:
    detector = make_cli_detector(args)
    config = pipeline_config(args, detector.tile_size)
    scorer = None
    if args.labels:  # bad labels or shorelines are reported before the scene runs, not after
        prepare = getattr(args, "prepare_score", None)
        if prepare is None:  # pragma: no cover - sarvessel.evaluation ships with the runtime
            raise SarvesselError("--labels needs sarvessel.evaluation, which is not installed")
        scorer = prepare(args.labels, Path(os.path.abspath(args.scene)))
    with make_governor(args) as governor:
        result, paths = run_with_progress(args.scene, detector, out_dir=args.out, config=config,
                                          resume=not args.no_resume, governor=governor,
                                          wait_s=math.inf if args.wait else 0.0)
    report(result, detector.name, paths)
    if scorer is not None:
        scorer(paths["csv"])
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.quick or args.full:
        if args.quick and args.full:
            raise SarvesselError("--quick and --full are two presets: choose one")
        if args.scene is not None:
            raise SarvesselError("--quick/--full generate their own scenes: give no SCENE "
                                 "(or use `bench SCENE --report DIR`)")
        suite_fn = getattr(args, "suite_fn", None)
        if suite_fn is None:
            raise SarvesselError("--quick/--full need the ground tools (sarvessel.benchmark, "
                                 "sarvessel.synth), which are not installed here; on a "
                                 "runtime-only install use `bench SCENE --report DIR`")
        return suite_fn(args)
    if args.scene is None:
        raise SarvesselError("give a SCENE to time, or --quick / --full for the suite")
    if args.report is not None:
        return cmd_bench_report(args)
    if args.repeat < 0:
        raise SarvesselError(f"--repeat must be >= 0, got {args.repeat}")
    if args.json:
        check_writable_file(args.json, option="--json")
    detector = make_cli_detector(args)
    config = pipeline_config(args, detector.tile_size)
    rows = []
    with make_governor(args) as governor:
        for i in range(1 + args.repeat):
            cold = i == 0
            if cold:
                evicted = _evict_page_cache(args.scene)
            t_power = governor.clock.now()
            recorder = LatencyRecorder()
            reset_peak_rss()
            with open_scene(args.scene) as scene:
                res = run_scene(scene, timed_detector(detector, recorder), config=config,
                                pacer=governor, on_row=recorder.on_row)
            power = governor.report(start=t_power, megapixels=res.megapixels)
            rows.append({"run": "cold" if cold else f"warm{i}", "cold_evicted": cold and evicted,
                         "mpx": res.megapixels, "mpx_per_s": res.mpx_per_s,
                         **res.timings.as_dict(), "latency_ms_per_tile": recorder.summary(),
                         "peak_rss_mb": peak_rss_bytes() / 1e6, "power": power.to_dict()})
            log.info("%s run: %s", rows[-1]["run"], power.summary_line())
    warm = [r["mpx_per_s"] for r in rows[1:] if r["mpx_per_s"] is not None]
    summary = {"scene": str(args.scene), "backend": detector.name, "runs": rows,
               "cold_mpx_per_s": rows[0]["mpx_per_s"],
               "warm_mpx_per_s_best": max(warm) if warm else None,
               "cpu_count": os.cpu_count()}
    _print_bench(summary)
    if args.json:
        write_json(args.json, summary)
    return 0


def cmd_bench_report(args: argparse.Namespace) -> int:
    """``bench SCENE --report DIR``: every backend and peer on one scene, runtime only."""
    from datetime import datetime, timezone

    from sarvessel.runtime.bench import bench_scene, default_threads, host_info, write_report
    from sarvessel.runtime.bench.host import load_average
    from sarvessel.runtime.bench.measure import RunSpec
    from sarvessel.runtime.bench.report import SCHEMA
    from sarvessel.runtime.power import detect_sensor

    if not Path(args.scene).exists():
        raise SarvesselError(f"{args.scene}: scene not found")
    if args.threads is not None and args.threads < 1:
        raise SarvesselError(f"--threads must be >= 1, got {args.threads}")
    threads = args.threads or default_threads()
    batch = _batch(args)
    specs = [RunSpec.parse(b, threads=threads, batch=batch, overlap=args.overlap)
             for b in (args.backends or available_kinds())]
    peers = {p.stem: p for p in args.peer or []}
    for p in peers.values():
        if not p.is_file():
            raise SarvesselError(f"--peer {p}: file not found")
    report = {"schema": SCHEMA, "mode": "scene",
              "command": "sarvessel " + " ".join(sys.argv[1:]),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "host": host_info(), "notes": []}
    report |= bench_scene(args.scene, specs=specs, out_dir=args.report / "runs", peers=peers,
                          threads=threads, batch=batch, hw_estimate=args.hw_estimate,
                          sensor=detect_sensor())
    report["load_average_end"] = load_average()
    paths = write_report(report, args.report)
    print_bench_report(report, paths)
    return 0


def print_bench_report(report: dict, paths: dict[str, Path]) -> None:
    """A short summary of a benchmark report on the terminal, and where its files are."""
    from rich.console import Console
    from rich.table import Table

    c = Console()
    tab = Table(title=f"sarvessel bench ({report.get('mode')}): "
                f"{report.get('host', {}).get('cpu_model')}")
    for col in ("backend", "MPx/s", "wall s", "infer p50/p99 ms/tile", "peak RSS MB", "J/MPx"):
        tab.add_column(col, justify="right")
    skipped = []
    for r in report.get("backends", []):
        if r.get("skipped"):
            tab.add_row(r["label"], "skipped", "", "", "", "")
            skipped.append(f"  {r['label']} skipped: {r['skipped']}")
            continue
        inf = r.get("latency_ms_per_tile", {}).get("infer", {})
        e = r.get("energy") or {}
        tab.add_row(r["label"], f"{r['mpx_per_s']:.1f}", f"{r['wall_s']:.1f}",
                    f"{inf.get('p50_ms', 0):.1f} / {inf.get('p99_ms', 0):.1f}" if inf else "",
                    f"{r['peak_rss_mb']:.0f}",
                    f"{e['joules_per_mpx']:.3g}" if e.get("joules_per_mpx") is not None else
                    "no sensor")
    c.print(tab)
    for line in skipped:
        c.print(line, markup=False, highlight=False)
    head = (report.get("scaling") or {}).get("headline")
    if head:
        c.print(f"largest scene {head['height']:,} x {head['width']:,} "
                f"({head['megapixels']:.0f} MPx): [bold]{head['wall_s']:.1f} s[/], peak RSS "
                f"{head['peak_rss_mb']:.0f} MB")
    pp = (report.get("fpga") or {}).get("power_projection")
    if pp:
        c.print(pp["line"])
    for kind, path in paths.items():
        c.print(f"  {kind:10s} {path}")


# -- helpers ------------------------------------------------------------------------------


def add_power_args(p: argparse.ArgumentParser) -> None:
    """``--power-budget`` and ``--power-window``."""
    g = p.add_argument_group("power")
    g.add_argument("--power-budget", type=float, metavar="W",
                   help="keep the moving average of measured power at or under W watts by "
                   "pausing between backend calls (needs a power sensor; default: no budget, "
                   "power is only measured where a sensor exists)")
    g.add_argument("--power-window", type=float, default=DEFAULT_WINDOW_S, metavar="S",
                   help=f"moving-average window of the budget in seconds (default "
                   f"{DEFAULT_WINDOW_S:g})")


def make_governor(args: argparse.Namespace) -> PowerGovernor:
    """A power governor on this host's best sensor: it paces to ``--power-budget`` when one is
    given and measures energy either way (use it as a context manager: it starts and stops)."""
    return PowerGovernor(detect_sensor(), getattr(args, "power_budget", None),
                         getattr(args, "power_window", DEFAULT_WINDOW_S))


def add_backend_args(p: argparse.ArgumentParser, *, default: BackendKind = BackendKind.AUTO
                      ) -> None:
    g = p.add_argument_group("detector")
    g.add_argument("--backend", type=BackendKind, choices=list(BackendKind), default=default,
                   metavar="{" + ",".join(k.value for k in BackendKind) + "}",
                   help=f"tile detector (default: {default.value}; auto = shipped scene model, "
                   "else CFAR)")
    g.add_argument("--model", type=Path, help="ONNX model for --backend onnx")
    g.add_argument("--package", type=Path,
                   help="deploy package for --backend sim or fpga (defaults: the shipped scene "
                   "model's simulator package; /opt/sarvessel/deploy on a board)")
    g.add_argument("--paced", action="store_true",
                   help="--backend sim: hold each tile to the accelerator's estimated time")
    g.add_argument("--conf", type=float,
                   help="score threshold of a network backend, in (0, 1) (default: the "
                   "model's)")
    g.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
    g.add_argument("--tta", type=int, default=1, choices=sorted(TTA_SETS),
                   help="dihedral views averaged per tile, network backends only (default 1: "
                   "none); n times the inference cost")
    g.add_argument("--overlap", type=int,
                   help=f"tile overlap in pixels (default {PipelineConfig.overlap}, or half the "
                   "tile for models with tiles under twice that)")
    g.add_argument("--gate-db", type=float, metavar="DB",
                   help="skip tiles whose brightest VV pixel is under DB dB (nothing bright "
                   "enough to be a ship; -10 lost no ship on the held-out scenes, "
                   "docs/prescreen.md); default: off")
    g.add_argument("--batch", type=int, default=PipelineConfig.batch_size,
                   help=f"tiles per backend call (default {PipelineConfig.batch_size})")
    add_power_args(p)


def make_cli_detector(args: argparse.Namespace) -> Detector:
    """The detector the backend options name (options checked before anything loads)."""
    if args.threads is not None and args.threads < 1:
        raise SarvesselError(f"--threads must be >= 1, got {args.threads}")
    conf = getattr(args, "conf", None)
    if conf is not None and not 0.0 < conf < 1.0:  # NaN fails too
        raise SarvesselError(f"--conf must be in (0, 1), got {conf}")
    _batch(args)
    detector = make_detector(args.backend, model=args.model, threads=args.threads, tta=args.tta,
                             package=args.package, paced=args.paced, conf_threshold=conf)
    if conf is not None and detector.metadata is None:
        raise SarvesselError(f"--conf is for network backends; --backend {detector.name} has "
                             "no score threshold")
    return detector


def pipeline_config(args: argparse.Namespace, tile_size: int) -> PipelineConfig:
    """The pipeline settings; the overlap may be at most half a tile (more would run every
    pixel more than four times for no gain, and near a whole tile the step falls to 1 px)."""
    screen = PrescreenConfig(min_u8=None if getattr(args, "gate_db", None) is None
                             else db_to_u8(args.gate_db))
    if args.overlap is None:
        return PipelineConfig(overlap=min(PipelineConfig.overlap, tile_size // 2),
                              batch_size=_batch(args), prescreen=screen)
    if not 0 <= args.overlap <= tile_size // 2:
        raise SarvesselError(f"--overlap must be between 0 and half the {tile_size} px tile "
                             f"({tile_size // 2}), got {args.overlap}")
    return PipelineConfig(overlap=args.overlap, batch_size=_batch(args), prescreen=screen)


def _batch(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise SarvesselError(f"--batch must be >= 1, got {args.batch}")
    return args.batch


def report(result: SceneResult, backend: str, paths: dict[str, Path]) -> None:
    from rich.console import Console
    from rich.markup import escape

    # no highlighting: it colours "0x8000" inside a scene id as a hex number
    c = Console(highlight=False)
    t = result.timings
    rate = "n/a (every row resumed)" if result.mpx_per_s is None else \
        f"{result.mpx_per_s:.1f} MPx/s"
    c.print(f"[bold]{escape(result.scene_id)}[/]: {len(result.detections)} detections by "
            f"{escape(backend)} in {result.megapixels:.1f} MPx, {t.total:.2f} s → "
            f"[bold]{rate}[/] (read {t.read:.2f} s, preprocess {t.preprocess:.2f} s, "
            f"infer {t.infer:.2f} s, post {t.post:.2f} s, merge {t.merge:.2f} s, write "
            f"{t.write:.2f} s, throttled {t.throttle:.2f} s; {result.tiles_run} tiles run, "
            f"{result.tiles_skipped_nodata} all-nodata, {result.tiles_skipped_land} land and "
            f"{result.tiles_skipped_dark} dark skipped, {result.tiles_resumed} resumed)")
    if result.power is not None:
        c.print(escape(result.power.summary_line()))
    for kind, path in paths.items():
        c.print(f"  {kind:8s} {escape(str(path))}")


def _print_bench(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    tab = Table(title=f"pipeline throughput, backend {summary['backend']}, "
                f"{summary['cpu_count']} cores", highlight=False)
    for col in ("run", "MPx", "MPx/s", "read s", "preprocess s", "infer s", "post s", "merge s",
                "total s", "infer p50/p99 ms/tile", "peak RSS MB"):
        tab.add_column(col, justify="right")
    for r in summary["runs"]:
        inf = r["latency_ms_per_tile"].get("infer")
        rate = "n/a" if r["mpx_per_s"] is None else f"{r['mpx_per_s']:.1f}"
        tab.add_row(r["run"], f"{r['mpx']:.0f}", rate, f"{r['read']:.2f}",
                    f"{r['preprocess']:.2f}", f"{r['infer']:.2f}", f"{r['post']:.2f}",
                    f"{r['merge']:.2f}", f"{r['total']:.2f}",
                    f"{inf['p50_ms']:.1f} / {inf['p99_ms']:.1f}" if inf else "",
                    f"{r['peak_rss_mb']:.0f}")
    Console(highlight=False).print(tab)


def _specs(text: str) -> list[str]:
    """``--backends``: comma-separated ``KIND[:MODEL]`` specs."""
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise argparse.ArgumentTypeError("expected backends such as noop,cfar,onnx")
    return specs


def _evict_page_cache(scene: Path) -> bool:
    """Drop the scene's files from the page cache (posix_fadvise), for a cold-read timing."""
    files = [scene] if scene.is_file() else sorted(scene.glob("*.tif"))
    ok = hasattr(os, "posix_fadvise")
    for f in files:
        if not ok:
            break
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return ok


def run_with_progress(scene: Path, detector: Detector, *, out_dir: Path,
                      config: PipelineConfig, resume: bool = True,
                      governor: PowerGovernor | None = None, wait_s: float = 0.0,
                      ) -> tuple[SceneResult, dict[str, Path]]:
    """:func:`~sarvessel.runtime.detect.detect_scene` with a progress bar on the terminal."""
    with progress_bar(f"detecting in {Path(scene).name}") as cb:
        return detect_scene(scene, detector, out_dir=out_dir, config=config, resume=resume,
                            progress=cb, governor=governor, wait_s=wait_s)


@contextmanager
def progress_bar(label: str):
    """A rich progress bar fed by (done, total) callbacks; silent when not on a terminal."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as prog:
        task = prog.add_task(escape(label), total=None)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield update
