"""``sarvessel detect-many``: an archive of scenes through Dask, resumable, one report.

Thin handler: expand and scan the scenes, build the detector once here (to validate the options
as ``detect`` does and to know its fingerprint), size or join the cluster, run
:func:`~sarvessel.archive.run.run_archive` with a progress bar, print the report. dask is
imported only when the command runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sarvessel.archive.errors import ArchiveError
from sarvessel.archive.scenes import ScenePlan, expand_scene_args, scan_scenes
from sarvessel.archive.task import ArchiveJob, DetectorSpec, SceneStatus
from sarvessel.runtime.cli import add_backend_args, make_cli_detector, pipeline_config

log = logging.getLogger(__name__)

#: Exit code when the run finished but some scenes failed (2 stays "nothing ran": bad usage).
EXIT_SOME_FAILED = 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``detect-many`` to the ``sarvessel`` parser."""
    p = sub.add_parser(
        "detect-many", help="detect vessels in many scenes on a Dask cluster (resumable)",
        description="Run `detect` on every scene of an archive, one Dask task per scene, on a "
        "LocalCluster sized to this machine or on an existing cluster (--scheduler). Each "
        "scene's outputs land in --out as `detect` writes them; a combined submission.csv and "
        "archive_summary.json are written at the end. A rerun skips finished scenes and "
        "resumes interrupted ones from their journals. Exit code 1 if some scenes failed.",
    )
    p.add_argument("scenes", nargs="+", metavar="SCENE",
                   help="scene folder or GeoTIFF, a quoted glob ('data/*/'), or a text file "
                   "listing scenes one per line")
    p.add_argument("--out", type=Path, default=Path("out"),
                   help="output folder, on storage every worker sees at the same path "
                   "(default: out)")
    g = p.add_argument_group("cluster")
    g.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="submit to this running Dask scheduler instead of starting a "
                   "LocalCluster")
    g.add_argument("--workers", type=int,
                   help="LocalCluster worker processes (default: usable cores, fewer if "
                   "memory is short)")
    g.add_argument("--dashboard-port", type=int, default=8787,
                   help="LocalCluster dashboard port (default 8787; 0 any free port)")
    g.add_argument("--lock-wait", type=float, default=600.0, metavar="SECONDS",
                   help="how long a task waits for a scene another live run is writing "
                   "(default 600)")
    g = p.add_argument_group("scoring")
    g.add_argument("--labels", type=Path, help="xView3 labels CSV: score the whole archive")
    g.add_argument("--shoreline-dir", type=Path,
                   help="folder of <scene_id>_shoreline.npy for the close-to-shore score "
                   "(default: a shoreline/ folder beside the scenes, if all share one)")
    add_backend_args(p)
    for action in p._actions:
        if action.dest == "threads":  # the archive's own meaning
            action.help = ("onnxruntime threads per task (default: cores / workers, so "
                           "workers x threads = cores)")
        elif action.dest in ("power_budget", "power_window"):  # one board's, not a cluster's
            action.help = argparse.SUPPRESS
    p.set_defaults(func=cmd_detect_many)


