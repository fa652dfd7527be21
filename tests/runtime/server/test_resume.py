"""Jobs survive the server: after ``kill -9`` mid-job, or a graceful stop, a restarted server
resumes the job from the scene journal, and the final CSV equals an uninterrupted run's (no
detection lost, none duplicated). Finished jobs keep their results across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sarvessel.runtime.detect import journal_path
from sarvessel.runtime.server.jobs import JobState, JobStore
from tests.runtime.server.conftest import TALL, needs_web, wait_for

pytestmark = needs_web
TALL_ID = TALL[0]
#: Slows each tile row so the server can be stopped between rows (the test hook).
SLOW = {"SARVESSEL_SERVER_TEST_ROW_DELAY_S": "0.4"}


def _start_and_interrupt(start_server, scenes: Path, backend: str):
    srv = start_server(data_roots=[scenes], env=SLOW)
    with srv.client() as c:
        job_id = c.submit(TALL_ID, backend=backend)["id"]
        job = wait_for(lambda: (j := c.job(job_id))["progress"]["tiles_done"] >= 3 and j,
                       what="one finished tile row")
    assert job["state"] == "running"
    assert job["progress"]["tiles_done"] < job["progress"]["tiles_total"] == 15
    return srv, job_id


def _journal_rows(path: Path) -> int:
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]).keys() == {"job", "journal"}
    return len(lines) - 1


@pytest.mark.parametrize("backend", ["cfar"])
def test_kill_9_mid_job_then_restart_resumes_to_the_same_csv(start_server, scenes: Path,
                                                             reference, backend: str) -> None:
    ref = (reference(TALL_ID, backend) / f"{TALL_ID}.csv").read_bytes()
    srv, job_id = _start_and_interrupt(start_server, scenes, backend)
    srv.kill9()
    journal = journal_path(srv.work_dir / "jobs" / job_id, TALL_ID)
    rows_done = _journal_rows(journal)
    assert 1 <= rows_done < 5

    srv.env = {}  # restart at full speed
    srv.start()
    with srv.client() as c:
        job = c.wait(job_id, poll_s=0.05, timeout_s=120)
        assert job["state"] == "done", job
        assert job["attempts"] == 2 and "resumes from its journal" in job["note"]
        assert c.result(job_id, "csv") == ref
        summary = json.loads(c.result(job_id, "summary"))
    assert summary["tiles_resumed"] >= 3 * rows_done - 3  # at most the killed row runs again
    assert summary["tiles_resumed"] + summary["tiles_run"] == 15
    assert not journal.exists()

    srv.stop()  # finished jobs keep their results across a restart
    srv.start()
    with srv.client() as c:
        assert c.job(job_id)["state"] == "done"
        assert c.result(job_id, "csv") == ref


def test_graceful_stop_finishes_the_row_and_leaves_the_job_resumable(start_server,
                                                                     scenes: Path,
                                                                     reference) -> None:
    ref = (reference(TALL_ID, "cfar") / f"{TALL_ID}.csv").read_bytes()
    srv, job_id = _start_and_interrupt(start_server, scenes, "cfar")
    # SIGTERM: uvicorn shuts down cleanly, then re-raises the signal (-15, which systemd
    # counts as a clean stop)
    assert srv.stop(timeout=60) in (0, -15)
    assert "Application shutdown complete" in srv.log.read_text()

    store = JobStore(srv.work_dir / "jobs.sqlite3")  # the server's lock is released
    try:
        job = store.get(job_id)
    finally:
        store.close()
    assert job.state is JobState.QUEUED and "stopped with the server" in job.note
    rows = _journal_rows(journal_path(Path(job.out_dir), TALL_ID))
    assert job.tiles_done == 3 * rows  # the store and the journal agree on finished rows

    srv.env = {}
    srv.start()
    with srv.client() as c:
        done = c.wait(job_id, poll_s=0.05, timeout_s=120)
        assert done["state"] == "done" and done["progress"]["tiles_resumed"] == 3 * rows
        assert c.result(job_id, "csv") == ref
