"""One archive task: a scene on a Dask worker, written by the task itself, a small outcome back.

:func:`process_scene` is what ``Client.map`` runs. It

1. opens the scene (a bad scene fails here or in the pipeline with the very message
   ``sarvessel detect`` prints; the exception travels back to the client);
2. takes the scene's lock in the output folder, ``<scene_id>.archive.lock`` (:class:`SceneLock`);
3. skips the scene if its completion record ``<scene_id>.archive.json`` says its outputs are
   complete and were made by the same job (:func:`finished_record`);
4. otherwise calls :func:`sarvessel.runtime.detect.detect_scene`, which resumes from the scene's
   journal if a previous attempt left one, writes the outputs atomically and removes the journal;
5. writes the completion record and returns a :class:`SceneOutcome` (no detections: the client
   collects summaries only).

Why a kernel lock (``flock``): it belongs to the process, so the kernel drops it the moment a
worker dies, however it dies (``kill -9``, out of memory, node loss on NFS after the lease
expires). The task Dask reschedules after a worker death therefore takes over the dead
worker's journal at once, while two *live* runs never write one scene together: the second
waits (``lock_wait_s``) and then finds the scene finished, or gives up with a message naming
the holder. A lock that needs its owner to clean up (a pid file) could not be taken over from
another host.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from sarvessel.archive.errors import ArchiveError
from sarvessel.runtime.backends import BackendKind
from sarvessel.runtime.detect import check_out_dir, detect_scene, journal_path
from sarvessel.runtime.detector import Detector, make_detector
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io.outputs import write_json
from sarvessel.runtime.io.scene import open_scene
from sarvessel.runtime.pipeline import PipelineConfig

log = logging.getLogger(__name__)

#: Poll interval while another live run holds a scene's lock (s).
LOCK_POLL_S = 0.5


class SceneStatus(str, Enum):
    """How a scene ended in this run."""

    DONE = "done"  #: detected in this run (possibly resumed from a journal)
    SKIPPED = "skipped"  #: complete outputs of the same job were already there
    FAILED = "failed"  #: the task raised; ``message`` says why in one line


@dataclass(frozen=True)
class DetectorSpec:
    """What a worker needs to build the detector itself (a built one does not pickle).

    ``threads``: onnxruntime threads per task; None lets each worker decide
    (:func:`task_threads`). The default is None.
    """

    backend: BackendKind = BackendKind.AUTO
    model: str | None = None
    tta: int = 1
    threads: int | None = None
    #: Deploy package of the sim backend (an fpga backend needs a board per worker).
    package: str | None = None
    paced: bool = False

    def build(self, threads: int | None = None) -> Detector:
        """The detector, with ``threads`` onnxruntime threads (the default is ``self.threads``)."""
        return make_detector(self.backend, model=Path(self.model) if self.model else None,
                             threads=threads or self.threads, tta=self.tta,
                             package=Path(self.package) if self.package else None,
                             paced=self.paced)


@dataclass(frozen=True)
class ArchiveJob:
    """Everything a task needs besides its scene; the same for every task of a run."""

    #: Output folder, on storage every worker and the client see at this path.
    out_dir: str
    detector: DetectorSpec
    config: PipelineConfig = PipelineConfig()
    #: How long a task waits for a scene another live run is writing (s). The default is 600.
    lock_wait_s: float = 600.0
    #: onnxruntime threads per task by worker host name, when ``detector.threads`` is None.
    threads_by_host: tuple[tuple[str, int], ...] = ()
    #: Dask event topic for tile-row progress (None: no events). The default is None.
    progress_topic: str | None = None
    #: Workers leave out their "Compute Failed" traceback for a scene's user-facing error (a
    #: bad scene), which the client reports in one line anyway; other errors are still logged.
    #: The default is False.
    quiet_user_errors: bool = False
    #: Test hook: seconds to sleep after each tile row, so a test can kill a worker mid-scene.
    #: The default is 0.
    row_delay_s: float = 0.0


@dataclass
class SceneOutcome:
    """What a task returns (or the client records for a failed one): a summary, no detections."""

    scene: str
    scene_id: str | None
    status: SceneStatus
    megapixels: float = 0.0
    detections: int = 0
    #: Wall-clock seconds of the task, lock and write included.
    seconds: float = 0.0
    #: MPx/s of the tiles run in this task (resumed rows excluded); None when nothing ran.
    mpx_per_s: float | None = None
    tiles_total: int = 0
    tiles_resumed: int = 0
    worker: str | None = None
    message: str | None = None
    summary: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        del d["summary"]
        return d


def process_scene(scene_path: str, job: ArchiveJob) -> SceneOutcome:
    """Detect one scene into ``job.out_dir`` (module docstring); raise what ``detect`` raises."""
    try:
        return _process_scene(scene_path, job)
    except SarvesselError:
        if job.quiet_user_errors:
            _quiet_this_task_failure()
        raise


def _process_scene(scene_path: str, job: ArchiveJob) -> SceneOutcome:
    t0 = time.perf_counter()
    out_dir = Path(job.out_dir)
    check_out_dir(out_dir)
    detector = cached_detector(job.detector, task_threads(job))
    with open_scene(scene_path) as scene:
        sid, mpx = scene.scene_id, scene.height * scene.width / 1e6
        key = job_key(sid, scene.height, scene.width, scene.fingerprint(), detector.fingerprint,
                      detector.tile_size, job.config)
    worker = _worker_address()
    with SceneLock(lock_path(out_dir, sid), wait_s=job.lock_wait_s, label=sid):
        record = finished_record(out_dir, sid, key)
        if record is not None:
            summary = record["summary"]
            log.info("%s: complete outputs of this job are there; skipped", sid)
            return SceneOutcome(scene=scene_path, scene_id=sid, status=SceneStatus.SKIPPED,
                                megapixels=mpx, detections=int(summary["detections"]),
                                seconds=time.perf_counter() - t0, worker=worker,
                                tiles_total=int(summary.get("tiles_total", 0)),
                                mpx_per_s=summary.get("mpx_per_s"), summary=summary)
        record_path(out_dir, sid).unlink(missing_ok=True)  # never describes the new outputs
        result, paths = detect_scene(Path(scene_path), detector, out_dir=out_dir,
                                     config=job.config, resume=True,
                                     progress=_progress_fn(job, scene_path))
        summary = json.loads(paths["json"].read_text())
        write_record(out_dir, sid, key, paths, summary)
    rate = result.mpx_per_s
    return SceneOutcome(scene=scene_path, scene_id=sid, status=SceneStatus.DONE,
                        megapixels=mpx, detections=len(result.detections),
                        seconds=time.perf_counter() - t0,
                        mpx_per_s=rate,  # None: none ran (every row resumed)
                        tiles_total=result.tiles_total, tiles_resumed=result.tiles_resumed,
                        worker=worker, summary=summary)


def job_key(scene_id: str, height: int, width: int, files: list | tuple, detector: str,
            tile: int, config: PipelineConfig) -> dict[str, Any]:
    """What makes a scene's outputs reusable: the same files (path, size, mtime), the same
    detector fingerprint (model bytes, thresholds) and the same pipeline settings. JSON-plain,
    so a key read back from a record compares equal."""
    key = {"scene_id": scene_id, "height": int(height), "width": int(width),
           "files": [list(f) for f in files], "detector": detector, "tile": int(tile),
           "pipeline": asdict(config)}
    return json.loads(json.dumps(key, allow_nan=False))


def record_path(out_dir: Path, scene_id: str) -> Path:
    """The completion record of a scene, written after all its outputs."""
    return Path(out_dir) / f"{scene_id}.archive.json"


def lock_path(out_dir: Path, scene_id: str) -> Path:
    """The lock file of a scene (:class:`SceneLock`)."""
    return Path(out_dir) / f"{scene_id}.archive.lock"


def write_record(out_dir: Path, scene_id: str, key: dict, paths: dict[str, Path],
                 summary: dict) -> Path:
    """Record that ``paths`` are the complete outputs of job ``key`` (sizes and mtimes)."""
    outputs = {}
    for kind, p in paths.items():
        st = p.stat()
        outputs[kind] = {"name": p.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return write_json(record_path(out_dir, scene_id),
                      {"scene_id": scene_id, "job": key, "outputs": outputs, "summary": summary})


def finished_record(out_dir: Path, scene_id: str, key: dict) -> dict | None:
    """The completion record if the scene's outputs are complete and made by job ``key``:
    the record matches ``key``, no journal is left (a journal means a later run started), every
    output has the recorded size and mtime, and the scene's ``_summary.json`` is the recorded
    one. None otherwise (the reason is logged at debug level)."""
    path = record_path(out_dir, scene_id)
    why = None
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        why, record = f"unreadable record ({exc})", None
    if record is not None:
        why = _record_problem(Path(out_dir), scene_id, key, record)
    if why:
        log.debug("%s: not skipped: %s", scene_id, why)
        return None
    return record


def task_threads(job: ArchiveJob) -> int:
    """onnxruntime threads for a task: the job's, else what the client worked out for this
    host (its cores over the Dask threads of all workers there), else this worker's share."""
    if job.detector.threads:
        return job.detector.threads
    host = socket.gethostname()
    for name, n in job.threads_by_host:
        if name == host:
            return n
    nthreads = 1
    try:
        from distributed import get_worker

        nthreads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):  # not inside a worker
        pass
    return max(1, usable_cores() // max(1, nthreads))


def cached_detector(spec: DetectorSpec, threads: int) -> Detector:
    """One detector per spec, thread count and worker thread, built on first use (loading a
    model per scene would cost more than a small scene's inference)."""
    key = (spec, threads, threading.get_ident())
    with _CACHE_LOCK:
        det = _DETECTORS.get(key)
    if det is None:
        det = spec.build(threads)
        with _CACHE_LOCK:
            _DETECTORS[key] = det
    return det


def worker_probe() -> dict[str, Any]:
    """What the client asks every worker before submitting: host, usable cores, pid, version
    (also proves the worker can import sarvessel)."""
    from sarvessel import __version__

    return {"host": socket.gethostname(), "cores": usable_cores(), "pid": os.getpid(),
            "sarvessel": __version__}


def usable_cores() -> int:
    """Cores this process may use: affinity and cgroup quotas counted (dask's ``CPU_COUNT``
    when dask is installed, else the affinity mask)."""
    try:
        from dask.system import CPU_COUNT

        return max(1, int(CPU_COUNT))
    except ImportError:
        pass
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class SceneLock:
    """An exclusive ``flock`` on ``path`` for as long as the ``with`` block runs.

    Held by the process (the kernel releases it when the process dies), exclusive between
    processes *and* between threads of one process (each acquisition opens its own file
    description). Waits up to ``wait_s`` seconds for a holder, then raises
    :class:`ArchiveError` naming it (host, pid, worker, since when). The file holds the
    holder's description and is removed on release.
    """

    def __init__(self, path: Path, *, wait_s: float = 0.0, label: str | None = None) -> None:
        self.path = Path(path)
        self.wait_s = float(wait_s)
        self.label = label or self.path.name
        self._fd: int | None = None

    def __enter__(self) -> SceneLock:
        import fcntl

        deadline = time.monotonic() + self.wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise ArchiveError(
                        f"{self.label}: another live run is writing this scene ({holder}); "
                        f"gave up after {self.wait_s:g} s (--lock-wait)") from None
                time.sleep(LOCK_POLL_S)
                continue
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise ArchiveError(
                        f"{self.path.parent}: the file system does not support file locks "
                        f"({exc.strerror}); mount it with locking (NFS: lockd; Lustre: -o "
                        "flock)") from exc
                raise
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file as we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_holder(), allow_nan=False).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: waiters reopen
        finally:
            os.close(self._fd)
            self._fd = None


