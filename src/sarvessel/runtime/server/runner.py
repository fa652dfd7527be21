"""Scene jobs run: worker threads take queued jobs from the store and call the library entry
:func:`~sarvessel.runtime.detect.detect_scene`, exactly as ``sarvessel detect`` does.

Stopping, by cancel or by a server shutdown, happens in the pipeline's progress callback, which
runs after each tile row has been appended to the scene journal: raising there ends the job on a
row boundary, so a stopped job loses nothing and resumes from that journal (cancelled jobs
delete it). Detectors are built by :func:`~sarvessel.runtime.detector.make_detector` and kept
for reuse (loading an ONNX session costs more than a tile row).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sarvessel.runtime.backends import BackendKind
from sarvessel.runtime.cli import pipeline_config
from sarvessel.runtime.detect import detect_scene, journal_path
from sarvessel.runtime.detector import Detector, make_detector
from sarvessel.runtime.errors import ModelError, SarvesselError
from sarvessel.runtime.pipeline import PipelineConfig
from sarvessel.runtime.power import DEFAULT_WINDOW_S, NullSensor, PowerGovernor, SensorKind
from sarvessel.runtime.server.errors import NotFound, QueueFull, Unprocessable
from sarvessel.runtime.server.inputs import check_scene
from sarvessel.runtime.server.jobs import (
    JobRecord,
    JobState,
    JobStore,
    new_job_id,
    valid_job_id,
)
from sarvessel.runtime.server.settings import ServerSettings

if TYPE_CHECKING:
    from sarvessel.runtime.power import PowerSensor
    from sarvessel.runtime.server.metrics import Metrics

log = logging.getLogger(__name__)

#: Retry-After (s) of a full queue when no running job has an ETA yet; and the bounds.
DEFAULT_RETRY_AFTER_S = 10
MAX_RETRY_AFTER_S = 600
#: Detectors kept built (distinct backend/threshold combinations).
DETECTOR_CACHE = 8
@dataclass(frozen=True)
class DetectorSpec:
    """What builds a detector: the options of a job or tile request that change detections."""

    backend: BackendKind = BackendKind.AUTO
    conf_threshold: float | None = None
    iou_threshold: float | None = None
    tta: int = 1
    second_stage: bool = True

    @classmethod
    def from_options(cls, options: dict) -> DetectorSpec:
        return cls(backend=BackendKind(options.get("backend", BackendKind.AUTO.value)),
                   conf_threshold=options.get("conf_threshold"),
                   iou_threshold=options.get("iou_threshold"),
                   tta=int(options.get("tta", 1)),
                   second_stage=bool(options.get("second_stage", True)))


class DetectorPool:
    """Built detectors by :class:`DetectorSpec`, least recently used dropped past
    :data:`DETECTOR_CACHE`. ``model``, ``package`` and ``threads`` are the server's (a request
    cannot name a file)."""

    def __init__(self, *, model: Path | None = None, package: Path | None = None,
                 threads: int | None = None) -> None:
        self.model = model
        self.package = package
        self.threads = threads
        self._cache: OrderedDict[DetectorSpec, Detector] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: DetectorSpec) -> Detector:
        """The detector of ``spec`` (built on first use; raises
        :class:`~sarvessel.runtime.errors.ModelError` for a spec it cannot build)."""
        with self._lock:
            det = self._cache.get(spec)
            if det is not None:
                self._cache.move_to_end(spec)
                return det
            b = spec.backend  # the server's model / package go where `detect` would take them
            model = self.model if b in (BackendKind.ONNX, BackendKind.AUTO) else None
            package = self.package if b in (BackendKind.SIM, BackendKind.FPGA,
                                            BackendKind.AUTO) else None
            det = make_detector(b, model=model, package=package,
                                threads=self.threads, conf_threshold=spec.conf_threshold,
                                iou_threshold=spec.iou_threshold, tta=spec.tta,
                                second_stage=spec.second_stage)
            self._cache[spec] = det
            while len(self._cache) > DETECTOR_CACHE:
                self._cache.popitem(last=False)
            return det


def job_pipeline_config(options: dict, tile_size: int) -> PipelineConfig:
    """The pipeline settings of a job, with the same defaults and checks as ``sarvessel
    detect``'s ``--overlap``/``--batch``/``--gate-db``."""
    args = argparse.Namespace(overlap=options.get("overlap"),
                              batch=int(options.get("batch_size", PipelineConfig.batch_size)),
                              gate_db=options.get("gate_db"))
    return pipeline_config(args, tile_size)


