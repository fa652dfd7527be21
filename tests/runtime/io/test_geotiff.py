"""GeoTIFF georeference reading and streamed writing (real files through tifffile)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from sarvessel.runtime.errors import SceneError
from sarvessel.runtime.io.geotiff import (
    METRES_PER_DEGREE,
    TAG_GDAL_NODATA,
    GeoTransform,
    read_georef,
    write_geotiff,
)

DLAT = 10.0 / METRES_PER_DEGREE


def _georef(shape=(300, 200)) -> GeoTransform:
    return GeoTransform.north_up(12.5, 54.0, DLAT / np.cos(np.radians(54.0)), DLAT, shape=shape)


def _read(path):
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        return page.asarray(), read_georef(page), page


@pytest.mark.parametrize("tile", [512, 64, None])
@pytest.mark.parametrize("compression", [None, "deflate"])
def test_roundtrip_from_ragged_row_blocks(tmp_path, tile, compression):
    rng = np.random.default_rng(0)
    data = rng.normal(-15, 5, (300, 200)).astype(np.float32)
    data[:5, :7] = -32768
    blocks = (data[r : r + 37] for r in range(0, 300, 37))
    path = tmp_path / "b.tif"
    write_geotiff(path, blocks, shape=data.shape, dtype=np.float32, georef=_georef(),
                  nodata=-32768, tile=tile, compression=compression)
    back, geo, page = _read(path)
    assert np.array_equal(back, data)
    assert page.is_tiled == (tile is not None)
    assert geo == _georef()
    assert page.tags[TAG_GDAL_NODATA].value == "-32768"
    assert page.geotiff_tags["GeographicTypeGeoKey"] == 4326


def test_uncompressed_strips_are_memory_mappable(tmp_path):
    data = np.arange(120 * 90, dtype=np.float32).reshape(120, 90)
    path = write_geotiff(tmp_path / "s.tif", data, georef=_georef(data.shape), tile=None)
    mm = tifffile.memmap(path)
    assert np.array_equal(mm, data)


def test_pixel_centres_and_inverse():
    g = _georef()
    lon, lat = g.pixel_to_lonlat(np.array([0, 299]), np.array([0, 199]))
    assert lon[0] == pytest.approx(12.5 + 0.5 * g.lon_per_col)
    assert lat[0] == pytest.approx(54.0 - 0.5 * DLAT)
    assert lat[1] == pytest.approx(54.0 - 299.5 * DLAT)
    r, c = g.lonlat_to_pixel(lon, lat)
    np.testing.assert_allclose(r, [0, 299], atol=1e-6)
    np.testing.assert_allclose(c, [0, 199], atol=1e-6)
    row_m, col_m = g.pixel_spacing_m()
    assert row_m == pytest.approx(10.0, rel=1e-6)
    assert col_m == pytest.approx(10.0, rel=2e-3)  # evaluated at the centre, not lat 54
    assert g.pixel_size_m == pytest.approx(10.0, rel=2e-3)


def test_rotated_transform_roundtrip(tmp_path):
    g = GeoTransform(1.0, 1e-4, 2e-5, 40.0, 1.5e-5, -1e-4, (50, 60))
    path = write_geotiff(tmp_path / "r.tif", np.zeros((50, 60), np.uint8), georef=g)
    _, geo, page = _read(path)
    assert 34264 in page.tags and 33550 not in page.tags
    assert geo == g
    lon, lat = geo.pixel_to_lonlat(10, 20)
    assert float(lon) == pytest.approx(1.0 + 20.5 * 1e-4 + 10.5 * 2e-5)
    assert float(lat) == pytest.approx(40.0 + 20.5 * 1.5e-5 - 10.5 * 1e-4)


def _write_raw(path, extratags):
    tifffile.imwrite(path, np.zeros((10, 10), np.float32), extratags=extratags)


def test_pixel_is_point_is_shifted_to_corner(tmp_path):
    keys = [1, 1, 0, 2, 1024, 0, 1, 2, 1025, 0, 1, 2]
    path = tmp_path / "p.tif"
    _write_raw(path, [(34735, "H", len(keys), keys, True),
                      (33550, "d", 3, (0.1, 0.1, 0.0), True),
                      (33922, "d", 6, (0, 0, 0, 5.0, 50.0, 0), True)])
    _, geo, _ = _read(path)
    lon, lat = geo.pixel_to_lonlat(0, 0)
    assert float(lon) == pytest.approx(5.0) and float(lat) == pytest.approx(50.0)


def test_no_georef_gives_none_and_projected_crs_is_refused(tmp_path):
    plain = tmp_path / "plain.tif"
    _write_raw(plain, [])
    assert _read(plain)[1] is None
    utm = tmp_path / "utm.tif"
    keys = [1, 1, 0, 1, 1024, 0, 1, 1]
    _write_raw(utm, [(34735, "H", len(keys), keys, True),
                     (33550, "d", 3, (10.0, 10.0, 0.0), True),
                     (33922, "d", 6, (0, 0, 0, 500000.0, 6e6, 0), True)])
    with pytest.raises(SceneError, match="utm.tif.*not geographic"):
        _read(utm)


def test_bad_row_blocks_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="expected 20"):
        write_geotiff(tmp_path / "x.tif", iter([np.zeros((10, 8), np.float32)]),
                      shape=(20, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="width 8"):
        write_geotiff(tmp_path / "y.tif", iter([np.zeros((20, 9), np.float32)]),
                      shape=(20, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="multiple of 16"):
        write_geotiff(tmp_path / "z.tif", np.zeros((20, 8), np.float32), tile=100)
