"""Every malformed request gets its 4xx with a one-line message, never a 500 or a traceback,
against a real uvicorn (requests sent byte for byte with ``http.client``)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.server.conftest import SMALL, ServerProcess, needs_web, wait_for

pytestmark = needs_web
SID = SMALL[0]
JSON = {"Content-Type": "application/json"}
OCTET = {"Content-Type": "application/octet-stream"}
BOUNDARY = "sarvesselTestBoundary"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = field(repr=False)

    @property
    def detail(self) -> str:
        return json.loads(self.body)["detail"]


def send(server: ServerProcess, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, path)
        for k, v in {**(headers or {}), "Content-Length": str(len(body))}.items():
            conn.putheader(k, v)
        conn.endheaders()
        conn.send(body)
        r = conn.getresponse()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    ctype = "Content-Type: image/tiff\r\n" if filename else ""
    return (f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n{ctype}\r\n").encode() + data \
        + b"\r\n"


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture(scope="module")
def bands(scenes: Path) -> dict[str, bytes]:
    return {b: (scenes / SID / f"{b}.tif").read_bytes() for b in ("VV_dB", "VH_dB")}


@pytest.fixture(scope="module")
def failed_job(server: ServerProcess, scenes: Path) -> str:
    """A job that fails while running: a scene that opens but holds only nodata."""
    import tifffile

    folder = scenes / "allnodata"
    folder.mkdir(exist_ok=True)
    for b in ("VV_dB", "VH_dB"):
        tifffile.imwrite(folder / f"{b}.tif", np.full((96, 96), -32768, np.float32))
    with server.client() as c:
        job = c.submit("allnodata", backend="cfar")
        job = c.wait(job["id"], poll_s=0.05, timeout_s=60)
    assert job["state"] == "failed" and "no valid pixels" in job["error"]
    return job["id"]


def _job(scene: str = SID, **options: object) -> bytes:
    return json.dumps({"scene": scene, "options": options}).encode()


def _tile(shape: str, dtype: str = "uint8", **q: str) -> str:
    extra = "".join(f"&{k}={v}" for k, v in q.items())
    return f"/v1/tiles?shape={shape}&dtype={dtype}{extra}"


U8_TILE = np.zeros((1, 2, 512, 512), np.uint8).tobytes()
#: The body of requests refused before their body is read (a large one could meet a closed
#: connection before the client reads the reply).
SMALL_BODY = bytes(16)

# (name, method, path, body, headers, status, words in the message)
CASES = [
    ("bad JSON", "POST", "/v1/jobs", b'{"scene": ', JSON, 400, "not valid JSON"),
    ("JSON not an object", "POST", "/v1/jobs", b"[1, 2]", JSON, 422, "body"),
    ("no scene", "POST", "/v1/jobs", b"{}", JSON, 422, "scene"),
    ("unknown key", "POST", "/v1/jobs", b'{"scene": "x", "colour": 1}', JSON, 422, "colour"),
    ("bad tta", "POST", "/v1/jobs", _job(tta=3), JSON, 422, "tta"),
    ("tta on CFAR", "POST", "/v1/jobs", _job(backend="cfar", tta=2), JSON, 422, "options"),
    ("unknown backend", "POST", "/v1/jobs", _job(backend="gpu"), JSON, 422, "backend"),
    ("threshold over 1", "POST", "/v1/jobs", _job(conf_threshold=1.5), JSON, 422,
     "conf_threshold"),
    ("overlap over half a tile", "POST", "/v1/jobs", _job(overlap=600), JSON, 422, "overlap"),
    ("negative power budget", "POST", "/v1/jobs", _job(power_budget_w=-1), JSON, 422,
     "power_budget_w"),
    ("power budget without a sensor", "POST", "/v1/jobs", _job(power_budget_w=5), JSON, 422,
     "needs a power sensor"),
    ("zero power window", "POST", "/v1/jobs", _job(power_window_s=0), JSON, 422,
     "power_window_s"),
    ("path traversal", "POST", "/v1/jobs", _job("../../../../etc"), JSON, 403,
     "outside the server's data roots"),
    ("absolute path elsewhere", "POST", "/v1/jobs", _job("/etc/passwd"), JSON, 403,
     "outside"),
    ("traversal inside a name", "POST", "/v1/jobs", _job(f"{SID}/../../x"), JSON, 403,
     "outside"),
    ("no such scene", "POST", "/v1/jobs", _job("nowhere"), JSON, 422, "no such scene"),
    ("not a scene", "POST", "/v1/jobs", _job("labels.csv"), JSON, 422, "TIFF"),
    ("unknown job", "GET", "/v1/jobs/0123456789abcdef", b"", {}, 404, "no job"),
    ("malformed job id", "GET", "/v1/jobs/..%2F..%2Fetc", b"", {}, 404, ""),
    ("cancel unknown job", "POST", "/v1/jobs/0123456789abcdef/cancel", b"", {}, 404, "no job"),
    ("unknown route", "GET", "/v1/nothing", b"", {}, 404, "Not Found"),
    ("wrong method", "DELETE", "/v1/jobs", b"", {}, 405, "Method Not Allowed"),
    ("bad job list limit", "GET", "/v1/jobs?limit=0", b"", {}, 422, "limit"),
    ("tiles: wrong content type", "POST", _tile("1,2,512,512"), SMALL_BODY, JSON, 415,
     "octet-stream"),
    ("tiles: no shape", "POST", "/v1/tiles?dtype=uint8", SMALL_BODY, OCTET, 422, "shape"),
    ("tiles: shape not numbers", "POST", _tile("a,b"), SMALL_BODY, OCTET, 422, "integers"),
    ("tiles: 2-D shape", "POST", _tile("512,512"), SMALL_BODY, OCTET, 422, "B,C,T,T"),
    ("tiles: wrong channels", "POST", _tile("1,3,512,512"), U8_TILE, OCTET, 422,
     "does not fit"),
    ("tiles: wrong tile size", "POST", _tile("1,2,256,256"), U8_TILE, OCTET, 422,
     "does not fit"),
    ("tiles: unknown dtype", "POST", _tile("1,2,512,512", "float64"), SMALL_BODY, OCTET, 422,
     "dtype"),
    ("tiles: body shorter than the shape", "POST", _tile("1,2,512,512"), U8_TILE[:-1], OCTET,
     400, "needs 524288"),
    ("tiles: float32 declared, uint8 sent", "POST", _tile("1,2,512,512", "float32"), U8_TILE,
     OCTET, 400, "needs 2097152"),
    ("tiles: too many in a batch", "POST", _tile("65,2,512,512"), U8_TILE, OCTET, 413,
     "at most 64"),
    ("tiles: unknown backend", "POST", _tile("1,2,512,512", backend="gpu"), SMALL_BODY, OCTET,
     422, "backend"),
    ("upload: not multipart", "POST", "/v1/jobs/upload", b"{}", JSON, 415, "multipart"),
    ("upload: malformed multipart", "POST", "/v1/jobs/upload", b"garbage", MULTIPART, 400,
     "multipart"),
    ("upload: not a TIFF", "POST", "/v1/jobs/upload",
     multipart(part("VV_dB", b"root:x:0:0", "a.tif"), part("VH_dB", b"root", "b.tif")),
     MULTIPART, 422, "not a TIFF"),
    ("upload: unknown file field", "POST", "/v1/jobs/upload",
     multipart(part("HH_dB", b"II*\x00", "a.tif")), MULTIPART, 422, "unknown upload field"),
    ("upload: unknown text field", "POST", "/v1/jobs/upload",
     multipart(part("colour", b"red")), MULTIPART, 422, "unknown form field"),
    ("upload: bad scene id", "POST", "/v1/jobs/upload",
     multipart(part("scene_id", b"../x")), MULTIPART, 422, "scene_id"),
    ("upload: bad options JSON", "POST", "/v1/jobs/upload",
     multipart(part("options", b"{bad")), MULTIPART, 400, "not valid JSON"),
    ("upload: bad option", "POST", "/v1/jobs/upload",
     multipart(part("options", b'{"tta": 3}')), MULTIPART, 422, "tta"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_request_gets_its_4xx(server: ServerProcess, method: str, path: str,
                                        body: bytes, headers: dict, status: int,
                                        words: str) -> None:
    r = send(server, method, path, body, headers)
    assert r.status == status, r.body
    assert r.headers["content-type"] == "application/json"
    assert words in r.detail
    assert b"Traceback" not in r.body


def test_upload_with_a_band_missing(server: ServerProcess, bands: dict[str, bytes]) -> None:
    r = send(server, "POST", "/v1/jobs/upload",
             multipart(part("VV_dB", bands["VV_dB"], "VV_dB.tif")), MULTIPART)
    assert r.status == 422 and "lacks band file(s) VH_dB" in r.detail


def test_truncated_tiff_upload_is_refused_and_not_kept(server: ServerProcess,
                                                       bands: dict[str, bytes]) -> None:
    vv = bands["VV_dB"]
    r = send(server, "POST", "/v1/jobs/upload",
             multipart(part("VV_dB", vv[: len(vv) // 2], "VV_dB.tif"),
                       part("VH_dB", bands["VH_dB"], "VH_dB.tif")), MULTIPART)
    assert r.status == 422 and "truncated" in r.detail and "VV_dB.tif" in r.detail
    assert str(server.work_dir) not in r.detail  # no server paths in replies
    assert not any((server.work_dir / "uploads").iterdir())  # nothing half-stored


def test_multipart_body_cut_off_mid_file_is_refused(server: ServerProcess,
                                                    bands: dict[str, bytes]) -> None:
    body = multipart(part("VV_dB", bands["VV_dB"], "VV_dB.tif"),
                     part("VH_dB", bands["VH_dB"], "VH_dB.tif"))
    r = send(server, "POST", "/v1/jobs/upload", body[: len(body) * 3 // 4], MULTIPART)
    assert r.status == 400 and "truncated upload" in r.detail


@pytest.mark.parametrize(("path", "ctype", "size", "limit"), [
    ("/v1/jobs/upload", MULTIPART["Content-Type"], 40 << 20, 32 << 20),
    ("/v1/jobs", JSON["Content-Type"], 2 << 20, 1 << 20),
], ids=["upload", "json"])
def test_body_over_the_limit_is_refused_before_it_is_read(server: ServerProcess, path: str,
                                                          ctype: str, size: int,
                                                          limit: int) -> None:
    """The Content-Length alone decides: the body is never sent."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", ctype)
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        r = conn.getresponse()
        status, detail = r.status, json.loads(r.read())["detail"]
    finally:
        conn.close()
    assert status == 413 and f"at most {limit}" in detail


