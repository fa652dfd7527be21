"""Input checks without a server: scene paths stay under the data roots, uploads are stored
whole or not at all, tile bodies match their declared shape and dtype; and the CLI and client
work where the web extra is absent."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sarvessel.runtime.preprocess import preprocess
from sarvessel.runtime.server.errors import BadRequest, Forbidden, PayloadTooLarge, Unprocessable
from sarvessel.runtime.server.inputs import (
    TileDtype,
    decode_tiles,
    resolve_scene_path,
    store_upload,
)

SRC = Path(__file__).resolve().parents[3] / "src" / "sarvessel"
WEB = {"fastapi", "starlette", "uvicorn", "pydantic", "prometheus_client", "multipart"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "data"
    (r / "scenes" / "a").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (r / "link_out").symlink_to(tmp_path / "outside")
    (r / "link_in").symlink_to(r / "scenes" / "a")
    return r.resolve()


@pytest.mark.parametrize(("raw", "ok"), [
    ("scenes/a", True), ("link_in", True), ("scenes/../scenes/a", True),
    ("../outside", False), ("link_out", False), ("scenes/../../outside", False),
    ("/etc", False), ("/", False),
])
def test_scene_paths_stay_under_the_roots(root: Path, raw: str, ok: bool) -> None:
    if ok:
        assert resolve_scene_path(raw, [root]) == root / "scenes" / "a"
    else:
        with pytest.raises(Forbidden, match="outside the server's data roots"):
            resolve_scene_path(raw, [root])


def test_absolute_paths_inside_a_root_and_missing_ones(root: Path) -> None:
    assert resolve_scene_path(str(root / "scenes" / "a"), [root]) == root / "scenes" / "a"
    with pytest.raises(Unprocessable, match="no such scene"):
        resolve_scene_path("scenes/b", [root])
    with pytest.raises(Forbidden, match="uploads only"):
        resolve_scene_path("scenes/a", [])
    with pytest.raises(Unprocessable, match="NUL"):
        resolve_scene_path("scenes/a\x00", [root])


def _tif(arr: np.ndarray) -> io.BytesIO:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr)
    buf.seek(0)
    return buf


def test_an_upload_is_stored_whole_or_not_at_all(tmp_path: Path) -> None:
    band = np.full((64, 80), -20.0, np.float32)
    dest = tmp_path / "uploads" / "job1"
    path = store_upload({"VV_dB": _tif(band), "VH_dB": _tif(band)}, dest=dest, scene_id="s1")
    assert path == dest / "s1" and sorted(p.name for p in path.iterdir()) == [
        "VH_dB.tif", "VV_dB.tif"]
    good = _tif(band).getvalue()
    for files, words in [
        ({"VV_dB": io.BytesIO(good[: len(good) // 2]), "VH_dB": _tif(band)}, "truncated"),
        ({"VV_dB": io.BytesIO(b"GIF89a..."), "VH_dB": _tif(band)}, "not a TIFF"),
        ({"VV_dB": _tif(band), "VH_dB": _tif(band[:32])}, "does not match"),
        ({"VV_dB": _tif(band)}, "lacks band"),
        ({"scene": _tif(band), "VV_dB": _tif(band)}, "not both"),
    ]:
        dest = tmp_path / "uploads" / "job2"
        with pytest.raises(Unprocessable, match=words):
            store_upload(files, dest=dest, scene_id="s2")
        assert not dest.exists()
        assert sorted(p.name for p in dest.parent.iterdir()) == ["job1"]  # no temporaries
    single = store_upload({"scene": _tif(np.stack([band, band], -1))}, dest=dest,
                          scene_id="s3")
    assert single == dest / "s3.tif" and single.is_file()


def test_tile_bodies_are_checked_against_the_declared_shape_and_dtype() -> None:
    u8 = np.arange(2 * 2 * 8 * 8, dtype=np.uint8).reshape(2, 2, 8, 8)
    kw = dict(channels=2, tile_size=8, max_batch=4)
    batch, valid = decode_tiles(u8.tobytes(), shape=(2, 2, 8, 8), dtype=TileDtype.UINT8, **kw)
    assert valid is None and np.array_equal(batch, u8)
    one, _ = decode_tiles(u8[0].tobytes(), shape=(2, 8, 8), dtype=TileDtype.UINT8, **kw)
    assert one.shape == (1, 2, 8, 8)
    db = np.full((1, 2, 8, 8), -15.0, "<f4")
    db[0, 1, 0, 0] = -32768.0  # nodata in VH alone: that pixel holds no data
    batch, valid = decode_tiles(db.tobytes(), shape=(1, 2, 8, 8), dtype=TileDtype.FLOAT32, **kw)
    assert np.array_equal(batch, preprocess(db)) and not valid[0, 0, 0] and valid.sum() == 63
    with pytest.raises(BadRequest, match="needs 256"):
        decode_tiles(u8.tobytes()[:-1], shape=(2, 2, 8, 8), dtype=TileDtype.UINT8, **kw)
    with pytest.raises(Unprocessable, match="does not fit"):
        decode_tiles(u8.tobytes(), shape=(2, 2, 16, 4), dtype=TileDtype.UINT8, **kw)
    with pytest.raises(PayloadTooLarge, match="at most 4"):
        decode_tiles(b"", shape=(5, 2, 8, 8), dtype=TileDtype.UINT8, **kw)


def test_only_the_server_room_imports_the_web_framework() -> None:
    """Outside runtime/server nothing imports it (at any depth); inside, only the app side
    does at import time (``serve`` imports uvicorn when it runs), so the CLI, client, store,
    runner and input checks load on a runtime-only install."""
    web_side = {"app.py", "deps.py", "models.py", "metrics.py"}
    bad = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        in_server = rel.parts[:2] == ("runtime", "server")
        if in_server and (path.name in web_side or "routers" in rel.parts):
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body if in_server else ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{rel}: {n}" for n in names if n.split(".")[0] in WEB]
    assert not bad


#: Runs the CLI with the web modules made unimportable, as on a runtime-only install.
BLOCKED = ("import sys\nfor m in {mods!r}: sys.modules[m] = None\n"
           "from sarvessel.cli import main\nsys.exit(main({argv!r}))")


@pytest.mark.parametrize(("argv", "rc", "words"), [
    (["--help"], 0, "serve"),
    (["submit", "--help"], 0, "--upload"),
    (["results", "--help"], 0, "--kind"),
    (["serve", "--port", "1"], 2, "pip install 'sarvessel[serve]'"),
    (["submit", "x", "--server", "http://127.0.0.1:9"], 2, "cannot reach"),
])
def test_the_cli_works_without_the_web_extra(tmp_path: Path, argv: list[str], rc: int,
                                             words: str) -> None:
    if argv[0] == "serve":
        argv = [*argv, "--work-dir", str(tmp_path / "w")]
    code = BLOCKED.format(mods=sorted(WEB), argv=argv)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == rc, proc.stderr
    assert words in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