class PowerProbe:
    """The server's power sensor, shared by the jobs' governors and the status readers.

    While a job runs, its :class:`~sarvessel.runtime.power.PowerGovernor` samples the sensor and
    :meth:`watts` is the mean of that trace over the last second; with no job running it reads
    the sensor itself, at most every ``min_interval_s`` (never both at once: some sensors keep
    state between reads). None where the host has no sensor or it stopped answering.
    """

    def __init__(self, sensor: PowerSensor | None, *, min_interval_s: float = 0.5) -> None:
        self.sensor: PowerSensor = sensor if sensor is not None else NullSensor()
        self.min_interval_s = min_interval_s
        self._last: float | None = None
        self._at = -math.inf
        self._lock = threading.Lock()
        self._active: list[PowerGovernor] = []

    @property
    def available(self) -> bool:
        return self.sensor.kind is not SensorKind.NONE

    def governor(self, budget_w: float | None, window_s: float) -> PowerGovernor:
        """A governor on this sensor: paces to ``budget_w`` (None: measures only)."""
        return PowerGovernor(self.sensor, budget_w, window_s)

    @contextlib.contextmanager
    def running(self, governor: PowerGovernor) -> Iterator[PowerGovernor]:
        """Start ``governor`` for a job; :meth:`watts` reads its trace until it stops."""
        with self._lock:
            self._active.append(governor)
        try:
            with governor:
                yield governor
        finally:
            with self._lock:
                self._active.remove(governor)

    def watts(self) -> float | None:
        if not self.available:
            return None
        with self._lock:
            for gov in self._active:
                w = _recent_watts(gov)
                if w is not None:
                    self._last = w
                    return w
            if self._active:
                return self._last
            now = time.monotonic()
            if now - self._at >= self.min_interval_s:
                self._at = now
                try:
                    w = self.sensor.read().watts
                except SarvesselError as exc:  # SensorGone, PowerError: stop reading
                    log.warning("power sensor stopped answering: %s", exc)
                    self.sensor = NullSensor(reason=str(exc))
                    return None
                if w is not None and math.isfinite(w):
                    self._last = float(w)
            return self._last


def _recent_watts(gov: PowerGovernor, span_s: float = 1.0) -> float | None:
    """Mean power of the governor's trace over its last ``span_s`` seconds (None if empty)."""
    trace = gov.sampler.trace
    end, start = trace.end, trace.start
    if end is None or start is None or end <= start:
        return None
    t0 = max(start, end - span_s)
    w = (trace.energy_at_time(end) - trace.energy_at_time(t0)) / (end - t0)
    return float(w) if math.isfinite(w) else None


class _Stop(Exception):
    """Raised in the progress callback to end a job on a tile-row boundary."""

    def __init__(self, cancelled: bool) -> None:
        super().__init__("cancelled" if cancelled else "server stopping")
        self.cancelled = cancelled


