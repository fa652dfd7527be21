"""``detect-many`` sizing and refusals that need no cluster."""

from __future__ import annotations

import pytest

from sarvessel.archive.cluster import plan_local
from sarvessel.archive.errors import ArchiveError
from sarvessel.cli import main


def test_detect_many_is_listed(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "detect-many" in capsys.readouterr().out


@pytest.mark.parametrize(("cores", "mem_gib", "workers", "threads", "want"), [
    (2, 16, None, None, (2, 1)),
    (16, 64, None, None, (16, 1)),
    (16, 6, None, None, (3, 5)),  # memory for 3 workers: the threads take the cores
    (16, 64, 4, None, (4, 4)),
    (16, 64, None, 8, (2, 8)),
    (1, 0.5, None, None, (1, 1)),
])
def test_local_cluster_fills_the_cores(cores, mem_gib, workers, threads, want):
    p = plan_local(cores=cores, memory_bytes=int(mem_gib * 2**30), workers=workers,
                   threads=threads)
    assert (p.workers, p.threads) == want


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--workers sizes a LocalCluster"),
    (["--lock-wait", "-1"], "--lock-wait must be >= 0"),
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--power-budget", "5"], "--power-budget paces one scene on one board"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    pytest.importorskip("distributed")
    assert main(["detect-many", str(tmp_path), "--backend", "cfar", *args]) == 2
    assert message in capsys.readouterr().err


def test_plan_refuses_no_cores():
    with pytest.raises(ArchiveError):
        plan_local(cores=0, memory_bytes=2**30)
