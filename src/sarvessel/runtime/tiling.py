"""Tile geometry: pure functions from sizes to windows, no pixels involved.

Edge windows are shifted inward (as SAHI's ``get_slice_bboxes`` does) so that every tile has the
accelerator's fixed shape; a scene smaller than one tile gives one window that the reader pads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """A rectangle of the scene: rows ``row0:row0+height``, columns ``col0:col0+width``."""

    row0: int
    col0: int
    height: int
    width: int

    @property
    def row1(self) -> int:
        return self.row0 + self.height

    @property
    def col1(self) -> int:
        return self.col0 + self.width


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis of ``length`` pixels for tiles of ``tile`` px.

    Consecutive tiles overlap by at least ``overlap`` px; the last tile is shifted back so it ends
    at ``length``. A length shorter than the tile gives ``[0]``.

    >>> tile_starts(1000, 512, 64)
    [0, 448, 488]
    >>> tile_starts(512, 512, 0)
    [0]
    >>> tile_starts(300, 512, 0)
    [0]
    """
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def tile_grid(
    height: int, width: int, *, tile: int, overlap: int = 0
) -> list[list[Window]]:
    """Windows covering a ``height`` × ``width`` scene, as rows of tiles (top to bottom).

    Every window is ``tile`` × ``tile`` except when the scene itself is smaller than a tile; then
    the window is clipped to the scene and the reader pads it.

    >>> [[(w.row0, w.col0) for w in r] for r in tile_grid(1000, 700, tile=512, overlap=64)]
    [[(0, 0), (0, 188)], [(448, 0), (448, 188)], [(488, 0), (488, 188)]]
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"scene size must be positive, got {height} x {width}")
    rows = tile_starts(height, tile, overlap)
    cols = tile_starts(width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    return [[Window(r, c, th, tw) for c in cols] for r in rows]


def iter_windows(height: int, width: int, *, tile: int, overlap: int = 0) -> Iterator[Window]:
    """All windows of :func:`tile_grid`, row-major."""
    for row in tile_grid(height, width, tile=tile, overlap=overlap):
        yield from row


def count_tiles(height: int, width: int, *, tile: int, overlap: int = 0) -> int:
    """Number of tiles :func:`tile_grid` makes (for progress bars and time estimates)."""
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))