class JobRunner:
    """Runs queued jobs on ``settings.workers`` threads until :meth:`stop`."""

    def __init__(self, settings: ServerSettings, store: JobStore, detectors: DetectorPool, *,
                 metrics: Metrics | None = None, power: PowerProbe | None = None) -> None:
        self.settings = settings
        self.store = store
        self.detectors = detectors
        self.metrics = metrics
        self.power = power or PowerProbe(None)
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._cancel: set[str] = set()
        self._threads: list[threading.Thread] = []

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.settings.workers):
            t = threading.Thread(target=self._loop, name=f"sarvessel-job-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking jobs; running jobs end after their current tile row and go back in the
        queue (resumable). Waits for the workers (``timeout`` seconds; the default waits)."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout)

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads) \
            and not self._stopping.is_set()

    def sweep_uploads(self) -> int:
        """At start-up, before any request: delete upload folders no queued or running job
        needs (half-written ones a killed upload left, and those of finished jobs whose
        clean-up a crash cut short). Returns how many were removed."""
        removed = 0
        for path in sorted(self.settings.uploads_dir.iterdir()):
            job = None
            if valid_job_id(path.name):
                with contextlib.suppress(NotFound):
                    job = self.store.get(path.name)
            if job is None or job.state.finished:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        if removed:
            log.info("removed %d stale upload folder(s)", removed)
        return removed

    def wake(self) -> None:
        """A job was queued: let an idle worker take it."""
        with self._wake:
            self._wake.notify()

    def submit(self, scene_path: Path, options: dict, *, label: str, uploaded: bool = False,
               job_id: str | None = None) -> JobRecord:
        """Check a job and queue it: its detector builds, its options fit that detector, its
        scene opens with whole TIFFs (``label`` names the scene in error messages), and the
        queue has room (:class:`~sarvessel.runtime.server.errors.QueueFull` otherwise)."""
        try:
            detector = self.detectors.get(DetectorSpec.from_options(options))
        except ModelError as exc:  # e.g. tta on a CFAR backend; named as an option, not a flag
            raise Unprocessable(f"options: {str(exc).replace('--', '')}") from exc
        try:
            job_pipeline_config(options, detector.tile_size)
        except SarvesselError as exc:
            raise Unprocessable(f"options: {str(exc).lstrip('-')}") from exc
        if options.get("power_budget_w") is not None and not self.power.available:
            raise Unprocessable(f"options: a power budget needs a power sensor, and this server "
                                f"has none ({getattr(self.power.sensor, 'note', 'none')})")
        scene_id, height, width = check_scene(scene_path, label=label)
        job_id = job_id or new_job_id()
        job = JobRecord(id=job_id, state=JobState.QUEUED, scene_path=str(scene_path),
                        scene_id=scene_id, height=height, width=width, options=options,
                        out_dir=str(self.settings.jobs_dir / job_id), uploaded=uploaded)
        self.store.create(job, max_queued=self.settings.max_queue,
                          retry_after_s=self.retry_after_s())
        log.info("job %s: queued %s (%d x %d px)", job.id, scene_id, height, width)
        self.wake()
        return job

    def check_room(self) -> None:
        """Raise :class:`~sarvessel.runtime.server.errors.QueueFull` now if the queue is full
        (before an upload is stored; :meth:`submit` checks again atomically)."""
        queued = self.store.counts()[JobState.QUEUED]
        if queued >= self.settings.max_queue:
            raise QueueFull(f"the job queue is full ({queued} queued, at most "
                            f"{self.settings.max_queue}); retry later",
                            retry_after_s=self.retry_after_s())

    def cancel(self, job_id: str) -> JobRecord:
        job = self.store.request_cancel(job_id)
        if job.state is JobState.RUNNING:
            self._cancel.add(job_id)
        elif job.state is JobState.CANCELLED:  # was queued: the store says so already
            self._tidy(job, JobState.CANCELLED, detections=None)
            self._remove_upload(job)
        return job

    def retry_after_s(self) -> int:
        """When a queue slot is likely to free: the shortest ETA of the running jobs."""
        etas = [j.eta_s for j in self.store.list(state=JobState.RUNNING)
                if j.eta_s is not None and math.isfinite(j.eta_s)]
        if not etas:
            return DEFAULT_RETRY_AFTER_S
        return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(min(etas)))))

    # -- workers ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            job = self.store.claim_next()
            if job is None:
                with self._wake:
                    self._wake.wait(timeout=1.0)
                continue
            try:
                self._run(job)
            except Exception:  # keep the worker alive; the job says what happened
                log.exception("job %s: internal error", job.id)
                self._end(job, JobState.FAILED, error="internal error (see the server log)")
            finally:
                self._cancel.discard(job.id)

    def _run(self, job: JobRecord) -> None:
        log.info("job %s: running %s (attempt %d)", job.id, job.scene_path, job.attempts)
        progress = _Progress(self, job)
        try:
            detector = self.detectors.get(DetectorSpec.from_options(job.options))
            config = job_pipeline_config(job.options, detector.tile_size)
            governor = self.power.governor(job.options.get("power_budget_w"),
                                           job.options.get("power_window_s", DEFAULT_WINDOW_S))
            with self.power.running(governor):  # paces to the budget, measures energy
                result, _ = detect_scene(Path(job.scene_path), detector,
                                         out_dir=Path(job.out_dir), config=config, resume=True,
                                         progress=progress, governor=governor)
        except _Stop as stop:
            if stop.cancelled:
                self._end(job, JobState.CANCELLED,
                          note=f"cancelled at {progress.done}/{progress.total} tiles")
                log.info("job %s: cancelled", job.id)
            else:
                self.store.requeue(job.id, f"stopped with the server at {progress.done}/"
                                   f"{progress.total} tiles; resumes from its journal")
                log.info("job %s: stopped with the server after a tile row (resumable)", job.id)
            return
        except SarvesselError as exc:
            self._end(job, JobState.FAILED, error=str(exc))
            log.warning("job %s: failed: %s", job.id, exc)
            return
        n = len(result.detections)
        self.store.update_progress(job.id, tiles_done=result.tiles_total,
                                   tiles_total=result.tiles_total, mpx_per_s=result.mpx_per_s,
                                   eta_s=0.0, watts=self.power.watts(),
                                   tiles_resumed=result.tiles_resumed)
        self._end(job, JobState.DONE, detections=n)
        log.info("job %s: done, %d detections, %s MPx/s", job.id, n,
                 "n/a" if result.mpx_per_s is None else f"{result.mpx_per_s:.2f}")

    def _end(self, job: JobRecord, state: JobState, *, detections: int | None = None,
             error: str | None = None, note: str | None = None) -> None:
        """Finish a job. What a client may check once it sees the final state (the journal
        gone, the metrics counted) is done first; the uploaded scene is removed only after the
        state is stored, so a crash in between still finds the scene for the resumed job."""
        self._tidy(job, state, detections=detections)
        self.store.finish(job.id, state, detections=detections, error=error, note=note)
        self._remove_upload(job)

    def _tidy(self, job: JobRecord, state: JobState, *, detections: int | None) -> None:
        if state in (JobState.CANCELLED, JobState.FAILED):  # nothing to resume
            journal_path(Path(job.out_dir), job.scene_id).unlink(missing_ok=True)
        if self.metrics:
            self.metrics.job_finished(state.value, detections=detections or 0)

    def _remove_upload(self, job: JobRecord) -> None:
        if job.uploaded:
            shutil.rmtree(self.settings.uploads_dir / job.id, ignore_errors=True)


