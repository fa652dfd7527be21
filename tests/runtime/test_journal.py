"""Job ownership: the scene lock and the journal (issue #34, 1), in one process.

The two-process acceptance test (real ``sarvessel detect`` processes killed by PID) is in
test_detect.py.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sarvessel.runtime.detections import Detections
from sarvessel.runtime.journal import JobLock, JobLockedError, Journal, job_id, lock_path


def _dets(lengths: list[float]) -> Detections:
    n = len(lengths)
    r = np.arange(n, dtype=np.float32) * 10 + 5
    return Detections(r, r, np.full(n, 0.5), np.ones(n), np.stack([r - 2, r - 2, r + 2, r + 2], 1),
                      lengths)


def test_a_second_run_is_refused_naming_the_holder_and_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "S.journal.lock"
    with JobLock(path, job="aaaa"):
        # flock locks belong to an open file: a second lock in the same process (a server's
        # second job thread) is refused as a second process would be
        with pytest.raises(JobLockedError, match=rf"{path}: another run holds this scene's "
                           rf"outputs \(pid {os.getpid()}, job aaaa, since .*\); wait for it"):
            JobLock(path, job="bbbb").acquire()
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()  # the holder removes it on release
    with JobLock(path, job="bbbb"):  # and then it is free
        pass


def test_a_waiting_run_takes_over_when_the_holder_ends(tmp_path: Path) -> None:
    path = tmp_path / "S.journal.lock"
    first = JobLock(path, job="aaaa").acquire()
    got: list[float] = []

    def wait() -> None:
        with JobLock(path, job="bbbb", wait_s=math.inf, poll_s=0.01):
            got.append(time.monotonic())

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)
    assert not got  # still waiting
    released = time.monotonic()
    first.release()
    t.join(5)
    assert got and got[0] >= released
    # a bounded wait gives up with the same message
    with pytest.raises(JobLockedError), JobLock(path, job="cccc"):
        JobLock(path, wait_s=0.1, poll_s=0.02).acquire()


def test_another_jobs_journal_is_never_adopted_nor_touched_before_a_row_is_done(
        tmp_path: Path) -> None:
    """Once, load() rewrote any journal's header for the job at hand, so another job's rows
    (appended later by its still-running process) ended up under it (issue #34, 1)."""
    path = tmp_path / "S.journal.jsonl"
    a = Journal(path, {"job": "a", "conf": 0.1})
    a.load()
    a.append(0, _dets([30.0]))
    a.close()
    text = path.read_text()
    b = Journal(path, {"job": "a", "conf": 0.5})
    assert b.load() == {}  # not adopted
    assert path.read_text() == text  # and not rewritten by merely looking
    b.append(3, _dets([]))
    b.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"job": b.job, "journal": b.key} and len(lines) == 2
    assert job_id(b.key) == b.job != a.job
    assert lock_path(path) == tmp_path / "S.journal.lock"


def test_unknown_lengths_are_null_in_the_journal_and_nan_again_when_resumed(
        tmp_path: Path) -> None:
    """The journal is JSON too: no NaN token in it (issue #34, 6)."""
    path = tmp_path / "S.journal.jsonl"
    j = Journal(path, {"k": 1})
    j.load()
    j.append(0, _dets([12.5, math.nan]))
    j.close()
    assert "NaN" not in path.read_text()
    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in the journal"))
    done = Journal(path, {"k": 1}).load()
    assert done[0].lengths_px[0] == 12.5 and np.isnan(done[0].lengths_px[1])
