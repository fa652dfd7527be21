"""One archive task outside Dask: the scene lock between live processes and its takeover
after a kill -9, and the completion record that lets a rerun skip a finished scene."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sarvessel.archive.errors import ArchiveError
from sarvessel.archive.task import (
    ArchiveJob,
    DetectorSpec,
    SceneLock,
    SceneStatus,
    process_scene,
    record_path,
)
from sarvessel.runtime.backends import BackendKind
from sarvessel.synth.generate import synthesize_scene

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b'{"host": "h", "pid": %d, "since": "now"}' % os.getpid())
print("held", flush=True)
time.sleep(60)
"""


def test_a_live_holder_blocks_the_lock_and_a_killed_one_frees_it_at_once(tmp_path):
    path = tmp_path / "S.archive.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(ArchiveError, match=f"another live run .*pid {holder.pid}.*0.6 s"), \
                SceneLock(path, wait_s=0.6, label="S"):
            pass
        assert time.monotonic() - t0 >= 0.5
        os.kill(holder.pid, signal.SIGKILL)  # a worker dies: the kernel drops its lock
        holder.wait(timeout=10)
        with SceneLock(path, wait_s=5) as lock:
            assert json.loads(path.read_text())["pid"] == os.getpid()
            with pytest.raises(ArchiveError), SceneLock(path, wait_s=0):  # same process too
                pass
            assert lock.path == path
        assert not path.exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_finished_scene_is_skipped_until_its_outputs_change(tmp_path):
    scene = synthesize_scene(tmp_path / "data", height=600, width=700, seed=3).scene_dir
    job = ArchiveJob(out_dir=str(tmp_path / "out"),
                     detector=DetectorSpec(BackendKind.CFAR, threads=1))
    first = process_scene(str(scene), job)
    assert first.status is SceneStatus.DONE and first.worker is None
    assert json.loads(record_path(tmp_path / "out", scene.name).read_text())["summary"] \
        == first.summary
    again = process_scene(str(scene), job)
    assert again.status is SceneStatus.SKIPPED and again.detections == first.detections
    (tmp_path / "out" / f"{scene.name}_quicklook.png").unlink()  # an output lost: redo
    assert process_scene(str(scene), job).status is SceneStatus.DONE
    other = ArchiveJob(out_dir=job.out_dir, detector=DetectorSpec(BackendKind.NOOP))
    assert process_scene(str(scene), other).status is SceneStatus.DONE  # another job: redo
    assert not list(Path(job.out_dir).glob("*.lock"))