class _Progress:
    """The progress callback of one job attempt: records progress, counts tiles in the
    metrics, applies the test row delay, and stops the job on cancel or shutdown."""

    def __init__(self, runner: JobRunner, job: JobRecord) -> None:
        self.runner = runner
        self.job = job
        self.base = job.tiles_resumed  # tiles done by earlier attempts
        self.done = job.tiles_done
        self.total = job.tiles_total
        self.t0 = time.monotonic()
        self.t_last = self.t0

    def __call__(self, done: int, total: int) -> None:
        r = self.runner
        now = time.monotonic()
        new = done - self.done
        ran = max(0, done - self.base)
        elapsed = max(now - self.t0, 1e-9)
        rate = ran / elapsed if ran else 0.0  # tiles/s of this attempt
        mpx_s = self.job.megapixels * ran / total / elapsed if total and ran else None
        eta = (total - done) / rate if rate > 0 else None
        if r.metrics and new > 0 and done > self.base:
            r.metrics.tiles_done("job", new)
            r.metrics.row_seconds(now - self.t_last)
        self.done, self.total, self.t_last = done, total, now
        watts = r.power.watts()
        if r.metrics and watts is not None:
            r.metrics.set_watts(watts)
        r.store.update_progress(self.job.id, tiles_done=done, tiles_total=total,
                                mpx_per_s=mpx_s, eta_s=eta, watts=watts)
        if r.settings.row_delay_s and done < total:
            time.sleep(r.settings.row_delay_s)
        if done >= total:  # the scan is complete: let the outputs be written
            return
        if self.job.id in r._cancel:
            raise _Stop(cancelled=True)
        if r._stopping.is_set():
            raise _Stop(cancelled=False)
