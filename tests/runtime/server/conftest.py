"""Shared helpers of the server tests: generated scenes, their ``sarvessel detect`` outputs, and
a real ``sarvessel serve`` (uvicorn) in a subprocess on a free loopback port.

The server process gets SIGTERM if the test process dies (``PR_SET_PDEATHSIG``), and every
fixture stops what it started, so no server outlives the tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarvessel.runtime.server.client import ServerClient

#: True where the ``serve`` extra is installed; tests that start a server are marked
#: :data:`needs_web` (the client, the store and the input checks need none of it).
WEB = all(importlib.util.find_spec(m) is not None
          for m in ("fastapi", "uvicorn", "prometheus_client", "multipart"))
needs_web = pytest.mark.skipif(not WEB, reason="the serve extra (fastapi, uvicorn, "
                               "python-multipart, prometheus-client) is not installed")

#: The scenes the tests use: (id, height, width, seed). The small one runs in about a second;
#: the tall one has four tile rows, so a job can be stopped between them.
SMALL = ("synth00011024x1024v", 1024, 1024, 1)
TALL = ("synth00022048x1024v", 2048, 1024, 2)
TOKEN = "test-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """SIGTERM this process when the test process dies (Linux), so a crashed test run leaves
    no server behind."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """``python -m sarvessel serve`` on a free loopback port, started and stopped by a test."""

    def __init__(self, work_dir: Path, *, data_roots: list[Path] = (), args: list[str] = (),
                 env: dict[str, str] | None = None, token: str | None = None) -> None:
        self.work_dir = work_dir
        self.data_roots = list(data_roots)
        self.args = list(args)
        self.env = dict(env or {})
        self.token = token
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log = work_dir.parent / f"{work_dir.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kw) -> ServerClient:
        kw.setdefault("token", self.token)
        kw.setdefault("timeout", 60.0)
        return ServerClient(self.url, **kw)

    def start(self, *, env: dict[str, str] | None = None, timeout: float = 60.0
              ) -> ServerProcess:
        self.port = free_port()
        cmd = [sys.executable, "-m", "sarvessel", "serve", "--port", str(self.port),
               "--work-dir", str(self.work_dir), "--no-power-sensor", "--threads", "2",
               *[a for r in self.data_roots for a in ("--data-root", str(r))], *self.args]
        full_env = {**os.environ, **self.env, **(env or {})}
        if self.token:
            tf = self.work_dir.parent / f"{self.work_dir.name}.token"
            tf.write_text(self.token + "\n")
            cmd += ["--token-file", str(tf)]
        fh = self.log.open("a")
        self.proc = subprocess.Popen(cmd, env=full_env, stdout=fh, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        fh.close()
        t_end = time.monotonic() + timeout
        with self.client(timeout=2.0) as c:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n"
                                       f"{self.log.read_text()[-3000:]}")
                try:
                    if c.ready()["ready"]:
                        return self
                except Exception:  # not listening yet
                    pass
                if time.monotonic() > t_end:
                    self.kill9()
                    raise RuntimeError(f"server not ready in {timeout} s:\n"
                                       f"{self.log.read_text()[-3000:]}")
                time.sleep(0.1)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (graceful: the current tile row finishes), then SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="session")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding the SMALL and TALL generated scenes."""
    from sarvessel.synth.generate import synthesize_scene

    root = tmp_path_factory.mktemp("scenes")
    for sid, h, w, seed in (SMALL, TALL):
        synthesize_scene(root, scene_id=sid, height=h, width=w, seed=seed)
    return root


@pytest.fixture(scope="session")
def reference(scenes: Path, tmp_path_factory: pytest.TempPathFactory):
    """``reference(scene_id, backend, *args)``: the output folder of ``sarvessel detect`` on
    that scene with those extra arguments (run once each, in this process, through the real
    CLI entry)."""
    from sarvessel.cli import main

    done: dict[tuple[str, ...], Path] = {}

    def get(scene_id: str, backend: str, *args: str) -> Path:
        key = (scene_id, backend, *args)
        if key not in done:
            out = tmp_path_factory.mktemp(f"ref-{backend}")
            rc = main(["-q", "detect", str(scenes / scene_id), "--backend", backend, "--out",
                       str(out), "--threads", "2", *args])
            assert rc == 0
            done[key] = out
        return done[key]

    return get


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """``start_server(name, **ServerProcess kwargs)``: a started server, stopped at teardown."""
    started: list[ServerProcess] = []

    def start(name: str = "srv", **kw) -> ServerProcess:
        srv = ServerProcess(tmp_path / name, **kw)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            srv.stop(timeout=30)


@pytest.fixture(scope="module")
def server(scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by a module's tests: the scenes as data root, 32 MiB uploads."""
    srv = ServerProcess(tmp_path_factory.mktemp("server") / "work", data_roots=[scenes],
                        args=["--max-upload-mb", "32", "--max-queue", "16"])
    srv.start()
    yield srv
    srv.stop(timeout=30)


def wait_for(cond, *, timeout: float = 60.0, poll: float = 0.05, what: str = "condition"):
    """Poll ``cond()`` until it returns a truthy value; return it."""
    t_end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