def cmd_detect_many(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("distributed") is None:
        raise ArchiveError("detect-many needs dask.distributed: pip install 'sarvessel[archive]'")
    from sarvessel.archive.cluster import machine, open_cluster, plan_local
    from sarvessel.archive.run import run_archive

    if args.scheduler and args.workers is not None:
        raise ArchiveError("--workers sizes a LocalCluster; with --scheduler the cluster's own "
                           "workers run the scenes")
    if args.lock_wait < 0:
        raise ArchiveError(f"--lock-wait must be >= 0, got {args.lock_wait:g}")
    if getattr(args, "power_budget", None) is not None:
        raise ArchiveError("--power-budget paces one scene on one board: use `sarvessel "
                           "detect`; detect-many runs scenes on a cluster")
    if not 0 <= args.dashboard_port <= 65535:
        raise ArchiveError(f"--dashboard-port must be in 0..65535, got {args.dashboard_port}")
    detector = make_cli_detector(args)  # validates the backend options before any scene
    config = pipeline_config(args, detector.tile_size)
    labels = None
    if args.labels:  # a bad labels file is reported before the archive runs, not after
        from sarvessel.runtime.io.xview3_csv import read_labels_csv

        labels = read_labels_csv(args.labels)
    plans = scan_scenes(expand_scene_args(args.scenes))
    shoreline = args.shoreline_dir or (_common_shoreline(plans) if labels is not None else None)
    if args.shoreline_dir and not args.shoreline_dir.is_dir():
        raise ArchiveError(f"--shoreline-dir {args.shoreline_dir}: no such folder")

    plan = None
    threads = args.threads
    if not args.scheduler:
        cores, memory = machine()
        plan = plan_local(cores=cores, memory_bytes=memory, workers=args.workers,
                          threads=args.threads)
        threads = plan.threads
    spec = DetectorSpec(backend=args.backend, model=_abs(args.model), tta=args.tta,
                        threads=threads, package=_abs(getattr(args, "package", None)),
                        paced=bool(getattr(args, "paced", False)))
    job = ArchiveJob(out_dir=os.path.abspath(args.out), detector=spec, config=config,
                     lock_wait_s=args.lock_wait,
                     quiet_user_errors=not getattr(args, "verbose", False))
    dashboard = f":{args.dashboard_port}"

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # dask's INFO lines drown the bar
        logging.getLogger("distributed").setLevel(logging.WARNING)
    from rich.console import Console

    console = Console()
    with _archive_progress(console) as (on_progress, on_cluster):
        report = run_archive(
            plans, job, detector_name=detector.name,
            detector_fingerprint=detector.fingerprint, tile_size=detector.tile_size,
            connect=lambda: open_cluster(scheduler=args.scheduler, plan=plan,
                                         dashboard_address=dashboard),
            labels=labels, shoreline_dir=shoreline, progress=on_progress,
            on_cluster=on_cluster)
    _print_report(console, report)
    return EXIT_SOME_FAILED if report.failures else 0


# -- helpers ------------------------------------------------------------------------------


def _abs(path: Path | None) -> str | None:
    """An absolute path for the workers (their working folder is not the client's)."""
    return os.path.abspath(path) if path else None


def _common_shoreline(plans: Sequence[ScenePlan]) -> Path | None:
    """``<parent>/shoreline`` when every scene lies in the same parent and it exists."""
    parents = {p.path.parent for p in plans}
    if len(parents) == 1:
        cand = parents.pop() / "shoreline"
        if cand.is_dir():
            return cand
    return None


@contextmanager
def _archive_progress(console) -> Iterator[tuple]:
    """A rich bar over the archive's megapixels (scenes and MPx done, ETA), and a callback that
    prints the cluster and its dashboard link once it is up."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from sarvessel.archive.cluster import dashboard_needs_bokeh

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.fields[scenes]}"), TextColumn("{task.fields[mpx]}"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  console=console, speed_estimate_period=300) as prog:
        task = prog.add_task("archive", total=None, scenes="", mpx="")

        def on_progress(s) -> None:
            scenes = f"{s.scenes_ended}/{s.scenes_total} scenes"
            if s.scenes_skipped:
                scenes += f" ({s.scenes_skipped} skipped)"
            if s.scenes_failed:
                scenes += f" [red]{s.scenes_failed} failed[/]"
            prog.update(task, completed=s.mpx_done, total=s.mpx_total or None, scenes=scenes,
                        mpx=f"{s.mpx_done:.0f}/{s.mpx_total:.0f} MPx")

        def on_cluster(info) -> None:
            if info.local is not None:
                lp = info.local
                prog.console.print(f"LocalCluster {info.scheduler}: {lp.workers} workers x "
                                   f"{lp.threads} onnxruntime thread(s) each, {lp.cores} cores")
            else:
                prog.console.print(f"Dask scheduler {info.scheduler}: {info.workers} workers, "
                                   f"{info.dask_threads} threads")
            if info.dashboard:
                note = " (install bokeh for its plots)" if (
                    info.local is not None and dashboard_needs_bokeh()) else ""
                prog.console.print(f"Dask dashboard: {info.dashboard}{note}")

        yield on_progress, on_cluster


def _print_report(console, report) -> None:
    d = report.as_dict()
    s = d["scenes"]
    line = (f"[bold]{s['total']} scenes[/]: {s['done']} done, {s['skipped']} skipped, "
            f"{s['failed']} failed; {d['megapixels']['finished']:.1f} MPx, "
            f"{d['detections']} detections")
    if d["mpx_per_s"] is not None:
        line += (f"; {d['megapixels']['detected_this_run']:.1f} MPx detected in "
                 f"{d['wall_s']:.1f} s → [bold]{d['mpx_per_s']:.2f} MPx/s[/], "
                 f"{d['scenes_per_hour']:.0f} scenes/hour")
    console.print(line, highlight=False)
    for o in report.failures:
        console.print(f"  [red]failed[/] {o.scene_id or o.scene}: {o.message}",
                      highlight=False, soft_wrap=True)
    console.print(f"  submission {report.submission}", highlight=False)
    console.print(f"  summary    {report.summary_path}", highlight=False)
    if report.score is not None:
        from sarvessel.evaluation.scoring import print_score

        print_score(report.score, title=f"xView3 score of {report.submission.name} "
                    f"({s['done'] + s['skipped']} scenes)")
    elif any(o.status is not SceneStatus.FAILED for o in report.outcomes):
        log.debug("no labels given: archive not scored")
