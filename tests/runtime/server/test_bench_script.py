"""``scripts/bench_tile_server.py`` (the throughput figure's command) runs and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.server.conftest import needs_web

ROOT = Path(__file__).resolve().parents[3]


@needs_web
@pytest.mark.slow
def test_bench_tile_server_reports_both_rates(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_tile_server.py"),
                           "--batch", "2", "--batches", "2", "--noop-requests", "10",
                           "--threads", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    f = json.loads(out.read_text())
    assert f["in_process_tiles_per_s"] > 0 and f["http_tiles_per_s"] > 0
    assert 0 < f["http_share_of_in_process"] < 2
    assert f["noop_requests_per_s_1_tile"] > 0
    assert "% of in-process" in proc.stdout


def test_bench_tile_server_rejects_bad_arguments() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_tile_server.py"),
                           "--batch", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "must be >= 1" in proc.stderr
