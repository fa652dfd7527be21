"""Who owns a scene's run: an exclusive job lock, and the journal of its finished tile rows.

A run of one scene into one output folder holds ``<scene_id>.journal.lock`` (an exclusive
``fcntl.flock``) from before it reads the journal until its last output is in place. So:

- a second run of the same scene into the same folder (another process, or another thread of a
  tile server or an archive worker: ``flock`` locks belong to an open file, not a process) is
  refused with one line naming the holder's pid, host and job, or waits for it
  (``wait_s``; ``sarvessel detect --wait``);
- a run killed by any means (``kill -9``, power loss) holds nothing: the kernel drops the lock
  with the process, so the next run takes over at once, and no stale-lock timeout is needed;
- only the lock holder reads, replaces or deletes the journal and the outputs, so rows of one
  job never land in another job's journal, and no run deletes another live run's journal.

The journal (JSON lines) starts with a header naming its job: the key of
:func:`journal_key` and its hash, the job id. Rows are reused only under the same key; a
journal of another job is never adopted, and is replaced only when this run finishes its
first row. Nothing is written before then, so a refusal (units, all nodata) leaves no journal.

The lock file is removed by its holder on release, after the journal; a waiting run checks,
once it holds the lock, that the path still names the file it locked (else it locks the new
one), the usual way to delete a lock file without a race. ``flock`` on NFS is emulated with
POSIX byte-range locks (Linux 2.6.12 and later), which work across hosts but not between two
threads of one process: on shared storage, run one job per scene and folder per process.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from sarvessel.runtime.detections import Detections
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io.outputs import atomic_open

log = logging.getLogger(__name__)

#: Fields of a journal record, in the order of :class:`Detections`.
RECORD_FIELDS = ("rows", "cols", "scores", "classes", "boxes", "lengths_px")


class JobLockedError(SarvesselError):
    """Another live run holds the lock of this scene and output folder."""


def job_id(key: dict[str, Any]) -> str:
    """A short hash of a job key (16 hex digits): what a lock and a journal header name."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def lock_path(journal: Path) -> Path:
    """The lock file of a journal: ``X.journal.jsonl`` → ``X.journal.lock``."""
    return Path(journal).with_suffix(".lock")


@dataclass(frozen=True)
class LockHolder:
    """What the holder of a lock wrote into it (fields may be missing in a torn file)."""

    pid: int | None
    host: str
    job: str
    started: str

    def describe(self) -> str:
        pid = "pid unknown" if self.pid is None else f"pid {self.pid}"
        host = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        job = f", job {self.job}" if self.job else ""
        since = f", since {self.started}" if self.started else ""
        return f"{pid}{host}{job}{since}"


class JobLock:
    """An exclusive ``flock`` on ``path`` for the length of a run (a context manager).

    job: the job id written into the lock file for the message another run sees. wait_s:
    seconds to wait for a live holder before refusing; 0 refuses at once (the default),
    ``math.inf`` waits for as long as it takes. poll_s: how often a waiting run retries.
    Raises :class:`JobLockedError` naming the holder.
    """

    def __init__(self, path: Path, *, job: str = "", wait_s: float = 0.0,
                 poll_s: float = 0.2) -> None:
        if not wait_s >= 0:  # also refuses NaN
            raise SarvesselError(f"wait must be >= 0 seconds, got {wait_s}")
        self.path = Path(path)
        self.job = job
        self.wait_s = float(wait_s)
        self.poll_s = float(poll_s)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> JobLock:
        """Take the lock, waiting up to ``wait_s``; return self."""
        if self._fd is not None:
            return self
        deadline = time.monotonic() + self.wait_s
        told = False
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise SarvesselError(f"{self.path}: cannot create the lock file "
                                     f"({exc.strerror})") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise SarvesselError(f"{self.path}: cannot lock ({exc.strerror})") from exc
                holder = read_holder(self.path)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise JobLockedError(
                        f"{self.path}: another run holds this scene's outputs ("
                        f"{holder.describe()}); wait for it (--wait) or use another --out"
                    ) from None
                if not told:
                    log.warning("%s: waiting for the run that holds it (%s)", self.path,
                                holder.describe())
                    told = True
                time.sleep(min(self.poll_s, left))
                continue
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file as we locked it: lock the new one
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "job": self.job,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info, allow_nan=False) + "\n").encode(), 0)
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: Path) -> LockHolder:
    """The holder a lock file names (fields empty when it is being written or torn)."""
    try:
        data = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    pid = data.get("pid")
    return LockHolder(pid=pid if isinstance(pid, int) else None, host=str(data.get("host", "")),
                      job=str(data.get("job", "")), started=str(data.get("started", "")))


