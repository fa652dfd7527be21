"""Dihedral test-time augmentation: run each tile in several of its 8 flips/rotations and
average the head maps before decoding.

SAR has no preferred "up", so a vessel seen rotated or mirrored is still a vessel; the detectors
are trained on all eight dihedral orientations. A square tile whose side is a multiple of the
stride maps output cells onto output cells exactly under every dihedral transform, so the raw
map of a transformed tile can be transformed back (cells moved, and the DFL sides left, top,
right, bottom permuted) and averaged with the others: one map, decoded once by the shared
:func:`~sarvessel.runtime.post.decode.decode`. Class scores are averaged as probabilities and DFL
distributions as probabilities (their logs are valid logits for the decoder).

Why: on SSDD the averaged map places boxes better (AP50-95 of the shipped W4A4 model 0.593 ->
0.618 with all 8) at n times the inference cost, a trade for ground reprocessing rather than
the power-bound board (model card of ``ssdd_w4a4``; ``sarvessel eval --tta``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["TTA_SETS", "DihedralTTA", "average_views", "restore_raw", "side_order",
           "transform_tiles",
           "with_tta"]

#: Dihedral transforms used for ``--tta n``: 1 none, 2 adds the 180-degree rotation, 4 all
#: rotations, 8 rotations of the tile and of its transpose. Transform ``k`` transposes when
#: ``k & 4``, then rotates by ``(k & 3)`` x 90 degrees counter-clockwise (``np.rot90``).
TTA_SETS: dict[int, tuple[int, ...]] = {1: (0,), 2: (0, 2), 4: (0, 1, 2, 3),
                                        8: (0, 1, 2, 3, 4, 5, 6, 7)}

#: Unit steps (dx, dy) of the DFL sides in decoder order: left, top, right, bottom.
_SIDES = ((-1, 0), (0, -1), (1, 0), (0, 1))


def transform_tiles(x: np.ndarray, k: int) -> np.ndarray:
    """Dihedral transform ``k`` (0..7) of the last two (square) axes of ``x``."""
    if k & 4:
        x = np.swapaxes(x, -1, -2)
    return np.ascontiguousarray(np.rot90(x, k & 3, axes=(-2, -1)))


def side_order(k: int) -> list[int]:
    """For each side (left, top, right, bottom) of the original tile, the side of the tile
    transformed by ``k`` that it becomes."""
    out = []
    for dx, dy in _SIDES:
        v = np.zeros((3, 3), np.uint8)
        v[1 + dy, 1 + dx] = 1
        ty, tx = np.argwhere(transform_tiles(v, k))[0]
        out.append(_SIDES.index((int(tx) - 1, int(ty) - 1)))
    return out


def restore_raw(raw: np.ndarray, k: int, reg_max: int) -> np.ndarray:
    """The raw head map ``[B, 4*reg_max + nc, H, W]`` of a tile transformed by ``k``, expressed
    in the original tile's frame: cells moved back and the DFL sides reordered."""
    y = np.rot90(raw, -(k & 3), axes=(-2, -1))
    if k & 4:
        y = np.swapaxes(y, -1, -2)
    b, _, h, w = y.shape
    dfl = y[:, :4 * reg_max].reshape(b, 4, reg_max, h, w)[:, side_order(k)]
    return np.ascontiguousarray(
        np.concatenate([dfl.reshape(b, 4 * reg_max, h, w), y[:, 4 * reg_max:]], axis=1))


def average_views(
    infer: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, transforms: Sequence[int],
    reg_max: int,
) -> np.ndarray:
    """The raw maps of ``infer`` on the dihedral views ``transforms`` of ``batch`` (square
    tiles ``[B, C, T, T]``), each moved back to the tiles' frame and averaged: class scores as
    probabilities, DFL bins as softmax probabilities. Returned in the raw layout
    ``[B, 4*reg_max + nc, H, W]`` float32 (class logits, DFL log-probabilities), so any decoder
    or the training loop's distillation takes it like one network's map."""
    cls_p, dfl_p = None, None
    for k in transforms:
        raw = restore_raw(infer(transform_tiles(batch, k)), k, reg_max)
        b, _, h, w = raw.shape
        cls = 1.0 / (1.0 + np.exp(-raw[:, 4 * reg_max:]))
        d = raw[:, :4 * reg_max].reshape(b, 4, reg_max, h, w)
        e = np.exp(d - d.max(axis=2, keepdims=True))
        dfl = e / e.sum(axis=2, keepdims=True)
        cls_p = cls if cls_p is None else cls_p + cls
        dfl_p = dfl if dfl_p is None else dfl_p + dfl
    n = float(len(transforms))
    cls_p = np.clip(cls_p / n, 1e-7, 1.0 - 1e-7)
    dfl_log = np.log(np.maximum(dfl_p / n, 1e-12)).reshape(b, 4 * reg_max, h, w)
    return np.concatenate([dfl_log, np.log(cls_p) - np.log1p(-cls_p)],
                          axis=1).astype(np.float32)


class DihedralTTA:
    """A backend that runs ``inner`` on ``n`` dihedral views of each tile (``TTA_SETS[n]``) and
    returns the averaged head map, which the shared post-processing stage decodes.

    inner: a network backend (``infer(batch) -> head map`` and ``metadata``). n: 1, 2, 4 or 8.
    """

    def __init__(self, inner, n: int = 8) -> None:
        if n not in TTA_SETS:
            raise ValueError(f"tta must be one of {sorted(TTA_SETS)}, got {n}")
        if getattr(inner, "metadata", None) is None:
            raise ValueError(f"backend {getattr(inner, 'name', inner)!r} has no raw head map to "
                             "average (test-time augmentation needs a network backend)")
        self.inner = inner
        self.transforms = TTA_SETS[n]
        self.name = f"{inner.name}+tta{n}"
        self.channels = inner.channels
        self.tile_size = inner.tile_size
        self.metadata = inner.metadata
        self.model_dir = getattr(inner, "model_dir", None)
        self.fingerprint = f"{getattr(inner, 'fingerprint', inner.name)}+tta{n}"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The averaged raw map of ``batch``, in the raw layout every decoder takes."""
        if len(self.transforms) == 1:
            return self.inner.infer(batch)
        return average_views(self.inner.infer, batch, self.transforms, self.metadata.reg_max)


def with_tta(backend, n: int):
    """``backend`` itself for ``n == 1``, else :class:`DihedralTTA` over ``n`` views of it."""
    return backend if n == 1 else DihedralTTA(backend, n)
