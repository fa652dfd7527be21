"""Dihedral test-time augmentation: views are mapped back onto the original tile exactly, and
the averaged map decodes like a single view for a detector that sees every orientation alike."""

from __future__ import annotations

import numpy as np
import pytest

from sarvessel.runtime.backends import BackendKind, make_backend
from sarvessel.runtime.backends.tta import (
    TTA_SETS,
    DihedralTTA,
    restore_raw,
    side_order,
    transform_tiles,
)
from sarvessel.runtime.contract import ModelMetadata
from sarvessel.runtime.detector import compose
from sarvessel.runtime.errors import ModelError
from sarvessel.runtime.post.decode import decode

TILE, STRIDE, REG_MAX = 64, 8, 16
#: A ship whose box is off-centre in its anchor cell: left 1.875, top 1.0, right 2.125 and
#: bottom 0.75 strides from the anchor (28, 28), so any wrong side order moves the box.
SHIP = (13, 20, 45, 34)  # x1, y1, x2, y2


class EquivariantNet:
    """A stand-in network that reads the bright rectangle of each tile and emits the raw map an
    ideal detector would: one confident cell (the one holding the box centre) with DFL
    distributions whose expectations are the exact side distances. It treats every orientation
    alike, so all dihedral views must decode to the same box."""

    name = "toy"
    channels = 1
    tile_size = TILE

    def __init__(self) -> None:
        self.metadata = ModelMetadata(name="toy", tile_size=TILE, channels=1, stride=STRIDE,
                                      reg_max=REG_MAX, nc=1, conf_threshold=0.5)
        self.calls = 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        n = TILE // STRIDE
        raw = np.full((len(batch), 4 * REG_MAX + 1, n, n), -10.0, np.float32)
        for i, tile in enumerate(batch):
            ys, xs = np.nonzero(tile[0] > 100)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            cx, cy = int((x1 + x2) / 2 // STRIDE), int((y1 + y2) / 2 // STRIDE)
            ax, ay = (cx + 0.5) * STRIDE, (cy + 0.5) * STRIDE
            for side, dist in enumerate(((ax - x1), (ay - y1), (x2 - ax), (y2 - ay))):
                d = dist / STRIDE
                lo = int(np.floor(d))
                p = np.full(REG_MAX, 1e-9)
                p[lo], p[lo + 1] = max(1.0 - (d - lo), 1e-9), max(d - lo, 1e-9)
                raw[i, side * REG_MAX:(side + 1) * REG_MAX, cy, cx] = np.log(p)
            raw[i, 4 * REG_MAX, cy, cx] = 5.0
        return raw

    def decode_raw(self, raw: np.ndarray, batch: np.ndarray):
        """What the post stage does with this map (decode only)."""
        return decode(raw, stride=STRIDE, reg_max=REG_MAX, conf_threshold=0.5,
                      iou_threshold=0.5)


def _tile() -> np.ndarray:
    t = np.full((1, 1, TILE, TILE), 20, np.uint8)
    x1, y1, x2, y2 = SHIP
    t[0, 0, y1:y2, x1:x2] = 200
    return t


def test_side_order_of_flips_and_rotations() -> None:
    assert side_order(0) == [0, 1, 2, 3]
    assert side_order(2) == [2, 3, 0, 1]  # 180 degrees: left <-> right, top <-> bottom
    assert side_order(4) == [1, 0, 3, 2]  # transpose: left <-> top, right <-> bottom
    assert side_order(1) == [3, 0, 1, 2]  # 90 degrees counter-clockwise: left becomes bottom
    assert sorted(tuple(side_order(k)) for k in range(8)) == sorted(
        {tuple(side_order(k)) for k in range(8)})  # eight distinct permutations


def test_every_view_decodes_back_to_the_same_box() -> None:
    net, tile = EquivariantNet(), _tile()
    (ref,) = net.decode_raw(net.infer(tile), tile)
    np.testing.assert_allclose(ref.boxes, [[SHIP[1], SHIP[0], SHIP[3], SHIP[2]]], atol=1e-3)
    for k in range(8):
        view = transform_tiles(tile, k)
        assert not np.array_equal(view, tile) or k == 0
        (d,) = net.decode_raw(restore_raw(net.infer(view), k, REG_MAX), tile)
        np.testing.assert_allclose(d.boxes, ref.boxes, atol=1e-3, err_msg=f"view {k}")
        assert d.scores[0] == pytest.approx(ref.scores[0])


@pytest.mark.parametrize("n", sorted(TTA_SETS))
def test_tta_backend_averages_n_views(n: int) -> None:
    net, tile = EquivariantNet(), _tile()
    tta = DihedralTTA(net, n)
    (d,) = net.decode_raw(tta.infer(tile), tile)
    assert net.calls == n and tta.name == f"toy+tta{n}"
    np.testing.assert_allclose(d.boxes, [[SHIP[1], SHIP[0], SHIP[3], SHIP[2]]], atol=1e-3)
    assert d.scores[0] == pytest.approx(1 / (1 + np.exp(-5.0)), rel=1e-5)


def test_tta_averages_probabilities_not_logits() -> None:
    net = EquivariantNet()
    raws = {0: np.zeros((1, 4 * REG_MAX + 1, 8, 8), np.float32)}
    raws[2] = raws[0].copy()
    raws[0][:, -1] = 4.0   # p = 0.982
    raws[2][:, -1] = -4.0  # p = 0.018 (after restoring: same value everywhere)
    net.infer = lambda b: raws[0] if np.array_equal(b, base) else raws[2]  # type: ignore
    base = np.zeros((1, 1, TILE, TILE), np.uint8)
    base[0, 0, 0, 0] = 1  # makes the 180-degree view differ from the tile
    out = DihedralTTA(net, 2).infer(base)
    np.testing.assert_allclose(out[:, -1], 0.0, atol=1e-5)  # logit(mean p) = logit(0.5)
    np.testing.assert_allclose(np.exp(out[:, :REG_MAX]).sum(axis=1), 1.0, rtol=1e-5)


def test_bad_tta_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="tta must be one of"):
        DihedralTTA(EquivariantNet(), 3)
    with pytest.raises(ValueError, match="no raw head map"):
        DihedralTTA(make_backend(BackendKind.CFAR), 2)
    with pytest.raises(ModelError, match="network backend"):
        make_backend(BackendKind.CFAR, tta=2)


def test_make_backend_wraps_the_shipped_scene_model() -> None:
    backend = make_backend(BackendKind.AUTO, tta=4, threads=1)
    assert isinstance(backend, DihedralTTA) and backend.name == "onnx+tta4"
    tiles = np.zeros((2, backend.channels, backend.tile_size, backend.tile_size), np.uint8)
    tiles[1, :, 200:210, 300:330] = 250  # a bright target on an empty (0 dB) sea
    raw = backend.infer(tiles)
    assert raw.shape == (2, 4 * 16 + 3, 64, 64) and np.isfinite(raw).all()
    plain = backend.inner.infer(tiles)
    # averaging views keeps the map close to the plain one where the model is confident
    assert np.abs(raw[:, -3:] - plain[:, -3:]).mean() < 1.0
    assert len(compose(backend).detect(tiles)) == 2
