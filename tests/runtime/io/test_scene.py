"""Scene reading on real GeoTIFF files: every layout, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from sarvessel.runtime.errors import SceneError
from sarvessel.runtime.io.raster import RasterReader
from sarvessel.runtime.io.scene import open_scene


def _write_scene(folder: Path, vv: np.ndarray, vh: np.ndarray | None = None, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "VV_dB.tif", vv, **kw)
    tifffile.imwrite(folder / "VH_dB.tif", vv - 8 if vh is None else vh, **kw)
    return folder


LAYOUTS = {
    "tiled": {"tile": (128, 128)},
    "tiled-zlib": {"tile": (128, 128), "compression": "zlib"},
    "strips": {},
    "strips-zlib": {"rowsperstrip": 37, "compression": "zlib"},
    "tiled-bigendian": {"tile": (64, 64), "byteorder": ">"},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_read_rows_matches_the_array_for_every_layout(tmp_path, layout, dtype):
    rng = np.random.default_rng(1)
    vv = (rng.standard_normal((300, 257)) * 5 - 20).astype(dtype)
    _write_scene(tmp_path / "s1", vv, **LAYOUTS[layout])
    with open_scene(tmp_path / "s1") as sc:
        assert (sc.height, sc.width, sc.band_names) == (300, 257, ("VV_dB", "VH_dB"))
        for r0, r1 in [(0, 300), (5, 133), (250, 400), (299, 300)]:
            got = sc.read_rows(r0, r1)
            assert got.dtype == np.float32 and got.shape == (2, min(r1, 300) - r0, 257)
            np.testing.assert_array_equal(got[0], vv[r0:r1].astype(np.float32))
            np.testing.assert_array_equal(got[1], (vv - 8)[r0:r1].astype(np.float32))


def test_multiband_geotiff_planar_and_interleaved(tmp_path):
    a = np.random.default_rng(2).random((3, 200, 150), dtype=np.float32)
    tifffile.imwrite(tmp_path / "planar.tif", a, planarconfig="separate", tile=(64, 64))
    tifffile.imwrite(tmp_path / "contig.tif", np.moveaxis(a, 0, -1), planarconfig="contig")
    for name in ("planar.tif", "contig.tif"):
        with open_scene(tmp_path / name) as sc:
            assert sc.band_names == ("band1", "band2", "band3")
            np.testing.assert_array_equal(sc.read_rows(10, 90), a[:, 10:90])
            np.testing.assert_array_equal(sc.read_band_rows(2, 0, 5), a[2, :5])
            # the bands of one file share each read (once, every band re-read all of them)
            reads = []
            rd = sc._readers[0]
            inner = rd.read_rows
            rd.read_rows = (lambda r0, r1, log=reads, f=inner, **kw:
                            log.append((r0, r1)) or f(r0, r1, **kw))
            got = [sc.read_band_rows(i, 20, 60) for i in (0, 1, 2)]
            np.testing.assert_array_equal(np.stack(got), a[:, 20:60])
            np.testing.assert_array_equal(sc.read_band_rows(1, 60, 61), a[1, 60:61])
            assert reads == [(20, 60), (60, 61)]


def test_aux_raster_is_resampled_to_scene_rows(tmp_path):
    folder = _write_scene(tmp_path / "s", np.zeros((100, 200), np.float32))
    mask = np.zeros((2, 4), np.uint8)
    mask[1, 3] = 1  # bottom-right 50 x 50 block is land
    tifffile.imwrite(folder / "owiMask.tif", mask)
    with open_scene(folder) as sc:
        m = sc.read_aux_rows("owiMask", 40, 60)
        assert m.shape == (20, 200)
        assert m[:10].sum() == 0 and m[10:, 150:].min() == 1 and m[10:, :150].max() == 0
        assert sc.on_land(np.array([99.0, 10.0]), np.array([199.0, 199.0])).tolist() == [
            True, False]


# -- bad input: the message names the file and the problem ---------------------------------


def test_missing_band_names_the_file(tmp_path):
    folder = tmp_path / "scene"
    folder.mkdir()
    tifffile.imwrite(folder / "VV_dB.tif", np.zeros((10, 10), np.float32))
    with pytest.raises(SceneError, match=r"missing band VH_dB\.tif \(found: VV_dB\.tif\)"):
        open_scene(folder)


def test_mismatched_band_sizes(tmp_path):
    folder = tmp_path / "scene"
    _write_scene(folder, np.zeros((10, 10), np.float32), np.zeros((10, 12), np.float32))
    with pytest.raises(SceneError, match=r"VH_dB\.tif: size 10 x 12 does not match VV_dB\.tif"):
        open_scene(folder)


def test_truncated_tiff(tmp_path):
    folder = _write_scene(tmp_path / "scene", np.ones((256, 256), np.float32), tile=(64, 64))
    data = (folder / "VH_dB.tif").read_bytes()
    (folder / "VH_dB.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(SceneError, match=r"VH_dB\.tif: (truncated|not a readable TIFF)"):
        open_scene(folder)


def test_not_a_tiff(tmp_path):
    folder = tmp_path / "scene"
    folder.mkdir()
    (folder / "VV_dB.tif").write_text("this is not an image")
    tifffile.imwrite(folder / "VH_dB.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(SceneError, match=r"VV_dB\.tif: not a readable TIFF"):
        open_scene(folder)


def test_missing_path(tmp_path):
    with pytest.raises(SceneError, match="no such scene folder or file"):
        open_scene(tmp_path / "nope")


def test_multiband_file_as_xview3_band_is_rejected(tmp_path):
    folder = tmp_path / "scene"
    folder.mkdir()
    tifffile.imwrite(folder / "VV_dB.tif", np.zeros((8, 8, 2), np.float32), planarconfig="contig")
    tifffile.imwrite(folder / "VH_dB.tif", np.zeros((8, 8), np.float32))
    with pytest.raises(SceneError, match=r"VV_dB\.tif: expected one band, found 2"):
        open_scene(folder)


def test_reader_clips_rows_outside_the_image(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.arange(20, dtype=np.float32).reshape(5, 4))
    rd = RasterReader(tmp_path / "a.tif")
    assert rd.read_rows(3, 99).shape == (1, 2, 4)
    assert rd.read_rows(7, 9).shape == (1, 0, 4)


def test_integer_band_with_horizontal_predictor(tmp_path):
    vv = np.random.default_rng(3).integers(-40, 10, (90, 70)).astype(np.int16)
    _write_scene(tmp_path / "s", vv, rowsperstrip=16, compression="zlib", predictor=2)
    with open_scene(tmp_path / "s") as sc:
        np.testing.assert_array_equal(sc.read_rows(0, 90)[0], vv)


def _patch_tag(path: Path, name: str, value: int) -> None:
    """Overwrite an integer tag of the first page in place (a damaged or hand-edited header)."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages.first.tags[name]
        offset = tag.valueoffset
        dtype = np.dtype(tif.byteorder + {3: "u2", 4: "u4"}[int(tag.dtype)])  # SHORT, LONG
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.array([value], dtype).tobytes())


