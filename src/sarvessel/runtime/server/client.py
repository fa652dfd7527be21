"""A small client of the tile server, on the standard library alone (``http.client``), so
``sarvessel submit``/``results`` and an on-board producer need no web framework.

>>> ServerClient("http://127.0.0.1:8765").base_url
'http://127.0.0.1:8765'
"""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.runtime.io.outputs import atomic_open
from sarvessel.runtime.server.errors import ClientError
from sarvessel.runtime.server.inputs import BAND_FIELDS, SCENE_FIELD
from sarvessel.runtime.server.settings import DEFAULT_PORT

log = logging.getLogger(__name__)

#: Where the client looks when given no URL.
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
#: Job states after which a job changes no more.
FINAL_STATES = frozenset({"done", "failed", "cancelled"})
_CHUNK = 1 << 20


class ServerClient:
    """Talks to one server over one kept-alive connection (thread-safe: calls are serialised;
    use one client per thread for parallel requests).

    base_url: ``http://host:port``. token: the bearer token, if the server has one.
    timeout: seconds to wait for a reply. The default is 300 (an upload of a large scene).
    """

    def __init__(self, base_url: str = DEFAULT_URL, *, token: str | None = None,
                 timeout: float = 300.0) -> None:
        url = urllib.parse.urlsplit(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ClientError(f"server URL {base_url!r} must look like http://HOST:PORT")
        self.base_url = base_url.rstrip("/")
        self._url = url
        self.token = token
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    # -- scene jobs -------------------------------------------------------------------------------

    def submit(self, scene: str | Path, **options: Any) -> dict:
        """Queue a scene the server reads itself (a path under its data roots); returns the
        job. ``options``: :class:`~sarvessel.runtime.server.models.JobOptions` fields."""
        return self._json("POST", "/v1/jobs", {"scene": str(scene), "options": options})

    def upload(self, scene: Path, *, scene_id: str | None = None, **options: Any) -> dict:
        """Upload a scene's band files (an xView3 folder: ``VV_dB.tif``, ``VH_dB.tif`` and any
        auxiliary rasters; or one GeoTIFF) and queue it; returns the job."""
        scene = Path(scene)
        if scene.is_dir():
            files = {n: scene / f"{n}.tif" for n in BAND_FIELDS if (scene / f"{n}.tif").is_file()}
        elif scene.is_file():
            files = {SCENE_FIELD: scene}
        else:
            raise ClientError(f"{scene}: no such scene folder or file")
        fields = {"options": json.dumps(options, allow_nan=False),
                  "scene_id": scene_id or scene.stem}
        boundary = secrets.token_hex(16)
        return self._json_reply("POST", "/v1/jobs/upload",
                                _MultipartBody(boundary, fields, files),
                                {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{_quote(job_id)}")

    def jobs(self, *, state: str | None = None, limit: int = 100) -> list[dict]:
        q = urllib.parse.urlencode({k: v for k, v in (("state", state), ("limit", limit))
                                    if v is not None})
        return self._json("GET", f"/v1/jobs?{q}")["jobs"]

    def cancel(self, job_id: str) -> dict:
        return self._json("POST", f"/v1/jobs/{_quote(job_id)}/cancel")

    def wait(self, job_id: str, *, poll_s: float = 1.0, timeout_s: float | None = None,
             progress: Callable[[dict], None] | None = None) -> dict:
        """Poll until the job is done, failed or cancelled; returns its last state.
        ``progress`` is called with the job after each poll."""
        t_end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if progress:
                progress(job)
            if job["state"] in FINAL_STATES:
                return job
            if t_end is not None and time.monotonic() > t_end:
                raise ClientError(f"job {job_id} still {job['state']} after {timeout_s} s")
            time.sleep(poll_s)

    def result(self, job_id: str, kind: str = "csv") -> bytes:
        """A finished job's ``csv``, ``geojson``, ``png``, ``summary`` or ``power`` file."""
        status, headers, body = self._request(
            "GET", f"/v1/jobs/{_quote(job_id)}/results/{_quote(kind)}")
        _raise_for(status, headers, body)
        return body

    def download(self, job_id: str, out_dir: Path, kinds: tuple[str, ...] | None = None
                 ) -> dict[str, Path]:
        """Save results into ``out_dir`` under the server's file names; returns kind → path.
        ``kinds``: the default is every result the finished job has."""
        job = self.job(job_id)
        sid = job["scene_id"]
        names = {"csv": f"{sid}.csv", "geojson": f"{sid}.geojson",
                 "png": f"{sid}_quicklook.png", "summary": f"{sid}_summary.json",
                 "power": f"{sid}_power.png"}
        if kinds is None:
            kinds = tuple(k for k in names if k in job.get("results", {}))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = {}
        for kind in kinds:
            path = out_dir / names[kind]
            with atomic_open(path, binary=True) as fh:
                fh.write(self.result(job_id, kind))
            out[kind] = path
        return out

    # -- tiles and health ----------------------------------------------------------------------

    def detect_tiles(self, tiles: np.ndarray, *, backend: str | None = None) -> dict:
        """Detections of a batch ``[B, C, T, T]`` (or one tile ``[C, T, T]``) of uint8 tiles
        or float32 dB, in tile pixels: the reply of ``POST /v1/tiles``."""
        arr = np.asarray(tiles)
        if arr.dtype == np.uint8:
            dtype = "uint8"
        elif arr.dtype == np.float32:
            dtype, arr = "float32", arr.astype("<f4", copy=False)
        else:
            raise ClientError(f"tiles must be uint8 or float32, not {arr.dtype}")
        arr = np.ascontiguousarray(arr)
        q = {"shape": ",".join(map(str, arr.shape)), "dtype": dtype}
        if backend:
            q["backend"] = backend
        return self._json_reply("POST", f"/v1/tiles?{urllib.parse.urlencode(q)}",
                                memoryview(arr).cast("B"),
                                {"Content-Type": "application/octet-stream"})

    def health(self) -> dict:
        return self._json("GET", "/v1/health")

    def ready(self) -> dict:
        status, headers, body = self._request("GET", "/v1/ready")
        if status not in (200, 503):
            _raise_for(status, headers, body)
        return json.loads(body)

    def metrics(self) -> str:
        status, headers, body = self._request("GET", "/metrics")
        _raise_for(status, headers, body)
        return body.decode()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers ------------------------------------------------------------------------------

    def _json(self, method: str, path: str, payload: object = None) -> Any:
        body = None if payload is None else json.dumps(payload, allow_nan=False).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        return self._json_reply(method, path, body, headers)

    def _json_reply(self, method: str, path: str, body: Any,
                    headers: Mapping[str, str]) -> Any:
        status, rheaders, data = self._request(method, path, body, headers)
        _raise_for(status, rheaders, data)
        return json.loads(data)

    def _request(self, method: str, path: str, body: Any = None,
                 headers: Mapping[str, str] | None = None
                 ) -> tuple[int, dict[str, str], bytes]:
        hdrs = dict(headers or {})
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        if isinstance(body, _MultipartBody):
            hdrs["Content-Length"] = str(body.length)
            hdrs["Expect"] = "100-continue"  # a refusal (401, 413, 429) comes before the body
        with self._lock:
            for attempt in (0, 1):  # a kept-alive connection the server closed: reconnect once
                conn = self._connection()
                body_unsent = False
                try:
                    if isinstance(body, _MultipartBody):
                        conn.putrequest(method, path)
                        for k, v in hdrs.items():
                            conn.putheader(k, v)
                        conn.endheaders()
                        if _await_continue(conn):
                            body.write_to(conn)
                        else:  # refused first: the server still waits for that body
                            body_unsent = True
                    else:
                        conn.request(method, path, body=body, headers=hdrs)
                    resp = conn.getresponse()
                    data = resp.read()
                except (ConnectionError, http.client.HTTPException, OSError) as exc:
                    self._conn = None
                    conn.close()
                    if attempt == 0 and isinstance(exc, (http.client.RemoteDisconnected,
                                                         BrokenPipeError,
                                                         ConnectionResetError)):
                        continue
                    if isinstance(exc, ConnectionRefusedError):
                        raise ClientError(f"cannot reach {self.base_url}: connection refused "
                                          "(is `sarvessel serve` running there?)") from exc
                    raise ClientError(f"{self.base_url}: {exc}") from exc
                if body_unsent or resp.getheader("Connection", "").lower() == "close":
                    self._conn = None
                    conn.close()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = (http.client.HTTPSConnection if self._url.scheme == "https"
                   else http.client.HTTPConnection)
            self._conn = cls(self._url.hostname, self._url.port, timeout=self.timeout)
        return self._conn


class _MultipartBody:
    """A multipart/form-data body streamed from files (never read whole into memory)."""

    def __init__(self, boundary: str, fields: Mapping[str, str],
                 files: Mapping[str, Path]) -> None:
        self.parts: list[bytes | Path] = []
        b = boundary.encode()
        for name, value in fields.items():
            self.parts.append(b"--" + b + b"\r\nContent-Disposition: form-data; name=\""
                              + name.encode() + b"\"\r\n\r\n" + value.encode() + b"\r\n")
        for name, path in files.items():
            self.parts.append(b"--" + b + b"\r\nContent-Disposition: form-data; name=\""
                              + name.encode() + b"\"; filename=\"" + path.name.encode()
                              + b"\"\r\nContent-Type: image/tiff\r\n\r\n")
            self.parts.append(path)
            self.parts.append(b"\r\n")
        self.parts.append(b"--" + b + b"--\r\n")
        self.length = sum(p.stat().st_size if isinstance(p, Path) else len(p)
                          for p in self.parts)

    def write_to(self, conn: http.client.HTTPConnection) -> None:
        for part in self.parts:
            if isinstance(part, Path):
                with part.open("rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        conn.send(chunk)
            else:
                conn.send(part)


def _await_continue(conn: http.client.HTTPConnection, timeout: float = 5.0) -> bool:
    """After headers with ``Expect: 100-continue``: True to send the body (the server said
    100 Continue, or said nothing within ``timeout`` s, as RFC 9110 §10.1.1 allows), False if
    its final reply came first (then the body is not sent and the reply is read as usual).

    The reply is only peeked at, never consumed, except the interim 100 response itself.
    """
    sock = conn.sock
    if sock is None:
        return True
    t_end = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([sock], [], [], max(0.0, t_end - time.monotonic()))
        if not ready:
            return True
        head = sock.recv(4096, socket.MSG_PEEK)
        if not head.startswith(b"HTTP/1.1 100"[: len(head)]) or not head:
            return False  # a final reply (or a closed connection): getresponse() reads it
        end = head.find(b"\r\n\r\n")
        if end >= 0:
            sock.recv(end + 4)  # consume the interim response only
            return True
        time.sleep(0.01)  # the interim response arrives in pieces: wait for its end


def _quote(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def _raise_for(status: int, headers: Mapping[str, str], body: bytes) -> None:
    if status < 400:
        return
    try:
        detail = json.loads(body).get("detail", "")
    except (ValueError, AttributeError):
        detail = body[:200].decode(errors="replace")
    extra = {k: headers[k] for k in ("retry-after",) if k in headers}
    hint = f" (retry after {extra['retry-after']} s)" if extra else ""
    raise ClientError(f"server said {status}: {detail}{hint}", status=status, headers=extra)
