"""Watts where measured: with a power sensor the job status and ``/metrics`` carry the draw; a
sensor that disappears stops the readings, not the server. A real uvicorn, run in a thread of
this process so the test can hand the app a scripted sensor (the hardware boundary)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarvessel.runtime.power import Activity, ScriptedSensor, SystemClock
from sarvessel.runtime.server.runner import PowerProbe
from sarvessel.runtime.server.settings import ServerSettings
from tests.runtime.server.conftest import SMALL, free_port, needs_web, wait_for

SID = SMALL[0]


@pytest.fixture
def powered(scenes: Path, tmp_path: Path) -> Iterator[str]:
    import uvicorn

    from sarvessel.runtime.server.app import create_app

    sensor = ScriptedSensor(3.5, 2.0, activity=Activity(SystemClock()))
    settings = ServerSettings(port=free_port(), work_dir=tmp_path / "work",
                              data_roots=(scenes,), threads=2)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, sensor=sensor),
                                           host="127.0.0.1", port=settings.port,
                                           log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn start")
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(60)


@needs_web
def test_jobs_run_under_the_power_governor_and_report_measured_watts(powered: str) -> None:
    """Every job runs through a governor on the server's sensor (as ``detect`` does): its
    summary carries the energy report, its status the draw; a budget below the idle draw
    fails the job with the governor's reason."""
    from sarvessel.runtime.server.client import ServerClient

    with ServerClient(powered, timeout=60) as c:
        job = c.wait(c.submit(SID, backend="cfar", power_budget_w=6.0,
                              power_window_s=2.0)["id"], poll_s=0.05, timeout_s=120)
        assert job["state"] == "done" and job["watts"] == pytest.approx(3.5)
        power = json.loads(c.result(job["id"], "summary"))["power"]
        assert power["budget_w"] == 6.0 and power["window_s"] == 2.0
        assert power["idle_w"] == pytest.approx(3.5) and power["within_budget"] is not False
        assert power["sensor_kind"] == "scripted"
        assert "power" in job["results"]
        assert c.result(job["id"], "power")[:8] == b"\x89PNG\r\n\x1a\n"  # the trace
        assert "sarvessel_power_watts 3.5" in c.metrics()
        plain = c.wait(c.submit(SID, backend="cfar")["id"], poll_s=0.05, timeout_s=120)
        assert json.loads(c.result(plain["id"], "summary"))["power"]["budget_w"] is None
        low = c.wait(c.submit(SID, backend="cfar", power_budget_w=2.0)["id"], poll_s=0.05,
                     timeout_s=120)
        assert low["state"] == "failed" and "below the measured idle draw" in low["error"]


def test_a_probe_without_a_sensor_or_with_a_vanished_one_reads_none() -> None:
    from sarvessel.runtime.power import NullSensor

    assert PowerProbe(None).watts() is None
    assert not PowerProbe(NullSensor()).available
    clock = SystemClock()
    gone = ScriptedSensor(1.0, 1.0, activity=Activity(clock), gone_at=clock.now() - 1)
    probe = PowerProbe(gone)
    assert probe.watts() is None and not probe.available  # SensorGone: reading stops