# -- helpers ------------------------------------------------------------------------------

_DETECTORS: dict[tuple, Detector] = {}
_CACHE_LOCK = threading.Lock()


def _record_problem(out_dir: Path, scene_id: str, key: dict, record: dict) -> str | None:
    if record.get("job") != key:
        return "made by another job (other files, detector or settings)"
    if journal_path(out_dir, scene_id).exists():
        return "a journal is left: a later run started and did not finish"
    outputs = record.get("outputs") or {}
    if "json" not in outputs or "csv" not in outputs:
        return "record lists no summary or CSV"
    for kind, meta in outputs.items():
        p = out_dir / str(meta.get("name"))
        try:
            st = p.stat()
        except OSError:
            return f"{kind} output {p.name} is missing"
        if (st.st_size, st.st_mtime_ns) != (meta.get("size"), meta.get("mtime_ns")):
            return f"{kind} output {p.name} changed since the record"
    try:
        summary = json.loads((out_dir / outputs["json"]["name"]).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return f"summary unreadable ({exc})"
    if summary != record.get("summary") or summary.get("scene_id") != scene_id:
        return "summary differs from the record"
    return None


def _progress_fn(job: ArchiveJob, scene_path: str):
    """Tile-row progress as Dask events on ``job.progress_topic`` (and the test hook's sleep)."""
    worker = None
    if job.progress_topic:
        try:
            from distributed import get_worker

            worker = get_worker()
        except (ImportError, ValueError):  # not inside a worker: no events
            worker = None

    def progress(done: int, total: int) -> None:
        if worker is not None:
            try:
                worker.log_event(job.progress_topic, {"scene": scene_path, "done": done,
                                                      "total": total})
            except Exception as exc:  # progress must never fail a scene
                log.debug("progress event not sent: %s", exc)
        if job.row_delay_s > 0:
            time.sleep(job.row_delay_s)

    return progress


class _QuietUserErrors(logging.Filter):
    """Drops the worker's "Compute Failed" record of the tasks in ``_QUIET_KEYS``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (isinstance(record.msg, str) and record.msg.startswith("Compute Failed")
                and record.args and record.args[0] in _QUIET_KEYS):
            _QUIET_KEYS.discard(record.args[0])
            return False
        return True


_QUIET_KEYS: set = set()


def _quiet_this_task_failure() -> None:
    try:
        from distributed import get_worker

        key = get_worker().get_current_task()
    except (ImportError, ValueError):  # not inside a worker: nothing logs it
        return
    worker_log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _QuietUserErrors) for f in worker_log.filters):
        worker_log.addFilter(_QuietUserErrors())
    _QUIET_KEYS.add(key)


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "worker": _worker_address(),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        h = json.loads(os.read(fd, 4096).decode() or "{}")
        where = f"host {h.get('host')}, pid {h.get('pid')}"
        if h.get("worker"):
            where += f", worker {h['worker']}"
        return f"{where}, since {h.get('since')}"
    except (OSError, ValueError):
        return "holder unknown"


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev)