def test_symlink_out_of_a_data_root_is_refused(server: ServerProcess, scenes: Path,
                                               tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (scenes / "escape").symlink_to(outside, target_is_directory=True)
    try:
        r = send(server, "POST", "/v1/jobs", _job("escape"), JSON)
    finally:
        (scenes / "escape").unlink()
    assert r.status == 403 and "outside" in r.detail


def test_results_and_cancel_of_a_failed_job(server: ServerProcess, failed_job: str) -> None:
    r = send(server, "GET", f"/v1/jobs/{failed_job}/results/csv")
    assert r.status == 409 and "failed" in r.detail
    r = send(server, "GET", f"/v1/jobs/{failed_job}/results/exe")
    assert r.status == 422 and "kind" in r.detail
    r = send(server, "POST", f"/v1/jobs/{failed_job}/cancel")
    assert r.status == 409 and "already failed" in r.detail


def test_no_request_above_caused_an_internal_error(server: ServerProcess) -> None:
    with server.client() as c:
        metrics = c.metrics()
    assert 'status="500"' not in metrics
    wait_for(lambda: server.log.exists(), what="server log")
    assert "Traceback" not in server.log.read_text()


def test_chunked_body_over_the_limit_is_cut_off_with_413(server: ServerProcess) -> None:
    """No Content-Length to judge by: the body is counted as it arrives. The client sends the
    whole body before reading, and still gets the 413 (the server drains a little)."""
    import socket

    body = b"{" + b" " * ((1 << 20) + 1024) + b"}"
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c)
                      for c in (body[i:i + 65536] for i in range(0, len(body), 65536)))
    head = (b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + chunks + b"0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.split()[1] == b"413", reply[:300]
    assert f"over {1 << 20} bytes".encode() in rest


def test_the_client_hears_an_upload_refusal_before_sending_the_body(server: ServerProcess,
                                                                   tmp_path: Path) -> None:
    """``Expect: 100-continue``: a 40 MiB upload over the 32 MiB limit gets its 413 at once."""
    from sarvessel.runtime.server.errors import ClientError

    scene = tmp_path / "big"
    scene.mkdir()
    for b in ("VV_dB", "VH_dB"):
        with (scene / f"{b}.tif").open("wb") as fh:
            fh.truncate(20 << 20)  # sparse: nothing is read before the refusal
    with server.client() as c, pytest.raises(ClientError) as err:
        c.upload(scene)
    assert err.value.status == 413 and f"at most {32 << 20}" in str(err.value)
