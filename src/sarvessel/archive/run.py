"""Run an archive: finished scenes skipped on the client, one Dask task per other scene, one
combined submission CSV and one summary at the end.

The client never sees detections while the run goes: each task writes its scene's outputs
itself (atomically, :mod:`sarvessel.archive.task`) and returns a
:class:`~sarvessel.archive.task.SceneOutcome`; ``as_completed`` hands them back as scenes finish,
and tile-row progress arrives as Dask events. Only at the end are the finished scenes' CSVs read
back into the combined submission (dask.distributed docs, "Futures" and "Managing Memory": keep
results where they are made, gather small summaries).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sarvessel.archive.cluster import ClusterInfo
from sarvessel.archive.scenes import ScenePlan, one_line
from sarvessel.archive.task import (
    ArchiveJob,
    SceneOutcome,
    SceneStatus,
    finished_record,
    job_key,
    process_scene,
)
from sarvessel.runtime.detect import check_out_dir, output_paths
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io.outputs import json_safe, write_json, write_submissions_csv
from sarvessel.runtime.io.xview3_csv import read_predictions_csv

if TYPE_CHECKING:
    from distributed import Client

    from sarvessel.evaluation.scoring import XView3Score

log = logging.getLogger(__name__)

#: The combined xView3 submission of every finished scene, in the output folder.
SUBMISSION_NAME = "submission.csv"
#: The archive summary, in the output folder.
SUMMARY_NAME = "archive_summary.json"
#: Opens the cluster when there is work: a context giving a client and what it is.
Connect = Callable[[], AbstractContextManager[tuple["Client", ClusterInfo]]]


@dataclass(frozen=True)
class ArchiveProgress:
    """Where the whole archive stands (passed to the progress callback after every change)."""

    scenes_total: int
    #: Scenes that ended this run: done, skipped or failed.
    scenes_ended: int
    scenes_skipped: int
    scenes_failed: int
    #: Megapixels this run has to detect (skipped scenes excluded) and of those done so far,
    #: counting finished tile rows of running scenes.
    mpx_total: float
    mpx_done: float


ProgressCallback = Callable[[ArchiveProgress], None]


@dataclass
class ArchiveReport:
    """The result of :func:`run_archive`; :meth:`as_dict` is the summary JSON."""

    out_dir: Path
    #: One outcome per scene, in the order the scenes were given.
    outcomes: list[SceneOutcome]
    detector: str
    detector_fingerprint: str
    pipeline: dict[str, Any]
    submission: Path
    summary_path: Path
    #: Seconds from submitting the first task to the last outcome (cluster start excluded).
    wall_s: float = 0.0
    cluster_start_s: float = 0.0
    cluster: ClusterInfo | None = None
    score: XView3Score | None = None
    started: str = ""
    finished: str = ""

    @property
    def failures(self) -> list[SceneOutcome]:
        return [o for o in self.outcomes if o.status is SceneStatus.FAILED]

    def count(self, status: SceneStatus) -> int:
        return sum(o.status is status for o in self.outcomes)

    @property
    def mpx_run(self) -> float:
        """Megapixels detected in this run (resumed rows and skipped scenes excluded)."""
        return sum(o.megapixels * (1 - o.tiles_resumed / o.tiles_total if o.tiles_total else 1)
                   for o in self.outcomes if o.status is SceneStatus.DONE)

    def as_dict(self) -> dict[str, Any]:
        ok = [o for o in self.outcomes if o.status is not SceneStatus.FAILED]
        done = self.count(SceneStatus.DONE)
        wall = self.wall_s
        c = self.cluster
        return json_safe({
            "out_dir": str(self.out_dir),
            "submission": self.submission.name,
            "started": self.started, "finished": self.finished,
            "scenes": {"total": len(self.outcomes), "done": done,
                       "skipped": self.count(SceneStatus.SKIPPED),
                       "failed": len(self.failures)},
            "megapixels": {"finished": sum(o.megapixels for o in ok),
                           "detected_this_run": self.mpx_run},
            "detections": sum(o.detections for o in ok),
            "wall_s": wall, "cluster_start_s": self.cluster_start_s,
            "mpx_per_s": self.mpx_run / wall if wall > 0 and done else None,
            "scenes_per_hour": done * 3600 / wall if wall > 0 and done else None,
            "detector": {"name": self.detector, "fingerprint": self.detector_fingerprint},
            "pipeline": self.pipeline,
            "cluster": None if c is None else {
                "scheduler": c.scheduler, "dashboard": c.dashboard, "workers": c.workers,
                "dask_threads": c.dask_threads, "threads_by_host": dict(c.threads_by_host),
                "local": asdict(c.local) if c.local else None},
            "failures": [{"scene": o.scene, "scene_id": o.scene_id, "message": o.message}
                         for o in self.failures],
            "score": self.score.as_dict(scenes=False) if self.score is not None else None,
            "per_scene": [o.as_dict() for o in self.outcomes],
        })


def run_archive(
    plans: Sequence[ScenePlan],
    job: ArchiveJob,
    *,
    detector_name: str,
    detector_fingerprint: str,
    tile_size: int,
    connect: Connect,
    labels: Mapping[str, np.ndarray] | None = None,
    shoreline_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    on_cluster: Callable[[ClusterInfo], None] | None = None,
) -> ArchiveReport:
    """Detect every scene of ``plans`` into ``job.out_dir``; write the combined submission CSV
    and the summary JSON there and return the report.

    detector_name/detector_fingerprint/tile_size: of the detector ``job.detector`` builds (the
    client builds one once to validate the options); with the scan they identify finished
    scenes, which are skipped without a task. connect: called only when some scene needs a
    task; e.g. ``lambda: open_cluster(plan=...)``. labels: columns of an xView3 labels CSV
    (``read_labels_csv``): the archive is scored in one pass at the end, with
    ``shoreline_dir`` (``<scene_id>_shoreline.npy`` files) if given. progress: called with an
    :class:`ArchiveProgress` after every change, from the client's threads. on_cluster: called
    once the cluster is up (to show the dashboard link).
    """
    out_dir = Path(job.out_dir)
    check_out_dir(out_dir)
    started = _now()
    outcomes: dict[int, SceneOutcome] = {}
    todo: list[int] = []
    for i, plan in enumerate(plans):
        done = _finished_outcome(plan, out_dir, detector_fingerprint, tile_size, job)
        if done is not None:
            outcomes[i] = done
        else:
            todo.append(i)
    tracker = _Tracker(plans, todo, len(plans) - len(todo), progress)
    log.info("%d scenes: %d finished before, %d to run", len(plans), len(plans) - len(todo),
             len(todo))
    report = ArchiveReport(out_dir=out_dir, outcomes=[], detector=detector_name,
                           detector_fingerprint=detector_fingerprint,
                           pipeline=asdict(job.config), submission=out_dir / SUBMISSION_NAME,
                           summary_path=out_dir / SUMMARY_NAME, started=started)
    if todo:
        t0 = time.perf_counter()
        with connect() as (client, info):
            report.cluster, report.cluster_start_s = info, time.perf_counter() - t0
            if on_cluster:
                on_cluster(info)
            t1 = time.perf_counter()
            _run_tasks(client, info, plans, todo, job, tracker, outcomes)
            report.wall_s = time.perf_counter() - t1
    report.outcomes = [outcomes[i] for i in range(len(plans))]
    _write_submission(report)
    if labels is not None:
        report.score = _score(report, labels, shoreline_dir)
    report.finished = _now()
    write_json(report.summary_path, report.as_dict())
    return report


# -- helpers ------------------------------------------------------------------------------


def _finished_outcome(plan: ScenePlan, out_dir: Path, fingerprint: str, tile: int,
                      job: ArchiveJob) -> SceneOutcome | None:
    """A SKIPPED outcome when the scene's outputs of this job are complete (no lock needed: a
    consistent record is final; the task checks again under the lock anyway)."""
    if plan.scene_id is None:
        return None
    key = job_key(plan.scene_id, plan.height, plan.width, plan.files, fingerprint, tile,
                  job.config)
    record = finished_record(out_dir, plan.scene_id, key)
    if record is None:
        return None
    summary = record["summary"]
    return SceneOutcome(scene=str(plan.path), scene_id=plan.scene_id,
                        status=SceneStatus.SKIPPED, megapixels=plan.megapixels,
                        detections=int(summary["detections"]),
                        tiles_total=int(summary.get("tiles_total", 0)),
                        mpx_per_s=summary.get("mpx_per_s"), summary=summary)


def _run_tasks(client: Client, info: ClusterInfo, plans: Sequence[ScenePlan], todo: list[int],
               job: ArchiveJob, tracker: _Tracker, outcomes: dict[int, SceneOutcome]) -> None:
    from dask.base import tokenize
    from distributed import as_completed

    topic = f"sarvessel-archive-{uuid.uuid4().hex[:12]}"
    job = replace(job, progress_topic=topic,
                  threads_by_host=tuple(sorted(info.threads_by_host.items())))
    paths = [str(plans[i].path) for i in todo]
    # deterministic keys: two clients submitting the same scene of the same job share a task
    same = replace(job, progress_topic=None)  # the key must not change with the run's topic
    keys = [f"detect-scene-{plans[i].label}-{tokenize(paths[k], plans[i].files, same)}"
            for k, i in enumerate(todo)]
    index = {key: i for key, i in zip(keys, todo, strict=True)}
    client.subscribe_topic(topic, tracker.on_event)
    futures = client.map(process_scene, paths, job=job, key=keys)
    try:
        for fut in as_completed(futures):
            i = index[fut.key]
            outcome = _outcome(fut, plans[i])
            outcomes[i] = outcome
            tracker.scene_ended(i, outcome)
            fut.release()
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)


def _outcome(fut: Any, plan: ScenePlan) -> SceneOutcome:
    """The task's outcome, or a FAILED one with the one-line reason."""
    from distributed import KilledWorker

    try:
        return fut.result()
    except SarvesselError as exc:  # what `detect` prints, word for word
        message = one_line(str(exc))
    except (asyncio.CancelledError, concurrent.futures.CancelledError):
        message = "cancelled: the scheduler dropped the task (client or scheduler restarted?)"
    except KilledWorker:
        message = ("the workers running this scene died repeatedly (out of memory? see the "
                   "workers' logs); its journal is kept and a rerun resumes it")
    except Exception as exc:
        log.debug("scene %s failed", plan.path, exc_info=exc)
        message = one_line(f"{type(exc).__name__}: {exc}")
    log.warning("%s: failed: %s", plan.label, message)
    return SceneOutcome(scene=str(plan.path), scene_id=plan.scene_id, status=SceneStatus.FAILED,
                        megapixels=plan.megapixels, message=message)


