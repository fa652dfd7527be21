"""Tile geometry, without pixels."""

from __future__ import annotations

import pytest

from sarvessel.runtime.tiling import count_tiles, tile_grid, tile_starts


@pytest.mark.parametrize("length", [1, 100, 511, 512, 513, 1000, 4096, 29400])
@pytest.mark.parametrize(("tile", "overlap"), [(512, 0), (512, 64), (800, 0), (256, 200)])
def test_tiles_cover_every_pixel_with_fixed_size_and_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    size = min(tile, length)
    assert starts[-1] + size == length  # the last tile is shifted inward to end at the edge
    assert starts == sorted(set(starts))
    for a, b in zip(starts, starts[1:], strict=False):
        assert b - a <= tile - overlap  # overlap at least as asked, so no gap
        assert b > a


def test_grid_is_rows_of_equal_windows():
    grid = tile_grid(1300, 900, tile=512, overlap=64)
    assert len(grid) == 3 and all(len(r) == 2 for r in grid)
    assert {(w.height, w.width) for r in grid for w in r} == {(512, 512)}
    assert [r[0].row0 for r in grid] == [0, 448, 788]
    assert [w.col0 for w in grid[0]] == [0, 388]
    assert count_tiles(1300, 900, tile=512, overlap=64) == 6


def test_scene_smaller_than_tile_gives_one_clipped_window():
    (row,) = tile_grid(100, 300, tile=512)
    (w,) = row
    assert (w.row0, w.col0, w.height, w.width) == (0, 0, 100, 300)


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (512, 512), (512, -1)])
def test_bad_geometry_is_rejected(tile, overlap):
    with pytest.raises(ValueError, match="tile|overlap"):
        tile_starts(1000, tile, overlap)
