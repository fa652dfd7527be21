"""The API against a real uvicorn: scene jobs give what ``sarvessel detect`` gives, uploads
and concurrent submissions too, the tile endpoint gives what the detector gives in-process,
and health, readiness, metrics and the OpenAPI page answer."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from sarvessel.runtime.server.client import ServerClient
from sarvessel.runtime.server.errors import ClientError
from tests.runtime.server.conftest import SMALL, ServerProcess, free_port, needs_web, wait_for

pytestmark = needs_web
SID = SMALL[0]


@pytest.mark.parametrize(("backend", "options", "args"), [
    ("cfar", {}, ()),
    ("onnx", {}, ()),
    ("onnx", {"gate_db": -10.0, "overlap": 32}, ("--gate-db", "-10", "--overlap", "32")),
], ids=["cfar", "onnx", "onnx-gate-overlap"])
def test_submit_poll_results_equal_sarvessel_detect(server: ServerProcess, reference,
                                                    backend: str, options: dict,
                                                    args: tuple[str, ...]) -> None:
    ref = reference(SID, backend, *args)
    with server.client() as c:
        job = c.submit(SID, backend=backend, **options)
        assert job["state"] == "queued" and job["scene_id"] == SID
        seen = []
        job = c.wait(job["id"], poll_s=0.05, timeout_s=120, progress=seen.append)
        assert job["state"] == "done", job
        csv = c.result(job["id"], "csv")
        geojson = c.result(job["id"], "geojson")
        png = c.result(job["id"], "png")
        summary = json.loads(c.result(job["id"], "summary"))
    assert csv == (ref / f"{SID}.csv").read_bytes()
    assert geojson == (ref / f"{SID}.geojson").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    p = job["progress"]
    assert p["tiles_done"] == p["tiles_total"] == summary["tiles_total"]
    assert job["detections"] == summary["detections"] == csv.count(b"\n") - 1
    assert job["results"]["csv"] == f"/v1/jobs/{job['id']}/results/csv"
    assert set(job["results"]) == {"csv", "geojson", "png", "summary"}  # no sensor: no trace
    with server.client() as c, pytest.raises(ClientError, match="no power sensor") as err:
        c.result(job["id"], "power")
    assert err.value.status == 404
    assert all(j["state"] in ("queued", "running", "done") for j in seen)


def test_upload_gives_the_same_detections_as_a_path(server: ServerProcess, scenes: Path,
                                                    reference) -> None:
    ref = reference(SID, "cfar")
    with server.client() as c:
        job = c.upload(scenes / SID, backend="cfar")
        assert job["uploaded"] and job["scene_id"] == SID
        job = c.wait(job["id"], poll_s=0.05, timeout_s=120)
        assert job["state"] == "done", job
        assert c.result(job["id"], "csv") == (ref / f"{SID}.csv").read_bytes()
    # the uploaded copy is removed once the job has finished (just after); its results stay
    wait_for(lambda: not any((server.work_dir / "uploads").iterdir()), timeout=30,
             what="the uploaded copy to be removed")


def test_concurrent_submissions_all_finish_with_the_same_results(server: ServerProcess,
                                                                 reference) -> None:
    ref = (reference(SID, "cfar") / f"{SID}.csv").read_bytes()
    ids: list[str] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            with server.client() as c:  # one connection per thread
                ids.append(c.submit(SID, backend="cfar")["id"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(set(ids)) == 6
    with server.client() as c:
        for job_id in ids:
            job = c.wait(job_id, poll_s=0.05, timeout_s=180)
            assert job["state"] == "done", job
            assert c.result(job_id, "csv") == ref
        listed = {j["id"] for j in c.jobs(state="done")}
    assert set(ids) <= listed


def test_tile_endpoint_matches_the_detector_in_process(server: ServerProcess,
                                                       scenes: Path) -> None:
    """uint8 tiles and float32 dB tiles (preprocessed by the server as the pipeline does) give
    the detections of ``Detector.detect`` on the same tiles."""
    from sarvessel.runtime.detector import make_detector
    from sarvessel.runtime.io.scene import open_scene
    from sarvessel.runtime.preprocess import preprocess

    with open_scene(scenes / SID) as scene:
        raw = scene.read_rows(256, 768)[:, :, 0:1024]  # float32 dB [2, 512, 1024]
    tiles_db = np.stack([raw[:, :, 0:512], raw[:, :, 512:1024]]).astype(np.float32)
    tiles_u8 = preprocess(tiles_db)
    det = make_detector("onnx", threads=2)
    expected = det.detect(tiles_u8)
    assert sum(len(d) for d in expected) > 0  # the test means something
    with server.client() as c:
        r8 = c.detect_tiles(tiles_u8, backend="onnx")
        rf = c.detect_tiles(tiles_db, backend="onnx")
        one = c.detect_tiles(tiles_u8[1], backend="onnx")  # a single [C, T, T] tile
        noop = c.detect_tiles(tiles_u8, backend="noop")
    assert r8["backend"] == "onnx" and len(r8["tiles"]) == 2
    for reply in (r8, rf):
        for tile, want in zip(reply["tiles"], expected, strict=True):
            got = tile["detections"]
            assert len(got) == len(want)
            np.testing.assert_allclose([d["row"] for d in got], want.rows, atol=1e-3)
            np.testing.assert_allclose([d["col"] for d in got], want.cols, atol=1e-3)
            np.testing.assert_allclose([d["score"] for d in got], want.scores, atol=1e-5)
            assert [d["class_id"] for d in got] == want.classes.tolist()
    assert one["tiles"][0]["detections"] == r8["tiles"][1]["detections"]
    assert noop["tiles"] == [{"index": 0, "detections": []}, {"index": 1, "detections": []}]


def test_health_ready_docs_and_metrics(server: ServerProcess) -> None:
    import urllib.request

    with server.client() as c:
        assert c.health()["status"] == "ok"
        ready = c.ready()
        assert ready["ready"] and ready["database"] and ready["workers"]
        c.detect_tiles(np.zeros((1, 2, 512, 512), np.uint8), backend="noop")
        text = c.metrics()
    for name in ("sarvessel_tiles_total{source=\"tile_api\"}", "sarvessel_queue_depth",
                 "sarvessel_jobs{state=\"done\"}", "sarvessel_http_request_duration_seconds",
                 "sarvessel_tile_batch_seconds_bucket", "sarvessel_detections_total"):
        assert name in text, name
    assert "sarvessel_power_watts" not in text  # --no-power-sensor: not measured, not invented
    with urllib.request.urlopen(f"{server.url}/docs", timeout=10) as r:
        assert r.status == 200 and b"swagger" in r.read().lower()
    with urllib.request.urlopen(f"{server.url}/openapi.json", timeout=10) as r:
        paths = json.load(r)["paths"]
    assert {"/v1/jobs", "/v1/jobs/upload", "/v1/jobs/{job_id}", "/v1/tiles",
            "/v1/jobs/{job_id}/results/{kind}", "/v1/jobs/{job_id}/cancel"} <= set(paths)


def test_the_client_reports_errors_with_their_status(server: ServerProcess) -> None:
    with server.client() as c, pytest.raises(ClientError) as err:
        c.job("0123456789abcdef")
    assert err.value.status == 404 and "no job" in str(err.value)
    with pytest.raises(ClientError) as err:  # nothing listens there
        ServerClient(f"http://127.0.0.1:{free_port()}", timeout=2.0).health()
    assert err.value.status == 0


def test_submit_and_results_commands(server: ServerProcess, scenes: Path, reference,
                                     tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sarvessel.cli import main

    ref = reference(SID, "cfar")
    capsys.readouterr()  # what the reference run printed
    out = tmp_path / "out"
    assert main(["submit", SID, "--backend", "cfar", "--wait", "--out", str(out),
                 "--server", server.url]) == 0
    job_id = capsys.readouterr().out.split()[0]
    assert (out / f"{SID}.csv").read_bytes() == (ref / f"{SID}.csv").read_bytes()
    assert {p.name for p in out.iterdir()} == {f"{SID}.csv", f"{SID}.geojson",
                                               f"{SID}_quicklook.png", f"{SID}_summary.json"}
    assert main(["submit", str(scenes / SID), "--upload", "--backend", "cfar",
                 "--server", server.url]) == 0
    up_id = capsys.readouterr().out.strip()
    assert main(["results", "--server", server.url]) == 0
    listing = capsys.readouterr().out
    assert job_id in listing and up_id in listing
    again = tmp_path / "again"
    assert main(["results", up_id, "--wait", "--kind", "csv", "--out", str(again),
                 "--server", server.url]) == 0
    assert (again / f"{SID}.csv").read_bytes() == (ref / f"{SID}.csv").read_bytes()
