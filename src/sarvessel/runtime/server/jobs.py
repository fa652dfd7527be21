"""The job store: every scene job's state in one SQLite file (WAL), written by one connection.

Why SQLite: jobs must outlive the process (a ``kill -9``, a power cut), and SQLite's WAL mode
commits durably with one fsync per transaction while readers never block the writer. Why one
connection behind a lock: the server is the only writer (a lock file refuses a second server
on the same folder), so every state change is serialised in one place and no two threads can
race a job from ``queued`` to ``running``.

A job's rows of detections are not kept here: the scene pipeline's journal beside the job's
outputs holds them (:func:`sarvessel.runtime.detect.detect_scene`), so a job found ``running``
at start-up (the server died under it) is put back in the queue and resumes from its last
finished tile row.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path

from sarvessel.runtime.server.errors import Conflict, NotFound, QueueFull, SettingsError

log = logging.getLogger(__name__)

#: Schema version (``PRAGMA user_version``); a database of another version is refused.
SCHEMA_VERSION = 1
#: Starts after which a job the server keeps dying under is failed (:meth:`JobStore.recover`).
MAX_ATTEMPTS = 5
#: Characters of a job id (hex).
JOB_ID_CHARS = 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    state            TEXT NOT NULL,
    scene_path       TEXT NOT NULL,
    scene_id         TEXT NOT NULL,
    height           INTEGER NOT NULL,
    width            INTEGER NOT NULL,
    uploaded         INTEGER NOT NULL DEFAULT 0,
    options          TEXT NOT NULL,
    out_dir          TEXT NOT NULL,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    tiles_done       INTEGER NOT NULL DEFAULT 0,
    tiles_total      INTEGER NOT NULL DEFAULT 0,
    tiles_resumed    INTEGER NOT NULL DEFAULT 0,
    mpx_per_s        REAL,
    eta_s            REAL,
    watts            REAL,
    detections       INTEGER,
    error            TEXT,
    note             TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""


class JobState(str, Enum):
    """Where a job is in its life: queued → running → done | failed | cancelled (a running job
    goes back to queued when the server stops under it)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass
class JobRecord:
    """One stored job (a row of ``jobs``). Times are Unix seconds."""

    id: str
    state: JobState
    #: The scene folder or GeoTIFF the job reads (an upload's copy for uploads).
    scene_path: str
    scene_id: str
    height: int
    width: int
    #: The job options as submitted (backend, thresholds, power budget ...), JSON-able.
    options: dict = field(default_factory=dict)
    #: Folder of the job's outputs and journal.
    out_dir: str = ""
    uploaded: bool = False
    created_at: float = 0.0
    #: Start of the latest attempt.
    started_at: float | None = None
    finished_at: float | None = None
    tiles_done: int = 0
    tiles_total: int = 0
    #: Tiles taken from the journal of an earlier attempt rather than run again.
    tiles_resumed: int = 0
    mpx_per_s: float | None = None
    eta_s: float | None = None
    #: Last measured power draw while the job ran (W); None where no sensor reads.
    watts: float | None = None
    detections: int | None = None
    error: str | None = None
    #: What else a user should know (resumed after a crash, power budget not paced ...).
    note: str | None = None
    attempts: int = 0
    cancel_requested: bool = False
    seq: int = 0

    @property
    def megapixels(self) -> float:
        return self.height * self.width / 1e6


