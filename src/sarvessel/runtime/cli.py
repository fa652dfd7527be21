"""Runtime commands: ``detect``, ``demo``, ``bench`` (and ``synth``, ``score``, ``eval``).

Thin handlers: parse, call the library, print a short report. User errors are raised as
:class:`~sarvessel.runtime.errors.SarvesselError` and printed by :mod:`sarvessel.cli`.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

from sarvessel.runtime.backends import BackendKind, make_backend
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.pipeline import PipelineConfig, SceneResult, run_scene
from sarvessel.runtime.scene import open_scene
from sarvessel.runtime.tta import TTA_SETS

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the runtime sub-commands to the ``sarvessel`` parser."""
    p = sub.add_parser(
        "demo", help="generate a scene, detect vessels, score them (no data needed)",
        description="Generate a synthetic Sentinel-1 scene (xView3 format), run the default "
        "detector over it, write CSV/GeoJSON/quicklook PNG and print the xView3 score and "
        "throughput.",
    )
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder "
                   "(default: out/demo)")
    p.add_argument("--size", type=int, default=4096, help="scene side in pixels (default 4096)")
    p.add_argument("--seed", type=int, default=1000, help="scene seed (default 1000; seeds "
                   "below 900 are the scene model's training and validation scenes)")
    _add_backend_args(p)
    p.set_defaults(func=cmd_demo)

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
    _add_backend_args(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser(
        "bench", help="measure scene throughput (MPx/s) cold and warm",
        description="Time the pipeline on a scene: cold (the scene's files evicted from the page "
        "cache first) and warm, per stage. Use --backend noop for the I/O path alone.",
    )
    p.add_argument("scene", type=Path)
    p.add_argument("--repeat", type=int, default=3, help="warm repetitions (default 3)")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    _add_backend_args(p, default=BackendKind.NOOP)
    p.set_defaults(func=cmd_bench)

    for module in ("synth", "scoring", "evaluate"):
        try:
            mod = __import__(f"sarvessel.runtime.{module}", fromlist=["register_cli"])
        except ImportError as exc:  # pragma: no cover - all modules ship
            log.debug("runtime.%s not available: %s", module, exc)
            continue
        mod.register_cli(sub)


# -- handlers -----------------------------------------------------------------------------


def cmd_detect(args: argparse.Namespace) -> int:
    backend = _backend(args)
    config = _config(args, backend.tile_size)
    labels = None
    if args.labels:  # a bad labels file is reported before the scene runs, not after
        from sarvessel.runtime.scoring import read_labels_csv

        labels = read_labels_csv(args.labels)
    result, paths = detect_scene(args.scene, backend, out_dir=args.out, config=config,
                                 resume=not args.no_resume)
    _report(result, backend.name, paths)
    if labels is not None:
        _print_score(paths["csv"], labels, result.scene_id, Path(os.path.abspath(args.scene)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sarvessel.runtime.synth import synthesize_scene

    t0 = time.perf_counter()
    scenes = args.out / "scenes"
    with _progress(f"generating a {args.size} x {args.size} scene") as cb:
        synth = synthesize_scene(scenes, height=args.size, width=args.size, seed=args.seed,
                                 progress=cb)
    log.info("scene %s generated in %.1f s", synth.scene_dir.name, time.perf_counter() - t0)
    backend = _backend(args)
    result, paths = detect_scene(synth.scene_dir, backend, out_dir=args.out,
                                 config=_config(args, backend.tile_size), resume=False)
    _report(result, backend.name, paths)
    from sarvessel.runtime.scoring import read_labels_csv

    _print_score(paths["csv"], read_labels_csv(synth.labels_csv), result.scene_id,
                 synth.scene_dir)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.repeat < 0:
        raise SarvesselError(f"--repeat must be >= 0, got {args.repeat}")
    if args.json:
        _check_writable_file(args.json)
    backend = _backend(args)
    config = _config(args, backend.tile_size)
    rows = []
    for i in range(1 + args.repeat):
        cold = i == 0
        if cold:
            evicted = _evict_page_cache(args.scene)
        with open_scene(args.scene) as scene:
            res = run_scene(scene, backend, config=config)
        rows.append({"run": "cold" if cold else f"warm{i}", "cold_evicted": cold and evicted,
                     "mpx": res.megapixels, "mpx_per_s": res.mpx_per_s, **res.timings.as_dict()})
    warm = [r["mpx_per_s"] for r in rows[1:]]
    summary = {"scene": str(args.scene), "backend": backend.name, "runs": rows,
               "cold_mpx_per_s": rows[0]["mpx_per_s"],
               "warm_mpx_per_s_best": max(warm) if warm else None,
               "cpu_count": os.cpu_count()}
    _print_bench(summary)
    if args.json:
        from sarvessel.runtime.outputs import write_json

        write_json(args.json, summary)
    return 0


# -- library-level helper used by the handlers ----------------------------------------


def detect_scene(
    scene_path: Path, backend, *, out_dir: Path, config: PipelineConfig, resume: bool = True
) -> tuple[SceneResult, dict[str, Path]]:
    """Run one scene and write its outputs; the journal is removed only after all are written."""
    from sarvessel.runtime.outputs import (
        remove_stale_temporaries,
        write_geojson,
        write_json,
        write_quicklook_png,
        write_submission_csv,
    )

    _check_out_dir(out_dir)
    with open_scene(scene_path) as scene:
        sid = scene.scene_id
        journal = out_dir / f"{sid}.journal.jsonl"
        paths = {"csv": out_dir / f"{sid}.csv", "geojson": out_dir / f"{sid}.geojson",
                 "png": out_dir / f"{sid}_quicklook.png", "json": out_dir / f"{sid}_summary.json"}
        for path in [journal, *paths.values()]:  # refuse before the scene runs, not after
            _check_writable_file(path)
        remove_stale_temporaries(out_dir, [journal, *paths.values()])
        if not resume and journal.exists():
            journal.unlink()
        with _progress(f"detecting in {sid} ({scene.info.megapixels:.0f} MPx)") as cb:
            result = run_scene(scene, backend, config=config, journal=journal, progress=cb)
        t0 = time.perf_counter()
        dets = result.detections
        write_submission_csv(paths["csv"], sid, dets, pixel_size_m=scene.pixel_size_m)
        to_ll = scene.to_lonlat if scene.georef is not None else None
        write_geojson(paths["geojson"], sid, dets, to_lonlat=to_ll,
                      pixel_size_m=scene.pixel_size_m)
        labels = _scene_labels(scene.source, sid)
        write_quicklook_png(paths["png"], result.thumbnail, scale=result.thumbnail_scale,
                            detections=dets, labels=labels,
                            title=f"{sid}  {backend.name}  {len(dets)} detections")
        result.timings.write = time.perf_counter() - t0
        write_json(paths["json"], _summary(result, backend.name))
        if journal.exists():
            journal.unlink()
    return result, paths


# -- helpers ------------------------------------------------------------------------------


def _add_backend_args(p: argparse.ArgumentParser, *, default: BackendKind = BackendKind.AUTO
                      ) -> None:
    g = p.add_argument_group("detector")
    g.add_argument("--backend", type=BackendKind, choices=list(BackendKind), default=default,
                   metavar="{" + ",".join(k.value for k in BackendKind) + "}",
                   help=f"tile detector (default: {default.value}; auto = shipped scene model, "
                   "else CFAR)")
    g.add_argument("--model", type=Path, help="ONNX model for --backend onnx")
    g.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
    g.add_argument("--tta", type=int, default=1, choices=sorted(TTA_SETS),
                   help="dihedral views averaged per tile, network backends only (default 1: "
                   "none); n times the inference cost")
    g.add_argument("--overlap", type=int,
                   help=f"tile overlap in pixels (default {PipelineConfig.overlap}, or half the "
                   "tile for models with tiles under twice that)")
    g.add_argument("--batch", type=int, default=PipelineConfig.batch_size,
                   help=f"tiles per backend call (default {PipelineConfig.batch_size})")


def _backend(args: argparse.Namespace):
    return make_backend(args.backend, model=args.model, threads=args.threads, tta=args.tta)


def _config(args: argparse.Namespace, tile_size: int) -> PipelineConfig:
    """The pipeline settings; the overlap may be at most half a tile (more would run every
    pixel more than four times for no gain, and near a whole tile the step falls to 1 px)."""
    if args.overlap is None:
        return PipelineConfig(overlap=min(PipelineConfig.overlap, tile_size // 2),
                              batch_size=_batch(args))
    if not 0 <= args.overlap <= tile_size // 2:
        raise SarvesselError(f"--overlap must be between 0 and half the {tile_size} px tile "
                             f"({tile_size // 2}), got {args.overlap}")
    return PipelineConfig(overlap=args.overlap, batch_size=_batch(args))


def _batch(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise SarvesselError(f"--batch must be >= 1, got {args.batch}")
    return args.batch


def _check_out_dir(out_dir: Path) -> None:
    """Create the output folder, or say in one line why it cannot be used."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SarvesselError(f"--out {out_dir}: exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SarvesselError(f"--out {out_dir}: cannot create the folder ({exc.strerror})") \
            from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise SarvesselError(f"--out {out_dir}: folder is not writable")


def _check_writable_file(path: Path) -> None:
    """Refuse an output path that is a folder or lies in a folder that cannot be written."""
    if path.is_dir():
        raise SarvesselError(f"{path}: is a folder; an output file is written here")
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SarvesselError(f"{parent}: cannot create the folder ({exc.strerror})") \
                from exc
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise SarvesselError(f"{parent}: cannot write {path.name} there")


def _scene_labels(scene_path: Path, scene_id: str):
    """Ground truth for the quicklook if a labels.csv sits beside the scene (synthetic scenes)."""
    csv_path = Path(scene_path).parent / "labels.csv"
    if not csv_path.is_file():
        return None
    from sarvessel.runtime.scoring import read_labels_csv

    try:
        t = read_labels_csv(csv_path)
    except SarvesselError as exc:
        log.warning("not drawing labels: %s", exc)
        return None
    sel = t["scene_id"] == scene_id
    return (t["detect_scene_row"][sel], t["detect_scene_column"][sel], t["is_vessel"][sel])


def _summary(result: SceneResult, backend: str) -> dict:
    return {"scene_id": result.scene_id, "backend": backend, "height": result.height,
            "width": result.width, "megapixels": result.megapixels,
            "detections": len(result.detections), "tiles_total": result.tiles_total,
            "tiles_run": result.tiles_run, "tiles_skipped_nodata": result.tiles_skipped_nodata,
            "tiles_resumed": result.tiles_resumed, "mpx_per_s": result.mpx_per_s,
            "timings_s": result.timings.as_dict()}


def _report(result: SceneResult, backend: str, paths: dict[str, Path]) -> None:
    from rich.console import Console

    c = Console()
    t = result.timings
    c.print(f"[bold]{result.scene_id}[/]: {len(result.detections)} detections by {backend} in "
            f"{result.megapixels:.1f} MPx, {t.total:.2f} s → [bold]{result.mpx_per_s:.1f} MPx/s"
            f"[/] (read {t.read:.2f} s, preprocess {t.preprocess:.2f} s, infer {t.infer:.2f} s, "
            f"merge {t.merge:.2f} s, write {t.write:.2f} s; {result.tiles_run} tiles run, "
            f"{result.tiles_skipped_nodata} all-nodata skipped, {result.tiles_resumed} resumed)")
    for kind, path in paths.items():
        c.print(f"  {kind:8s} {path}")


def _print_score(pred_csv: Path, labels, scene_id: str, scene_path: Path) -> None:
    """Score the written CSV against ``labels`` (a table from ``read_labels_csv``)."""
    from sarvessel.runtime.scoring import print_score, read_predictions_csv, score

    preds = read_predictions_csv(pred_csv)
    shore = Path(scene_path).parent / "shoreline"
    s = score(preds, labels, shoreline_root=shore if shore.is_dir() else None)
    print_score(s)


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


@contextmanager
def _progress(label: str):
    """A rich progress bar fed by (done, total) callbacks; silent when not on a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as prog:
        task = prog.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield update