def _write_submission(report: ArchiveReport) -> None:
    """The finished scenes' CSVs combined, in the order the scenes were given."""
    scenes: dict[str, Detections] = {}
    for o in report.outcomes:
        if o.status is SceneStatus.FAILED or o.scene_id is None:
            continue
        csv_path = output_paths(report.out_dir, o.scene_id)["csv"]
        scenes[o.scene_id] = _read_scene_csv(csv_path) if o.detections else Detections()
    # lengths are read back in metres, so they are written with 1 m "pixels"
    write_submissions_csv(report.submission, scenes, pixel_size_m=1.0)


def _read_scene_csv(path: Path) -> Detections:
    """A scene's submission CSV back as Detections (class = is_vessel + is_fishing, the xView3
    3-class mapping the writer inverts; lengths in metres; no boxes)."""
    t = read_predictions_csv(path)
    n = len(t["scene_id"])
    vessel = np.nan_to_num(t["is_vessel"]).astype(np.int64)
    fishing = np.nan_to_num(t["is_fishing"]).astype(np.int64)
    scores = t.get("score", np.full(n, np.nan))
    return Detections(t["detect_scene_row"], t["detect_scene_column"], scores, vessel + fishing,
                      np.zeros((n, 4), np.float32), t["vessel_length_m"])


