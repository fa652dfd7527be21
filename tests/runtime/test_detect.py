"""detect_scene as jobs run it: job ownership across real processes, outputs as one set.

Issue #34: two jobs on one folder mixed their rows (1), a kill while writing left a mixed set
(5), a fully resumed run wrote NaN into its summary (6).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sarvessel.runtime.detect import detect_scene, journal_path, read_scene_outputs
from sarvessel.runtime.detector import make_detector
from sarvessel.runtime.io import output_set
from sarvessel.runtime.io.output_set import OutputSetError
from sarvessel.synth.generate import synthesize_scene


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated, georeferenced 1024² scene with vessels (CFAR finds some)."""
    root = tmp_path_factory.mktemp("scenes")
    return synthesize_scene(root, height=1024, width=1024, seed=905, n_vessels=20).scene_dir


@pytest.fixture(scope="module")
def tall_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3072 x 1024 px: 7 tile rows for the shipped model, time to stop a run between two."""
    root = tmp_path_factory.mktemp("tall")
    return synthesize_scene(root, height=3072, width=1024, seed=901, n_vessels=40).scene_dir


def _csv(out: Path, scene: Path) -> bytes:
    return (out / f"{scene.name}.csv").read_bytes()


def test_a_kill_while_writing_leaves_the_previous_set_whole(small_scene, tmp_path,
                                                             monkeypatch):
    """The new CSV and GeoJSON once sat beside the previous run's PNG and summary."""
    out = tmp_path / "o"
    detect_scene(small_scene, make_detector("cfar"), out_dir=out)
    before = read_scene_outputs(out, small_scene.name)
    csv_before = _csv(out, small_scene)
    assert before.summary["detections"] > 0

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill mid-write: nothing after it runs

    monkeypatch.setattr("sarvessel.runtime.detect.write_quicklook_png", killed)
    with pytest.raises(KeyboardInterrupt):
        detect_scene(small_scene, make_detector("noop"), out_dir=out)
    after = read_scene_outputs(out, small_scene.name)  # still the previous set, whole
    assert after.run_id == before.run_id and _csv(out, small_scene) == csv_before
    assert journal_path(out, small_scene.name).exists()  # the killed run can resume
    assert not list(out.glob(".*staging"))  # no lock is held: a rerun clears it anyway


