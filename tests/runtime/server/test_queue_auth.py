"""The bounded queue (429 with Retry-After), cancelling, and bearer-token auth, against a real
uvicorn; and the refusal to bind beyond loopback without a token."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sarvessel.runtime.detect import journal_path
from sarvessel.runtime.server.client import ServerClient
from sarvessel.runtime.server.errors import ClientError, SettingsError
from sarvessel.runtime.server.settings import TOKEN_ENV, ServerSettings, load_settings
from tests.runtime.server.conftest import TALL, TOKEN, needs_web, wait_for

TALL_ID = TALL[0]


@needs_web
def test_full_queue_says_429_with_retry_after_and_cancel_frees_it(start_server,
                                                                  scenes: Path) -> None:
    """One worker, a queue of one: a running job, a queued job, then 429. Cancelling the
    queued job frees the slot at once; cancelling the running one stops it after its current
    tile row and removes its journal."""
    srv = start_server(data_roots=[scenes], args=["--max-queue", "1"],
                       env={"SARVESSEL_SERVER_TEST_ROW_DELAY_S": "0.5"})
    with srv.client() as c:
        running = c.submit(TALL_ID, backend="cfar")["id"]
        wait_for(lambda: c.job(running)["progress"]["tiles_done"] > 0, what="first tile row")
        queued = c.submit(TALL_ID, backend="cfar")["id"]
        with pytest.raises(ClientError) as err:
            c.submit(TALL_ID, backend="cfar")
        assert err.value.status == 429 and "queue is full" in str(err.value)
        assert int(err.value.headers["retry-after"]) >= 1
        with pytest.raises(ClientError) as err:  # 16 MB of bands, refused before they are sent
            c.upload(scenes / TALL_ID, backend="cfar")
        assert err.value.status == 429
        assert c.ready()["queue_depth"] == 1

        assert c.cancel(queued)["state"] == "cancelled"
        third = c.submit(TALL_ID, backend="cfar")["id"]  # the slot is free again
        assert c.cancel(third)["state"] == "cancelled"

        c.cancel(running)
        job = c.wait(running, poll_s=0.05, timeout_s=60)
        assert job["state"] == "cancelled"
        assert job["progress"]["tiles_done"] < job["progress"]["tiles_total"]
        assert not journal_path(srv.work_dir / "jobs" / running, TALL_ID).exists()
        with pytest.raises(ClientError) as err:
            c.result(running, "csv")
        assert err.value.status == 409
        assert 'sarvessel_jobs_finished_total{state="cancelled"} 3.0' in c.metrics()


@needs_web
def test_bearer_token_is_required_and_checked(start_server, scenes: Path) -> None:
    srv = start_server(data_roots=[scenes], token=TOKEN)
    anon = ServerClient(srv.url, timeout=10)
    for call in (anon.jobs, anon.metrics, lambda: anon.submit(TALL_ID),
                 lambda: anon.upload(scenes / TALL_ID)):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.status == 401 and "needs a bearer token" in str(err.value)
    wrong = ServerClient(srv.url, token=TOKEN[:-1] + "X", timeout=10)
    with pytest.raises(ClientError) as err:
        wrong.jobs()
    assert err.value.status == 401 and "wrong bearer token" in str(err.value)
    req = urllib.request.Request(f"{srv.url}/v1/jobs")
    with pytest.raises(urllib.error.HTTPError) as http_err:
        urllib.request.urlopen(req, timeout=10)
    assert http_err.value.headers["WWW-Authenticate"] == "Bearer"
    # probes stay open; the right token opens the rest
    assert anon.health()["status"] == "ok" and anon.ready()["ready"]
    with srv.client() as c:
        assert c.jobs() == []
        assert "sarvessel_queue_depth" in c.metrics()


def test_binding_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="without a bearer token"):
        ServerSettings(host="0.0.0.0", work_dir=tmp_path)
    with pytest.raises(SettingsError, match="at least 16"):
        ServerSettings(host="0.0.0.0", work_dir=tmp_path, token="short")
    s = ServerSettings(host="0.0.0.0", work_dir=tmp_path, token=TOKEN)
    assert s.auth_required and TOKEN not in repr(s)
    tf = tmp_path / "token"
    tf.write_text(f"{TOKEN}\n")
    assert load_settings(token_file=tf, env={}, host="::", work_dir=tmp_path).token == TOKEN
    assert load_settings(env={"SARVESSEL_SERVER_TOKEN": TOKEN}, work_dir=tmp_path).token \
        == TOKEN
    # the command refuses before opening a socket, in one line
    proc = subprocess.run([sys.executable, "-m", "sarvessel", "serve", "--host", "0.0.0.0",
                           "--work-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env={k: v for k, v in os.environ.items()
                                            if k != TOKEN_ENV})
    assert proc.returncode == 2 and "refusing to serve on 0.0.0.0" in proc.stderr
    assert "Traceback" not in proc.stderr
