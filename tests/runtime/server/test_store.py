"""The job store on a real SQLite file: WAL, one server per folder, an atomic queue bound,
recovery of jobs a dead server left running, cancel rules."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from sarvessel.runtime.server.errors import Conflict, NotFound, QueueFull, SettingsError
from sarvessel.runtime.server.jobs import JobRecord, JobState, JobStore, new_job_id


def _job(**kw: object) -> JobRecord:
    args: dict = dict(id=new_job_id(), state=JobState.QUEUED, scene_path="/s/x", scene_id="x",
                      height=100, width=200, options={"backend": "cfar"}, out_dir="/o/x")
    args.update(kw)
    return JobRecord(**args)


@pytest.fixture
def store(tmp_path: Path):
    s = JobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def test_the_database_is_in_wal_mode_and_round_trips_a_job(store: JobStore) -> None:
    job = store.create(_job(options={"backend": "onnx", "power_budget_w": 5.0}),
                       max_queued=4, retry_after_s=1)
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    got = store.get(job.id)
    assert got.state is JobState.QUEUED and got.options["power_budget_w"] == 5.0
    assert got.created_at > 0 and got.seq == job.seq and got.megapixels == 0.02


def test_a_second_server_on_the_same_folder_is_refused(store: JobStore) -> None:
    with pytest.raises(SettingsError, match="another sarvessel server"):
        JobStore(store.path)


def test_the_queue_bound_holds_under_concurrent_submissions(store: JobStore) -> None:
    results: list[str] = []

    def submit() -> None:
        try:
            store.create(_job(), max_queued=3, retry_after_s=7)
            results.append("ok")
        except QueueFull as exc:
            assert exc.headers == {"Retry-After": "7"}
            results.append("full")

    threads = [threading.Thread(target=submit) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 3 and results.count("full") == 7
    assert store.counts()[JobState.QUEUED] == 3


def test_claim_takes_the_oldest_and_recovery_requeues_running_jobs(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    a = store.create(_job(), max_queued=9, retry_after_s=1)
    b = store.create(_job(), max_queued=9, retry_after_s=1)
    c = store.create(_job(), max_queued=9, retry_after_s=1)
    claimed = store.claim_next()
    assert claimed.id == a.id and claimed.state is JobState.RUNNING and claimed.attempts == 1
    store.update_progress(a.id, tiles_done=6, tiles_total=9, mpx_per_s=1.5, eta_s=2.0,
                          watts=None)
    assert store.claim_next().id == b.id
    store.request_cancel(b.id)  # running: flagged, stops later
    store.close()  # the server dies with a and b running

    store = JobStore(tmp_path / "jobs.sqlite3")
    requeued = store.recover()
    assert [j.id for j in requeued] == [a.id]
    assert store.get(b.id).state is JobState.CANCELLED  # the cancel was honoured
    again = store.claim_next()
    assert again.id == a.id and again.attempts == 2 and again.tiles_resumed == 6
    assert store.claim_next().id == c.id
    store.close()


def test_cancel_rules(store: JobStore) -> None:
    job = store.create(_job(), max_queued=4, retry_after_s=1)
    assert store.request_cancel(job.id).state is JobState.CANCELLED
    with pytest.raises(Conflict, match="already cancelled"):
        store.request_cancel(job.id)
    with pytest.raises(NotFound):
        store.request_cancel(new_job_id())
    with pytest.raises(NotFound):
        store.get("../../etc/passwd")
    job = store.create(_job(), max_queued=4, retry_after_s=1)
    store.claim_next()
    store.finish(job.id, JobState.DONE, detections=3)
    with pytest.raises(Conflict, match="already done"):
        store.request_cancel(job.id)
    with pytest.raises(ValueError, match="final state"):
        store.finish(job.id, JobState.RUNNING)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SettingsError, match="not a usable job database"):
        JobStore(path)
    # the lock was released: a good database opens after
    path.unlink()
    JobStore(path).close()


def test_a_job_the_server_keeps_dying_under_fails_instead_of_looping(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    job = store.create(_job(), max_queued=4, retry_after_s=1)
    store.close()
    for attempt in (1, 2, 3):
        store = JobStore(path)
        assert [j.id for j in store.recover(max_attempts=3)] == ([job.id] if attempt > 1
                                                                else [])
        assert store.claim_next().attempts == attempt  # ... and the server dies again
        store.close()
    store = JobStore(path)
    assert store.recover(max_attempts=3) == []
    failed = store.get(job.id)
    assert failed.state is JobState.FAILED and "each of 3 attempts" in failed.error
    store.close()


def test_start_up_sweeps_upload_folders_no_waiting_job_needs(tmp_path: Path) -> None:
    from sarvessel.runtime.server.runner import DetectorPool, JobRunner
    from sarvessel.runtime.server.settings import ServerSettings

    settings = ServerSettings(work_dir=tmp_path / "work")
    store = JobStore(settings.db_path)
    try:
        queued = store.create(_job(uploaded=True), max_queued=4, retry_after_s=1)
        done = store.create(_job(uploaded=True), max_queued=4, retry_after_s=1)
        store.finish(done.id, JobState.DONE, detections=0)
        for name in (queued.id, done.id, new_job_id(), f".{new_job_id()}.tmp"):
            (settings.uploads_dir / name / "scene").mkdir(parents=True)
        runner = JobRunner(settings, store, DetectorPool())
        assert runner.sweep_uploads() == 3
        assert [p.name for p in settings.uploads_dir.iterdir()] == [queued.id]
    finally:
        store.close()