def test_a_kill_between_the_renames_reads_as_incomplete_until_the_rerun(small_scene, tmp_path,
                                                                         monkeypatch):
    out = tmp_path / "o"
    detect_scene(small_scene, make_detector("cfar"), out_dir=out)
    real_replace = os.replace
    calls: list[str] = []

    def replace_then_die(src, dst):  # the first move of the commit, then a kill
        if ".staging" in str(src) and Path(dst).parent == out:
            if calls:
                raise KeyboardInterrupt
            calls.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(output_set.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        detect_scene(small_scene, make_detector("noop"), out_dir=out)
    monkeypatch.undo()
    assert calls == [str(out / f"{small_scene.name}.csv")]  # the new CSV is in place ...
    with pytest.raises(OutputSetError, match="incomplete outputs: .*without "
                                             f"{small_scene.name}_summary.json"):
        read_scene_outputs(out, small_scene.name)  # ... and the set says it is incomplete
    result, paths = detect_scene(small_scene, make_detector("noop"), out_dir=out)
    done = read_scene_outputs(out, small_scene.name)
    assert done.summary["detections"] == 0 and result.tiles_resumed == result.tiles_total
    assert set(done.paths) == {"csv", "geojson", "png", "json"} == set(paths)
    assert done.summary["outputs"]["geojson"]["file"] == paths["geojson"].name
    # a file another run replaced: a mixed set
    paths["csv"].write_text(paths["csv"].read_text() + "x,1,1,True,False,,0.5\n")
    with pytest.raises(OutputSetError, match="not the file run .* wrote"):
        read_scene_outputs(out, small_scene.name)


def test_a_fully_resumed_run_writes_null_not_nan_throughput(small_scene, tmp_path,
                                                            monkeypatch):
    """``"mpx_per_s": NaN`` once, which strict JSON parsers reject."""
    out = tmp_path / "o"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("sarvessel.runtime.detect.write_submission_csv", killed)
    with pytest.raises(KeyboardInterrupt):  # every row journaled, then killed
        detect_scene(small_scene, make_detector("cfar"), out_dir=out)
    monkeypatch.undo()
    result, paths = detect_scene(small_scene, make_detector("cfar"), out_dir=out)
    assert result.tiles_resumed == result.tiles_total and result.mpx_per_s is None
    text = paths["json"].read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the summary"))
    assert summary["mpx_per_s"] is None


def _spawn(scene: Path, out: Path, conf: float, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sarvessel", "detect", str(scene), "--out", str(out),
         "--conf", str(conf), "--threads", "1", *extra],
        stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _stop_after_a_row(proc: subprocess.Popen, journal: Path) -> bytes:
    """SIGSTOP ``proc`` once its journal holds a finished row; return the journal."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.is_file() and journal.read_text().count("\n") >= 2:
            os.kill(proc.pid, signal.SIGSTOP)
            assert proc.poll() is None and journal.is_file(), "the run ended before a stop"
            return journal.read_bytes()
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be stopped (exit {proc.returncode})")
        time.sleep(0.005)
    pytest.fail("no journal row within 120 s")


def _wait_for(path: Path, text: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while text not in path.read_text():
        assert proc.poll() is None, path.read_text()
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.02)


@pytest.mark.slow
def test_two_real_jobs_on_one_folder_never_mix_rows(tall_scene, tmp_path):
    """Issue #34, 1, acceptance: two ``detect`` processes on one output folder with different
    thresholds; one is killed (-9, by PID) mid-run; the reruns' CSVs equal clean runs'.
    Once, the rerun reused the other job's rows (89 detections instead of 93, no warning)."""
    clean_a, clean_b = tmp_path / "clean_a", tmp_path / "clean_b"
    detect_scene(tall_scene, make_detector("auto", conf_threshold=0.1, threads=1),
                 out_dir=clean_a)
    detect_scene(tall_scene, make_detector("auto", conf_threshold=0.5, threads=1),
                 out_dir=clean_b)
    assert _csv(clean_a, tall_scene) != _csv(clean_b, tall_scene)  # the jobs differ
    out = tmp_path / "shared"
    journal = journal_path(out, tall_scene.name)
    lock = journal.with_suffix(".lock")

    # job A runs; job B on the same folder is refused at once, naming A, and touches nothing
    a = _spawn(tall_scene, out, 0.1, tmp_path / "a.log")
    try:
        rows_a = _stop_after_a_row(a, journal)
        b = subprocess.run([sys.executable, "-m", "sarvessel", "detect", str(tall_scene),
                            "--out", str(out), "--conf", "0.5", "-q"],
                           capture_output=True, text=True, timeout=300)
        assert b.returncode == 2 and "Traceback" not in b.stderr, b.stderr
        assert b.stderr.startswith(f"sarvessel detect: error: {lock}: another run holds this "
                                   f"scene's outputs (pid {a.pid}, job "), b.stderr
        assert b.stderr.count("\n") == 1, b.stderr  # one line
        assert journal.read_bytes() == rows_a  # A's journal, untouched
    finally:
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
    # A, killed mid-run, resumes its own rows and ends as a clean run
    rerun = subprocess.run([sys.executable, "-m", "sarvessel", "detect", str(tall_scene),
                            "--out", str(out), "--conf", "0.1"],
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert read_scene_outputs(out, tall_scene.name).summary["tiles_resumed"] > 0
    assert _csv(out, tall_scene) == _csv(clean_a, tall_scene)

    # A runs again; B with --wait waits for it; A is killed; B never adopts A's rows
    a = _spawn(tall_scene, out, 0.1, tmp_path / "a2.log")
    c_log = tmp_path / "c.log"
    c = None
    try:
        _stop_after_a_row(a, journal)
        c = _spawn(tall_scene, out, 0.5, c_log, "--wait")
        _wait_for(c_log, f"waiting for the run that holds it (pid {a.pid}", c)
        time.sleep(0.3)
        assert c.poll() is None
    finally:
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
    assert c is not None and c.wait(timeout=300) == 0, c_log.read_text()
    assert "belongs to another job" in c_log.read_text()
    done = read_scene_outputs(out, tall_scene.name)
    assert done.summary["tiles_resumed"] == 0  # A's rows were not adopted
    assert _csv(out, tall_scene) == _csv(clean_b, tall_scene)
    assert not journal.exists() and not lock.exists()
