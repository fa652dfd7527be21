"""Runtime commands: ``detect`` and ``bench`` (``demo`` is :mod:`sarvessel.demo`; ``synth``,
``score`` and ``eval`` are the ground tools' own commands).

Thin handlers: parse, call the library, print a short report. User errors are raised as
:class:`~sarvessel.runtime.errors.SarvesselError` and printed by :mod:`sarvessel.cli`.
"""

from __future__ import annotations

import argparse
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from sarvessel.runtime.backends import BackendKind
from sarvessel.runtime.backends.tta import TTA_SETS
from sarvessel.runtime.detect import check_writable_file, detect_scene
from sarvessel.runtime.detector import Detector, make_detector
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io.outputs import write_json
from sarvessel.runtime.io.scene import open_scene
from sarvessel.runtime.io.xview3_csv import read_labels_csv
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
    add_backend_args(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser(
        "bench", help="measure scene throughput (MPx/s) cold and warm",
        description="Time the pipeline on a scene: cold (the scene's files evicted from the page "
        "cache first) and warm, per stage. Use --backend noop for the I/O path alone.",
    )
    p.add_argument("scene", type=Path, help="xView3 scene folder or GeoTIFF to time")
    p.add_argument("--repeat", type=int, default=3, help="warm repetitions (default 3)")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    add_backend_args(p, default=BackendKind.NOOP)
    p.set_defaults(func=cmd_bench)


# -- handlers -----------------------------------------------------------------------------


def cmd_detect(args: argparse.Namespace) -> int:
    detector = make_cli_detector(args)
    config = pipeline_config(args, detector.tile_size)
    labels = None
    if args.labels:  # a bad labels file is reported before the scene runs, not after
        labels = read_labels_csv(args.labels)
    with make_governor(args) as governor:
        result, paths = run_with_progress(args.scene, detector, out_dir=args.out, config=config,
                                          resume=not args.no_resume, governor=governor)
    report(result, detector.name, paths)
    score_fn = getattr(args, "score_fn", None)
    if labels is not None:
        if score_fn is None:  # pragma: no cover - sarvessel.evaluation ships with the runtime
            raise SarvesselError("--labels needs sarvessel.evaluation, which is not installed")
        score_fn(paths["csv"], labels, Path(os.path.abspath(args.scene)))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.repeat < 0:
        raise SarvesselError(f"--repeat must be >= 0, got {args.repeat}")
    if args.json:
        check_writable_file(args.json)
    detector = make_cli_detector(args)
    config = pipeline_config(args, detector.tile_size)
    rows = []
    with make_governor(args) as governor:
        for i in range(1 + args.repeat):
            cold = i == 0
            if cold:
                evicted = _evict_page_cache(args.scene)
            t_power = governor.clock.now()
            with open_scene(args.scene) as scene:
                res = run_scene(scene, detector, config=config, pacer=governor)
            power = governor.report(start=t_power, megapixels=res.megapixels)
            rows.append({"run": "cold" if cold else f"warm{i}", "cold_evicted": cold and evicted,
                         "mpx": res.megapixels, "mpx_per_s": res.mpx_per_s,
                         **res.timings.as_dict(), "power": power.to_dict()})
            log.info("%s run: %s", rows[-1]["run"], power.summary_line())
    warm = [r["mpx_per_s"] for r in rows[1:]]
    summary = {"scene": str(args.scene), "backend": detector.name, "runs": rows,
               "cold_mpx_per_s": rows[0]["mpx_per_s"],
               "warm_mpx_per_s_best": max(warm) if warm else None,
               "cpu_count": os.cpu_count()}
    _print_bench(summary)
    if args.json:
        write_json(args.json, summary)
    return 0


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
    """The detector the backend options name."""
    if args.threads is not None and args.threads < 1:
        raise SarvesselError(f"--threads must be >= 1, got {args.threads}")
    return make_detector(args.backend, model=args.model, threads=args.threads, tta=args.tta,
                         package=args.package, paced=args.paced)


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

    c = Console()
    t = result.timings
    c.print(f"[bold]{result.scene_id}[/]: {len(result.detections)} detections by {backend} in "
            f"{result.megapixels:.1f} MPx, {t.total:.2f} s → [bold]{result.mpx_per_s:.1f} MPx/s"
            f"[/] (read {t.read:.2f} s, preprocess {t.preprocess:.2f} s, infer {t.infer:.2f} s, "
            f"post {t.post:.2f} s, merge {t.merge:.2f} s, write {t.write:.2f} s, throttled "
            f"{t.throttle:.2f} s; {result.tiles_run} tiles run, "
            f"{result.tiles_skipped_nodata} all-nodata, {result.tiles_skipped_land} land and "
            f"{result.tiles_skipped_dark} dark skipped, {result.tiles_resumed} resumed)",
            highlight=False)
    if result.power is not None:
        c.print(result.power.summary_line(), highlight=False)
    for kind, path in paths.items():
        c.print(f"  {kind:8s} {path}")


def _print_bench(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    tab = Table(title=f"pipeline throughput, backend {summary['backend']}, "
                f"{summary['cpu_count']} cores")
    for col in ("run", "MPx", "MPx/s", "read s", "preprocess s", "infer s", "merge s", "total s"):
        tab.add_column(col, justify="right")
    for r in summary["runs"]:
        tab.add_row(r["run"], f"{r['mpx']:.0f}", f"{r['mpx_per_s']:.1f}", f"{r['read']:.2f}",
                    f"{r['preprocess']:.2f}", f"{r['infer']:.2f}", f"{r['merge']:.2f}",
                    f"{r['total']:.2f}")
    Console().print(tab)


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
                      governor: PowerGovernor | None = None,
                      ) -> tuple[SceneResult, dict[str, Path]]:
    """:func:`~sarvessel.runtime.detect.detect_scene` with a progress bar on the terminal."""
    with progress_bar(f"detecting in {Path(scene).name}") as cb:
        return detect_scene(scene, detector, out_dir=out_dir, config=config, resume=resume,
                            progress=cb, governor=governor)


@contextmanager
def progress_bar(label: str):
    """A rich progress bar fed by (done, total) callbacks; silent when not on a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as prog:
        task = prog.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield update
