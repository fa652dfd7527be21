"""The tile pre-screen: the land test is exact against the land filter, the gate does what it
says on crafted tiles, and both are cheap."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sarvessel.runtime.io.scene import open_scene
from sarvessel.runtime.prescreen import (
    PrescreenConfig,
    PrescreenCounts,
    bright_mask,
    db_to_u8,
    keep_tiles,
    sea_mask,
)
from sarvessel.runtime.tiling import tile_starts

#: Small tiles on a 1024² generated scene with ~25 % land: 81 tiles, some all land.
TILE, OVERLAP, SIZE = 128, 16, 1024


@pytest.fixture(scope="module")
def land_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sarvessel.synth.generate import synthesize_scene

    return synthesize_scene(tmp_path_factory.mktemp("land"), height=SIZE, width=SIZE,
                            seed=5).scene_dir


def _brute_sea(scene, r0: int, c0: int, tile: int, margin: float) -> bool:
    """Any point of the tile's reach off land by the pipeline's own test: every pixel, ends
    included (auxiliary cells are ~49 px wide, so only a sliver at an end can be under 1 px)."""
    pts = np.arange(-margin, tile + margin + 0.5, 1.0)
    assert pts[0] == -margin and pts[-1] == tile + margin
    rr, cc = np.meshgrid(r0 + pts, c0 + pts, indexing="ij")
    return bool((~scene.on_land(rr.ravel(), cc.ravel())).any())


@pytest.mark.parametrize("margin", [0.0, 64.0])
def test_sea_mask_is_exact_against_on_land(land_scene: Path, margin: float):
    with open_scene(land_scene) as scene:
        ah, _ = scene.aux_shape("owiMask")
        assert SIZE / ah != int(SIZE / ah)  # a fractional cell size: the hard case
        rows = tile_starts(scene.height, TILE, OVERLAP)
        cols = tile_starts(scene.width, TILE, OVERLAP)
        got = np.array([sea_mask(scene, r, cols, TILE, margin_px=margin) for r in rows])
        want = np.array([[_brute_sea(scene, r, c, TILE, margin) for c in cols] for r in rows])
    np.testing.assert_array_equal(got, want)
    assert (~got).sum() >= 3 and got.sum() >= 30  # the scene has land tiles and sea tiles


@pytest.mark.parametrize("seed", range(4))
def test_sea_mask_finds_a_lone_sea_cell(tmp_path: Path, seed: int):
    """All land but one or two 24.4 px sea cells anywhere: the tiles in reach of one are kept,
    the others skipped (a sampling step of over a cell would step over some of them)."""
    rng = np.random.default_rng(seed)
    folder = tmp_path / "s"
    folder.mkdir()
    for band in ("VV_dB", "VH_dB"):
        tifffile.imwrite(folder / f"{band}.tif", np.full((1000, 1000), -20.0, np.float32))
    mask = np.ones((41, 41), np.uint8)
    mask[tuple(rng.integers(0, 41, (2, 2)))] = 0
    tifffile.imwrite(folder / "owiMask.tif", mask)
    tile, margin = 256, 10.0
    with open_scene(folder) as scene:
        starts = tile_starts(1000, tile, 32)
        got = np.array([sea_mask(scene, r, starts, tile, margin_px=margin) for r in starts])
        want = np.array([[_brute_sea(scene, r, c, tile, margin) for c in starts]
                         for r in starts])
    np.testing.assert_array_equal(got, want)
    assert 0 < got.sum() < got.size


def test_skipped_tiles_hold_no_detection_the_land_filter_keeps(land_scene: Path):
    """A detection centred anywhere within the margin of a skipped tile is on land."""
    rng = np.random.default_rng(1)
    with open_scene(land_scene) as scene:
        rows = tile_starts(scene.height, TILE, OVERLAP)
        cols = tile_starts(scene.width, TILE, OVERLAP)
        for r in rows:
            keep = sea_mask(scene, r, cols, TILE, margin_px=8.0)
            for c in np.asarray(cols)[~keep]:
                pts = rng.uniform(-8.0, TILE + 8.0, size=(2, 4000)).astype(np.float32)
                assert scene.on_land(r + pts[0], c + pts[1]).all()


def test_sea_mask_without_owimask_keeps_everything(tmp_path: Path):
    folder = tmp_path / "s"
    folder.mkdir()
    for band in ("VV_dB", "VH_dB"):
        tifffile.imwrite(folder / f"{band}.tif", np.full((300, 700), -20.0, np.float32))
    with open_scene(folder) as scene:
        assert sea_mask(scene, 0, [0, 188], 512).tolist() == [True, True]
        assert sea_mask(scene, 0, [], 512).shape == (0,)


def _row(width: int = 3 * 100 - 2 * 20, tile: int = 100) -> tuple[np.ndarray, np.ndarray]:
    u8 = np.full((2, tile, width), 60, np.uint8)  # dark sea everywhere
    return u8, np.ones((tile, width), bool)


def test_bright_mask_on_crafted_tiles():
    tile, cols = 100, [0, 80, 160]
    u8, valid = _row()
    assert bright_mask(u8, valid, cols, tile, min_u8=100).tolist() == [False] * 3
    assert bright_mask(u8, valid, cols, tile, min_u8=60).tolist() == [True] * 3  # >= passes
    u8[0, 50, 30] = 200  # a ship in tile 0 only
    u8[1, 50, 200] = 255  # bright VH is not the gate's concern
    assert bright_mask(u8, valid, cols, tile, min_u8=150).tolist() == [True, False, False]
    u8[0, 10, 90] = 180  # in the overlap of tiles 0 and 1
    assert bright_mask(u8, valid, cols, tile, min_u8=150).tolist() == [True, True, False]
    u8[0, 99, 259] = 250  # the last pixel of tile 2, but no data there
    valid[99, 259] = False
    assert bright_mask(u8, valid, cols, tile, min_u8=150).tolist() == [True, True, False]
    valid[99, 259] = True
    assert bright_mask(u8, valid, cols, tile, min_u8=150).tolist() == [True, True, True]
    # threshold 0 keeps every tile, 255 only tiles with a saturated valid pixel
    assert bright_mask(u8, valid, cols, tile, min_u8=0).all()
    assert bright_mask(u8, valid, cols, tile, min_u8=255).tolist() == [False] * 3


def test_keep_tiles_counts_land_then_gate(land_scene: Path):
    with open_scene(land_scene) as scene:
        rows = tile_starts(scene.height, TILE, OVERLAP)
        cols = tile_starts(scene.width, TILE, OVERLAP)
        r0 = next(r for r in rows if not sea_mask(scene, r, cols, TILE).all())
        sea = sea_mask(scene, r0, cols, TILE)
        u8 = np.full((2, TILE, scene.width), 60, np.uint8)
        valid = np.ones((TILE, scene.width), bool)
        j = int(np.flatnonzero(sea)[0])
        u8[0, 5, cols[j] + 5] = 220  # one bright pixel in the first sea tile
        counts = PrescreenCounts()
        keep = keep_tiles(scene, u8, valid, r0, cols, TILE, PrescreenConfig(), counts)
        np.testing.assert_array_equal(keep, sea)
        keep = keep_tiles(scene, u8, valid, r0, cols, TILE, PrescreenConfig(min_u8=200), counts)
        assert np.flatnonzero(keep).tolist() == [j]
        n_land = int((~sea).sum())
        assert (counts.land, counts.dark) == (2 * n_land, int(sea.sum()) - 1)
        off = keep_tiles(scene, u8, valid, r0, cols, TILE, PrescreenConfig(skip_land=False))
        assert off.all() and not PrescreenConfig(skip_land=False).active


def test_config_is_checked():
    with pytest.raises(ValueError, match="min_u8"):
        PrescreenConfig(min_u8=256)
    with pytest.raises(ValueError, match="margin"):
        PrescreenConfig(land_margin_px=-1.0)
    assert db_to_u8(-15.0) == 128 and db_to_u8(20.0) == 255 and db_to_u8(-60.0) == 0


def test_prescreen_is_cheap_per_tile(land_scene: Path):
    """Bounds ~20x the measured cost (docs/prescreen.md), loose enough for a loaded machine:
    a 512² tile costs the accelerator ~2.7 ms, so the pre-screen must stay well below."""
    tile, width = 512, 8192
    cols = tile_starts(width, tile, 64)
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 140, (2, tile, width), dtype=np.uint8)
    u8[0, 100, ::700] = 230  # a bright pixel in most tiles: the gate's slower path
    valid = np.ones((tile, width), bool)
    valid[:, :50] = False
    best = min(_timed(lambda: bright_mask(u8, valid, cols, tile, min_u8=200))
               for _ in range(5))
    assert best / len(cols) < 3e-3
    with open_scene(land_scene) as scene:
        cols = tile_starts(scene.width, TILE, OVERLAP)
        best = min(_timed(lambda: sea_mask(scene, 0, cols, TILE)) for _ in range(5))
    assert best / len(cols) < 1e-3


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
