"""scripts/bench_archive.py, which produces the scaling figures of docs/archive.md, runs from a
checkout and refuses bad shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("distributed")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_archive.py"), *args],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_bench_archive_reports_scenes_per_hour(tmp_path):
    r = _run("--scenes", "2", "--size", "512x512", "--shapes", "1x1", "--repeat", "1", "--data",
             str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--json", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    (run,) = json.loads((tmp_path / "b.json").read_text())["runs"]
    assert run["workers"] == run["threads"] == 1 and run["scenes"] == 2
    assert run["scenes_per_hour"] > 0 and run["speedup_vs_first"] == 1.0


def test_bench_archive_refuses_bad_shapes():
    r = _run("--shapes", "2x0")
    assert r.returncode == 2 and "--shapes '2x0'" in r.stderr