class Journal:
    """Finished tile rows of one job: JSON lines, a header, then one record per tile row.

    path: the journal file. key: the job key (:func:`journal_key`). The caller holds the
    :class:`JobLock` of the journal while it uses it. Nothing is written until the first
    :meth:`append`; every record is flushed and fsynced before the next row starts.
    """

    def __init__(self, path: Path, key: dict[str, Any]) -> None:
        self.path = Path(path)
        self.key = key
        self.job = job_id(key)
        self._keep: list[str] = []  # records of this job to keep when the file is rewritten
        self._rewrite = True  # the file must be (re)written with this job's header first
        self._fh: IO[str] | None = None

    def load(self) -> dict[int, Detections]:
        """Finished rows of an earlier run of the same job (empty if none or another job's).

        Reads only: a journal of another job stays as it is until this run's first row
        replaces it; damaged records (a kill mid-write) are dropped then.
        """
        self._keep, self._rewrite = [], True
        if not self.path.is_file():
            return {}
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("journal") != self.key:
            other = header.get("job", "?") if isinstance(header, dict) else "?"
            log.warning("%s belongs to another job (%s; this is %s: other files, detector or "
                        "tiling); its %d rows are not used, and it is replaced once this run "
                        "finishes a row", self.path, other, self.job, max(0, len(lines) - 1))
            return {}
        done: dict[int, Detections] = {}
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                d = rec["dets"]
                done[int(rec["row"])] = Detections(*(np.asarray(d[k], np.float64)
                                                     for k in RECORD_FIELDS))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a record torn by a kill or power cut mid-write: run that row again
            self._keep.append(line)
        damaged = len(lines) - 1 - len(self._keep)
        if damaged:
            log.warning("%s: dropped %d damaged record(s); their rows run again", self.path,
                        damaged)
        self._rewrite = damaged > 0  # then appends start on a fresh line after the last good one
        log.info("resuming from %s: %d tile rows already done", self.path, len(done))
        return done

    def append(self, row: int, dets: Detections) -> None:
        """Record tile row ``row`` as finished with ``dets`` (scene pixels)."""
        if self._fh is None:
            if self._rewrite or not self.path.is_file():
                with atomic_open(self.path) as fh:
                    fh.write("".join(line + "\n" for line in [self.header(), *self._keep]))
                self._rewrite = False
            self._fh = self.path.open("a", encoding="utf-8")
        rec = {"row": int(row), "dets": {k: _json_list(getattr(dets, k)) for k in RECORD_FIELDS}}
        self._fh.write(json.dumps(rec, allow_nan=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def header(self) -> str:
        return json.dumps({"job": self.job, "journal": self.key}, allow_nan=False)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def discard(self) -> None:
        """Delete the journal file (the run's outputs are in place, or a fresh start)."""
        self.close()
        self.path.unlink(missing_ok=True)
        self._keep, self._rewrite = [], True


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_ino, own.st_dev) == (st.st_ino, st.st_dev)


def _json_list(a: np.ndarray) -> list:
    """``a`` as nested lists, NaN and infinities as None (JSON has no NaN)."""
    if a.dtype.kind != "f":
        return a.tolist()
    if np.all(np.isfinite(a)):
        return a.tolist()
    return np.where(np.isfinite(a), a.astype(object), None).tolist()
