"""The one dB → uint8 mapping shared by training and every backend."""

from __future__ import annotations

import numpy as np
import pytest

from sarvessel.runtime.preprocess import (
    BATHYMETRY,
    VH,
    VV,
    db_units_problem,
    percentile_stretch,
    preprocess,
    to_uint8,
)


def reference(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = np.where(np.isnan(x), lo, x)
    return np.floor((np.clip(x, lo, hi) - lo) * 255.0 / (hi - lo) + 0.5).astype(np.uint8)


@pytest.mark.parametrize("band", [VV, VH, BATHYMETRY])
def test_matches_round_half_up_of_the_linear_map(band):
    rng = np.random.default_rng(0)
    x = rng.uniform(band.lo - 30, band.hi + 30, 200_000).astype(np.float32)  # > one chunk
    got = to_uint8(x, band)
    diff = np.abs(got.astype(int) - reference(x, band.lo, band.hi).astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4  # float32 vs float64 at exact ties
    assert got[x <= band.lo].max() == 0 and got[x >= band.hi].min() == 255


def test_nodata_nan_and_minus_inf_are_zero():
    x = np.array([-32768, np.nan, -np.inf, np.inf, -15.0], np.float32)
    assert to_uint8(x, VV).tolist() == [0, 0, 0, 255, 128]


def test_writes_into_strided_output_and_stacks_bands():
    x = np.stack([np.full((3, 4), -50.0), np.full((3, 4), 20.0)]).astype(np.float32)
    buf = np.full((2, 3, 6), 7, np.uint8)
    to_uint8(x[0], VV, out=buf[0, :, :4])  # a column slice is not contiguous
    assert (buf[0, :, :4] == 0).all() and (buf[0, :, 4:] == 7).all()
    assert preprocess(x).tolist() == [[[0] * 4] * 3, [[255] * 4] * 3]
    assert preprocess(x[None]).shape == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="expected 2 channels"):
        preprocess(x[:1])


def test_percentile_stretch() -> None:
    v = np.arange(101, dtype=np.float32)  # percentile k is k
    out = percentile_stretch(v, 25, 75)
    assert out[:26].tolist() == [0] * 26 and out[75:].tolist() == [255] * 26
    assert out[50] in (127, 128)
    exact = percentile_stretch(np.arange(1021, dtype=np.float64), 0, 100)  # x 255 / 1020 = x / 4
    assert exact[[2, 6, 510, 1020]].tolist() == [1, 2, 128, 255]  # halves round up
    assert percentile_stretch(np.full((3, 3), 7.0), 1, 99).tolist() == [[0] * 3] * 3
    with pytest.raises(ValueError, match="no finite samples"):
        percentile_stretch(np.array([np.nan, np.inf]), 1, 99)
    with pytest.raises(ValueError, match="percentiles must satisfy"):
        percentile_stretch(v, 50, 50)
    # past STRETCH_SAMPLES pixels the percentiles come from a subsample: within a grey level
    big = np.random.default_rng(0).gamma(1.0, 100.0, (3000, 2000)).astype(np.float32)
    big[:10] = np.nan  # the subsample's first rows are all non-finite
    lo, hi = np.percentile(big[10:], [1, 99])
    exact = np.floor(np.clip((big - lo) * 255 / (hi - lo), 0, 255) + 0.5)
    got = percentile_stretch(big, 1, 99)
    assert (got[:10] == 0).all()
    assert np.abs(got[10:].astype(int) - exact[10:]).max() <= 1


def test_db_units_problem_tells_db_from_other_units() -> None:
    rng = np.random.default_rng(0)
    sea_db = rng.normal(-20, 4, 10000).astype(np.float32)
    sea_db[:500] = rng.uniform(0, 15, 500)  # 5 % bright targets and land above 0 dB
    valid = np.ones(10000, bool)
    assert db_units_problem(to_uint8(sea_db, VV), valid, VV) is None
    dn = rng.integers(30, 3000, 10000).astype(np.float32)
    assert "100% of the valid VV_dB samples" in db_units_problem(to_uint8(dn, VV), valid, VV)
    linear = rng.gamma(1.0, 0.02, 10000).astype(np.float32)
    assert "linear sigma0" in db_units_problem(to_uint8(linear, VH), valid, VH)
    # too few valid samples to judge; bathymetry is not in dB
    few = np.zeros(10000, bool)
    few[:100] = True
    assert db_units_problem(to_uint8(dn, VV), few, VV) is None
    assert db_units_problem(to_uint8(dn, BATHYMETRY), valid, BATHYMETRY) is None