def new_job_id() -> str:
    """A fresh random job id (:data:`JOB_ID_CHARS` hex digits)."""
    return secrets.token_hex(JOB_ID_CHARS // 2)


def valid_job_id(job_id: str) -> bool:
    """True if ``job_id`` has the form :func:`new_job_id` makes (checked before any lookup).

    >>> valid_job_id("0123456789abcdef"), valid_job_id("../etc/passwd")
    (True, False)
    """
    return len(job_id) == JOB_ID_CHARS and all(c in "0123456789abcdef" for c in job_id)


class JobStore:
    """The jobs table of ``path`` (created if missing), with its lock file held until
    :meth:`close`. All methods are thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fh = _take_lock(self.path.with_suffix(".lock"))
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                       timeout=10.0)
            self._db.row_factory = sqlite3.Row
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SettingsError(f"{self.path}: SQLite refused WAL mode ({mode}); is the "
                                    "folder on a network file system?")
            self._db.execute("PRAGMA synchronous=FULL")  # a committed state survives power loss
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise SettingsError(f"{self.path}: job database of schema {version}, this "
                                    f"server reads {SCHEMA_VERSION}")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            self._lock_fh.close()
            raise SettingsError(f"{self.path}: not a usable job database ({exc})") from exc
        except BaseException:
            self._lock_fh.close()
            raise

    # -- life cycle ---------------------------------------------------------------------------

    def recover(self, *, max_attempts: int = MAX_ATTEMPTS) -> list[JobRecord]:
        """Put jobs left ``running`` by a server that died back in the queue; return them.

        A job whose cancel was asked is cancelled instead, and one that has already been
        started ``max_attempts`` times fails: a scene that kills the server (memory, a driver)
        must not put it in a crash loop.
        """
        with self._tx() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state = ? ORDER BY seq",
                              (JobState.RUNNING.value,)).fetchall()
            out = []
            for row in rows:
                job = _record(row)
                if job.cancel_requested:
                    db.execute("UPDATE jobs SET state = ?, finished_at = ? WHERE id = ?",
                               (JobState.CANCELLED.value, time.time(), job.id))
                    continue
                if job.attempts >= max_attempts:
                    error = (f"the server died during each of {job.attempts} attempts; "
                             "giving up (see the server log)")
                    db.execute("UPDATE jobs SET state = ?, finished_at = ?, error = ? "
                               "WHERE id = ?",
                               (JobState.FAILED.value, time.time(), error, job.id))
                    log.error("job %s: %s", job.id, error)
                    continue
                note = (f"the server stopped during attempt {job.attempts} at "
                        f"{job.tiles_done}/{job.tiles_total} tiles; resumes from its journal")
                db.execute("UPDATE jobs SET state = ?, note = ? WHERE id = ?",
                           (JobState.QUEUED.value, note, job.id))
                job.state, job.note = JobState.QUEUED, note
                out.append(job)
        for job in out:
            log.warning("job %s: %s", job.id, job.note)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._lock_fh.close()

    # -- writes -------------------------------------------------------------------------------

    def create(self, job: JobRecord, *, max_queued: int, retry_after_s: int) -> JobRecord:
        """Store ``job`` as queued, or raise :class:`QueueFull` if ``max_queued`` jobs already
        wait (the check and the insert are one transaction)."""
        job.state, job.created_at = JobState.QUEUED, time.time()
        with self._tx() as db:
            (queued,) = db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?",
                                   (JobState.QUEUED.value,)).fetchone()
            if queued >= max_queued:
                raise QueueFull(f"the job queue is full ({queued} queued, at most "
                                f"{max_queued}); retry later", retry_after_s=retry_after_s)
            values = _row(job)
            values.pop("seq")
            cols = ", ".join(values)
            cur = db.execute(f"INSERT INTO jobs ({cols}) VALUES "
                             f"({', '.join('?' * len(values))})", list(values.values()))
            job.seq = int(cur.lastrowid or 0)
        return job

    def claim_next(self) -> JobRecord | None:
        """The oldest queued job, now marked running (None if the queue is empty)."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE state = ? ORDER BY seq LIMIT 1",
                             (JobState.QUEUED.value,)).fetchone()
            if row is None:
                return None
            job = _record(row)
            job.state, job.started_at, job.attempts = JobState.RUNNING, time.time(), \
                job.attempts + 1
            job.tiles_resumed = job.tiles_done
            db.execute("UPDATE jobs SET state = ?, started_at = ?, attempts = ?, "
                       "tiles_resumed = ? WHERE id = ?",
                       (job.state.value, job.started_at, job.attempts, job.tiles_resumed,
                        job.id))
        return job

    def update_progress(self, job_id: str, *, tiles_done: int, tiles_total: int,
                        mpx_per_s: float | None, eta_s: float | None,
                        watts: float | None, tiles_resumed: int | None = None) -> None:
        """Record a running job's progress (after each tile row)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET tiles_done = ?, tiles_total = ?, mpx_per_s = ?, "
                       "eta_s = ?, watts = COALESCE(?, watts), "
                       "tiles_resumed = COALESCE(?, tiles_resumed) WHERE id = ?",
                       (tiles_done, tiles_total, mpx_per_s, eta_s, watts, tiles_resumed,
                        job_id))

    def finish(self, job_id: str, state: JobState, *, detections: int | None = None,
               error: str | None = None, note: str | None = None) -> None:
        """Mark a job done, failed or cancelled."""
        if not state.finished:
            raise ValueError(f"finish() takes a final state, not {state.value}")
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = ?, finished_at = ?, detections = ?, error = ?, "
                       "note = COALESCE(?, note), eta_s = NULL WHERE id = ?",
                       (state.value, time.time(), detections, error, note, job_id))

    def requeue(self, job_id: str, note: str) -> None:
        """Put a running job back in the queue (the server is stopping under it)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = ?, note = ?, eta_s = NULL WHERE id = ?",
                       (JobState.QUEUED.value, note, job_id))

    def set_note(self, job_id: str, note: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET note = ? WHERE id = ?", (note, job_id))

    def request_cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job at once, or flag a running one (its runner stops after the
        current tile row). A finished job cannot be cancelled (:class:`Conflict`)."""
        with self._tx() as db:
            job = self._get(db, job_id)
            if job.state.finished:
                raise Conflict(f"job {job_id} is already {job.state.value}")
            if job.state is JobState.QUEUED:
                job.state, job.finished_at = JobState.CANCELLED, time.time()
                db.execute("UPDATE jobs SET state = ?, finished_at = ?, cancel_requested = 1 "
                           "WHERE id = ?", (job.state.value, job.finished_at, job_id))
            else:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            job.cancel_requested = True
        return job

    # -- reads --------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        """The job ``job_id``; :class:`NotFound` if there is none."""
        with self._lock:
            return self._get(self._db, job_id)

    def list(self, *, state: JobState | None = None, limit: int = 100) -> list[JobRecord]:
        """Jobs, newest first."""
        with self._lock:
            if state is None:
                rows = self._db.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?",
                                        (limit,)).fetchall()
            else:
                rows = self._db.execute("SELECT * FROM jobs WHERE state = ? ORDER BY seq DESC "
                                        "LIMIT ?", (state.value, limit)).fetchall()
        return [_record(r) for r in rows]

    def counts(self) -> dict[JobState, int]:
        """Jobs in each state (every state listed, zeros included)."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        out = dict.fromkeys(JobState, 0)
        out.update({JobState(s): int(n) for s, n in rows})
        return out

    def ping(self) -> bool:
        """True if the database answers (readiness)."""
        try:
            with self._lock:
                self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    # -- helpers ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed on success."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _get(db: sqlite3.Connection, job_id: str) -> JobRecord:
        row = None
        if valid_job_id(job_id):
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return _record(row)


def _take_lock(path: Path):  # -> an open file holding an exclusive flock
    """Hold an exclusive lock on ``path``: one server per work folder (the kernel drops the
    lock when the process dies, even by SIGKILL, so a crashed server never blocks a restart)."""
    fh = path.open("a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        fh.close()
        raise SettingsError(f"{path.parent}: another sarvessel server uses this work folder "
                            "(one writer per job database)") from exc
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


_FIELDS = [f.name for f in fields(JobRecord)]


def _row(job: JobRecord) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in _FIELDS:
        v = getattr(job, name)
        if isinstance(v, JobState):
            v = v.value
        elif name == "options":
            v = json.dumps(v, sort_keys=True, allow_nan=False)
        elif isinstance(v, bool):
            v = int(v)
        out[name] = v
    return out


def _record(row: sqlite3.Row) -> JobRecord:
    d = {k: row[k] for k in row.keys() if k in _FIELDS}  # noqa: SIM118 - sqlite3.Row
    d["state"] = JobState(d["state"])
    d["options"] = json.loads(d["options"])
    d["uploaded"] = bool(d["uploaded"])
    d["cancel_requested"] = bool(d["cancel_requested"])
    return JobRecord(**d)