def _score(report: ArchiveReport, labels: Mapping[str, np.ndarray],
           shoreline_dir: Path | None) -> XView3Score | None:
    from sarvessel.evaluation.scoring import score

    if not any(o.status is not SceneStatus.FAILED for o in report.outcomes):
        log.warning("no scene finished: nothing to score")
        return None
    if report.failures:
        log.warning("%d failed scenes have no predictions; their labels are not scored (the "
                    "xView3 metric scores only scenes with predictions)", len(report.failures))
    preds = read_predictions_csv(report.submission)
    return score(preds, labels, shoreline_root=shoreline_dir)


class _Tracker:
    """Archive progress from task outcomes and tile-row events (two client threads)."""

    def __init__(self, plans: Sequence[ScenePlan], todo: list[int], n_skipped: int,
                 callback: ProgressCallback | None) -> None:
        self.plans = plans
        self.callback = callback
        self.by_path = {str(plans[i].path): i for i in todo}
        self.fraction: dict[int, float] = {}
        self.lock = threading.Lock()
        self.ended = self.skipped = n_skipped
        self.failed = 0
        self.mpx_total = sum(plans[i].megapixels for i in todo)
        self._emit()

    def on_event(self, event: Any) -> None:
        """A Dask event ``(time, {"scene", "done", "total"})`` from a task's tile rows."""
        try:
            msg = event[1]
            i = self.by_path[msg["scene"]]
            frac = min(1.0, msg["done"] / msg["total"]) if msg["total"] else 0.0
        except (KeyError, IndexError, TypeError, ZeroDivisionError):
            return
        with self.lock:
            if self.fraction.get(i) != 1.0 or frac == 1.0:
                self.fraction[i] = frac
        self._emit()

    def scene_ended(self, i: int, outcome: SceneOutcome) -> None:
        with self.lock:
            self.ended += 1
            if outcome.status is SceneStatus.FAILED:
                self.failed += 1
            elif outcome.status is SceneStatus.SKIPPED:  # a live run finished it meanwhile
                self.skipped += 1
            self.fraction[i] = 1.0
        self._emit()

    def _emit(self) -> None:
        if self.callback is None:
            return
        with self.lock:
            snap = ArchiveProgress(
                scenes_total=len(self.plans), scenes_ended=self.ended,
                scenes_skipped=self.skipped, scenes_failed=self.failed,
                mpx_total=self.mpx_total,
                mpx_done=sum(self.plans[i].megapixels * f for i, f in self.fraction.items()))
        self.callback(snap)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
