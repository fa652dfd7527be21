"""The fast pack/unpack against finn-plus-driver's own packing, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from sarvessel.runtime.board.packing import (
    UnsupportedTypeError,
    pack,
    pack_tiles,
    packed_bytes,
    parse_datatype,
    unpack,
)

#: (datatype, elements per word) cases: byte-aligned fast paths and bit-level ones.
CASES = [("INT24", 67), ("INT24", 1), ("UINT24", 5), ("INT8", 7), ("UINT8", 2), ("INT16", 3),
         ("UINT16", 4), ("INT32", 3), ("UINT32", 2), ("INT4", 5), ("UINT3", 7), ("INT13", 3),
         ("BIPOLAR", 11), ("BINARY", 16), ("UINT1", 9)]


def _random(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dt = parse_datatype(dtype)
    if dt.bipolar:
        return rng.choice([-1, 1], size=shape).astype(np.int64)
    x = rng.integers(dt.min, dt.max, size=shape, endpoint=True, dtype=np.int64)
    x.reshape(-1)[:2] = [dt.min, dt.max][: x.size]  # the extremes, always
    return x


@pytest.mark.parametrize(("dtype", "k"), CASES)
def test_round_trip(dtype: str, k: int) -> None:
    x = _random(dtype, (2, 3, 4, k), np.random.default_rng(k))
    packed = pack(x, dtype)
    assert packed.dtype == np.uint8 and packed.shape == (2, 3, 4, packed_bytes(k, dtype))
    got = unpack(packed, dtype, k)
    assert got.dtype == parse_datatype(dtype).container
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize(("dtype", "k"), CASES)
def test_matches_finn_plus_driver(dtype: str, k: int) -> None:
    fp = pytest.importorskip(
        "finn_plus_driver.packing",
        reason="finn-plus-driver is not installed here (board env: scripts/board_env.sh)",
    )
    from qonnx.core.datatype import DataType

    x = _random(dtype, (2, 3, k), np.random.default_rng(100 + k))
    # finn-plus-driver's float32 container cannot hold 32-bit extremes: give it native ints
    native = {"INT32": np.int32, "UINT32": np.uint32}.get(dtype, np.float32)
    ref = fp.finnpy_to_packed_bytearray(x.astype(native), DataType[dtype],
                                        reverse_inner=True, reverse_endian=True)
    np.testing.assert_array_equal(pack(x, dtype), ref)
    back = fp.packed_bytearray_to_finnpy(np.ascontiguousarray(ref), DataType[dtype], x.shape,
                                         reverse_inner=True, reverse_endian=True)
    np.testing.assert_array_equal(unpack(ref, dtype, k).astype(np.float32), back)
    # random bytes too (padding bits set): both ignore the padding the same way
    raw = np.random.default_rng(k).integers(0, 256, size=ref.shape, dtype=np.uint8)
    back = fp.packed_bytearray_to_finnpy(raw, DataType[dtype], x.shape,
                                         reverse_inner=True, reverse_endian=True)
    np.testing.assert_array_equal(unpack(raw, dtype, k).astype(np.float32), back)


def test_int24_tile_matches_finn_plus_driver() -> None:
    """The shipped model's output: one 512² tile, INT24 [1, 64, 64, 67] folded to (67, 1)."""
    fp = pytest.importorskip(
        "finn_plus_driver.packing",
        reason="finn-plus-driver is not installed here (board env: scripts/board_env.sh)",
    )
    from qonnx.core.datatype import DataType

    raw = np.random.default_rng(0).integers(0, 256, size=(1, 64, 64, 67, 3), dtype=np.uint8)
    ref = fp.packed_bytearray_to_finnpy(raw, DataType["INT24"], (1, 64, 64, 67, 1),
                                        reverse_inner=True, reverse_endian=True)
    ours = unpack(raw, "INT24", 1)
    np.testing.assert_array_equal(ours.astype(np.float32), ref)


def test_uint8_tile_pack_is_the_bytes() -> None:
    x = np.random.default_rng(1).integers(0, 256, size=(1, 8, 8, 2, 1), dtype=np.uint8)
    out = np.zeros_like(x)
    assert pack(x, "UINT8", out=out) is out
    np.testing.assert_array_equal(out, x)


def test_out_buffers_are_reused() -> None:
    x = _random("INT24", (4, 67), np.random.default_rng(3))
    packed = pack(x, "INT24")
    out = np.empty((4, 67), np.int32)
    assert unpack(packed, "INT24", 67, out=out) is out
    np.testing.assert_array_equal(out, x)
    with pytest.raises(ValueError, match="C-contiguous"):
        unpack(packed, "INT24", 67, out=np.empty((4, 67), np.int64))


def test_errors() -> None:
    with pytest.raises(ValueError, match="do not fit INT24"):
        pack(np.array([1 << 23]), "INT24")
    with pytest.raises(ValueError, match="bytes"):
        unpack(np.zeros((2, 5), np.uint8), "INT24", 2)
    with pytest.raises(UnsupportedTypeError):
        parse_datatype("FLOAT32")
    with pytest.raises(UnsupportedTypeError):
        parse_datatype("INT64")
    assert parse_datatype("DataType['UINT8']") == parse_datatype("UINT8")


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_pack_tiles_is_the_nhwc_transpose(channels: int) -> None:
    tiles = np.random.default_rng(channels).integers(0, 256, size=(3, channels, 16, 8),
                                                     dtype=np.uint8)
    out = np.empty((3, 16, 8, channels), np.uint8)
    pack_tiles(tiles, out)
    np.testing.assert_array_equal(out, tiles.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(out, pack(tiles.transpose(0, 2, 3, 1), "UINT8"))
    with pytest.raises(ValueError, match="C-contiguous"):
        pack_tiles(tiles, np.empty((3, 8, 16, channels), np.uint8))


def test_empty_and_single() -> None:
    assert unpack(np.zeros((0, 3), np.uint8), "INT24", 1).shape == (0, 1)
    assert unpack(pack(np.array([-5]), "INT24"), "INT24", 1).tolist() == [-5]