@pytest.mark.parametrize(("kw", "patches", "message"), [
    ({"tile": (128, 128)}, {"ImageLength": 200000}, "needs 3126 segments, the file lists 4"),
    ({"tile": (128, 128)}, {"ImageWidth": 1000}, "needs 16 segments, the file lists 4"),
    ({"rowsperstrip": 64}, {"ImageLength": 4000}, "needs 63 segments, the file lists 4"),
    ({"rowsperstrip": 256}, {"ImageLength": 4000, "RowsPerStrip": 4000},
     "uncompressed segments hold fewer bytes than 4000 x 256 px"),
])
def test_header_that_disagrees_with_its_segment_table_is_damaged(tmp_path, kw, patches,
                                                                 message):
    """Such headers once failed deep in a read (IndexError, or an mmap past the file's end)."""
    folder = _write_scene(tmp_path / "s", np.ones((256, 256), np.float32), **kw)
    for field, value in patches.items():
        _patch_tag(folder / "VV_dB.tif", field, value)
    with pytest.raises(SceneError, match=rf"VV_dB\.tif: damaged TIFF header: .*{message}"):
        open_scene(folder)


def test_projected_scene_is_refused_not_read_with_guessed_pixel_sizes(tmp_path):
    """A UTM scene was once read with a warning, at an assumed 10 m (lengths came out wrong)."""
    folder = tmp_path / "utm_v"
    folder.mkdir()
    keys = (1, 1, 0, 1, 1024, 0, 1, 1)  # GTModelTypeGeoKey = 1: projected
    tags = [(34735, "H", len(keys), keys, True), (33550, "d", 3, (20.0, 20.0, 0.0), True),
            (33922, "d", 6, (0, 0, 0, 500000.0, 6e6, 0), True)]
    for b in ("VV_dB", "VH_dB"):
        tifffile.imwrite(folder / f"{b}.tif", np.full((64, 64), -20, np.float32),
                         extratags=tags)
    with pytest.raises(SceneError, match=r"VV_dB\.tif: GeoTIFF model type 1 is not geographic"):
        open_scene(folder)


def test_a_folder_named_like_a_band_and_a_dot_path(tmp_path, monkeypatch):
    folder = _write_scene(tmp_path / "S9_v", np.zeros((8, 8), np.float32))
    monkeypatch.chdir(folder)
    with open_scene(Path(".")) as sc:  # once scene id "", a crash after the whole run
        assert sc.scene_id == "S9_v"
    (folder / "VH_dB.tif").unlink()
    (folder / "VH_dB.tif").mkdir()
    with pytest.raises(SceneError, match=r"VH_dB\.tif: band VH_dB is not a file"):
        open_scene(folder)


def test_malformed_georeferencing_is_ignored_with_a_warning_not_refused(tmp_path, caplog):
    """Only a projected CRS is refused; broken tags leave the scene in pixel coordinates."""
    folder = tmp_path / "bad_geo_v"
    folder.mkdir()
    tags = [(33550, "d", 3, (0.0, 0.0, 0.0), True),  # a zero pixel scale
            (33922, "d", 6, (0, 0, 0, 5.0, 50.0, 0), True)]
    for b in ("VV_dB", "VH_dB"):
        tifffile.imwrite(folder / f"{b}.tif", np.full((64, 64), -20, np.float32),
                         extratags=tags)
    with open_scene(folder) as sc:
        assert sc.georef is None and sc.pixel_size_m == 10.0
    assert "ignoring unreadable georeferencing" in caplog.text
