"""Generated scenes for benchmarks: sizes in megapixels at the xView3 aspect, made once and
reused (a scene folder with both bands is not generated again)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["XVIEW3_SHAPE", "ensure_scene", "scene_id", "scene_shape"]

#: The average xView3 scene, (rows, columns): 24,400 × 29,400 px = 717 MPx. A size of 700 MPx
#: means this scene.
XVIEW3_SHAPE = (24_400, 29_400)


def scene_shape(mpx: float) -> tuple[int, int]:
    """(rows, columns) of a ``mpx`` megapixel scene at the xView3 aspect; 700 gives the average
    xView3 scene exactly.

    >>> scene_shape(700), scene_shape(10)
    ((24400, 29400), (2881, 3471))
    """
    if mpx <= 0:
        raise ValueError(f"scene size must be > 0 MPx, got {mpx}")
    if mpx == 700:
        return XVIEW3_SHAPE
    s = math.sqrt(mpx * 1e6 / (XVIEW3_SHAPE[0] * XVIEW3_SHAPE[1]))
    return round(XVIEW3_SHAPE[0] * s), round(XVIEW3_SHAPE[1] * s)


def scene_id(height: int, width: int, seed: int) -> str:
    """The synthesizer's default id of a scene (``synth{seed:04d}{h}x{w}v``)."""
    return f"synth{seed:04d}{height}x{width}v"


def ensure_scene(root: Path, *, height: int, width: int, seed: int) -> Path:
    """The folder of the generated scene ``height`` × ``width`` with ``seed`` under ``root``,
    generating it first if it is not there."""
    from sarvessel.synth.generate import synthesize_scene

    sid = scene_id(height, width, seed)
    folder = Path(root) / sid
    # the shoreline is written after every raster: a scene whose generation was killed has none
    if (Path(root) / "shoreline" / f"{sid}_shoreline.npy").is_file():
        return folder
    log.info("generating %s (%.0f MPx) under %s", folder.name, height * width / 1e6, root)
    return synthesize_scene(root, height=height, width=width, seed=seed).scene_dir
