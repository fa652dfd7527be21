"""Fast packing of the accelerator's I/O buffers: host tiles in, integer accumulators out.

A FINN accelerator streams each tensor's innermost (folded) dimension as one word of
``k * bits`` bits, padded to whole bytes. The driver packs with ``reverse_inner=True,
reverse_endian=True`` (finn-plus-driver 1.6.1, ``FINNDMAOverlay.pack_input`` /
``unpack_output``), which works out to: element ``i`` of a word occupies bits
``[i*bits, (i+1)*bits)`` of the word, and the word is stored little-endian, padding in the high
bits of the last byte. For byte-aligned types (8, 16, 24, 32 bit) element ``i`` is simply bytes
``[i*n, (i+1)*n)``, little-endian, two's complement for signed types.

finn-plus-driver's ``packed_bytearray_to_finnpy`` unpacks INT24 bit by bit (``np.unpackbits``,
a 32-bit bit array per value, ``np.packbits`` again): 31.5 ms per 512² tile on an x86 core,
against a budget of ~2.75 ms per tile for everything the ARM cores do at the accelerator's
rate. :func:`unpack` does the same in two vectorised passes (an unaligned 4-byte strided view
shifted left, then arithmetic-shifted right) and returns ``int32`` rather than ``float32``; the
results are bit-for-bit those of finn-plus-driver (tests/runtime/board/test_packing.py compares
them, padding bits included). :func:`pack_tiles` is the input side for uint8 tiles.
Timings: ``scripts/bench_board_io.py``.

>>> import numpy as np
>>> acc = np.array([[-1, 2, -8388608, 8388607]], dtype=np.int32)
>>> packed = pack(acc, "INT24")
>>> packed.shape
(1, 12)
>>> unpack(packed, "INT24", 4).tolist()
[[-1, 2, -8388608, 8388607]]
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import numpy as np

__all__ = ["IntType", "parse_datatype", "packed_bytes", "pack", "unpack", "pack_tiles",
           "UnsupportedTypeError"]

_DTYPE_RE = re.compile(r"^(?:DataType\[['\"]?)?(UINT|INT)([1-9][0-9]?)(?:['\"]?\])?$")
_ONE_BIT_RE = re.compile(r"^(?:DataType\[['\"]?)?(BIPOLAR|BINARY)(?:['\"]?\])?$")


class UnsupportedTypeError(ValueError):
    """A FINN datatype this module does not pack (only integer, BINARY and BIPOLAR types)."""


@dataclass(frozen=True)
class IntType:
    """A FINN integer datatype: ``bits`` wide, ``signed`` two's complement; ``bipolar`` maps
    bit 0 to -1 and bit 1 to +1 (FINN's BIPOLAR)."""

    name: str
    bits: int
    signed: bool
    bipolar: bool = False

    @property
    def min(self) -> int:
        """Smallest value the type holds."""
        if self.bipolar:
            return -1
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        """Largest value the type holds."""
        if self.bipolar:
            return 1
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def byte_aligned(self) -> bool:
        """Whether each element is a whole number of bytes (the fast paths)."""
        return not self.bipolar and self.bits % 8 == 0

    @property
    def container(self) -> np.dtype:
        """The numpy dtype :func:`unpack` returns: int32, or int64 for UINT32 and wider."""
        return np.dtype(np.int32) if self.max <= np.iinfo(np.int32).max else np.dtype(np.int64)


def parse_datatype(name: str | IntType) -> IntType:
    """Parse ``"INT24"``, ``"UINT8"``, ``"BIPOLAR"``, ``"BINARY"`` or the driver's
    ``"DataType['INT24']"`` form (widths 1..32)."""
    if isinstance(name, IntType):
        return name
    text = str(name).strip()
    m = _DTYPE_RE.match(text)
    if m:
        bits = int(m.group(2))
        if not 1 <= bits <= 32:
            raise UnsupportedTypeError(f"{text}: only widths 1..32 are packed here")
        return IntType(f"{m.group(1)}{bits}", bits, m.group(1) == "INT")
    m = _ONE_BIT_RE.match(text)
    if m:
        return IntType(m.group(1), 1, False, bipolar=m.group(1) == "BIPOLAR")
    raise UnsupportedTypeError(f"{text!r} is not a FINN integer datatype this runtime packs")


def packed_bytes(elements: int, dtype: str | IntType) -> int:
    """Bytes of one packed word of ``elements`` values: ``ceil(elements * bits / 8)``."""
    dt = parse_datatype(dtype)
    return -(-elements * dt.bits // 8)


def pack(folded: np.ndarray, dtype: str | IntType, *, out: np.ndarray | None = None,
         check: bool = True) -> np.ndarray:
    """Pack the innermost dimension of ``folded`` (integers, any shape ``[..., k]``) into bytes.

    Returns ``uint8 [..., ceil(k*bits/8)]``, as finn-plus-driver's
    ``finnpy_to_packed_bytearray(folded, dtype, reverse_inner=True, reverse_endian=True)``.
    out: an array of that shape to write into (e.g. the DMA buffer), the default allocates.
    check: raise ValueError when a value does not fit ``dtype`` (the default); False skips
    the range pass on the hot path when the caller knows the values fit (uint8 tiles as UINT8).
    """
    dt = parse_datatype(dtype)
    x = np.asarray(folded)
    if x.ndim == 0:
        x = x.reshape(1)
    k = x.shape[-1]
    nbytes = packed_bytes(k, dt)
    shape = (*x.shape[:-1], nbytes)
    if out is None:
        out = np.empty(shape, dtype=np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous uint8 {shape}, got {out.dtype} {out.shape}")
    if check and x.size:
        lo, hi = x.min(), x.max()
        if lo < dt.min or hi > dt.max or (dt.bipolar and np.any(x == 0)):
            raise ValueError(f"values {lo}..{hi} do not fit {dt.name}")
    if dt.byte_aligned:
        n = dt.bits // 8
        if x.dtype == np.uint8 and n == 1:  # UINT8 tiles: a copy, nothing to encode
            np.copyto(out, x)
            return out
        words = x.astype("<i8" if dt.bits == 32 and not dt.signed else "<i4", copy=False)
        le = np.ascontiguousarray(words).view(np.uint8).reshape(*x.shape, words.itemsize)
        np.copyto(out.reshape(*x.shape, n), le[..., :n])
        return out
    # sub-byte and odd widths: little-endian bit order, element 0 in the lowest bits
    vals = (x.astype(np.int64) + 1) // 2 if dt.bipolar else x.astype(np.int64)
    vals = vals & ((1 << dt.bits) - 1)
    shifts = np.arange(dt.bits, dtype=np.int64)
    bits = ((vals[..., None] >> shifts) & 1).astype(np.uint8).reshape(*x.shape[:-1], k * dt.bits)
    pad = nbytes * 8 - k * dt.bits
    if pad:
        bits = np.concatenate([bits, np.zeros((*x.shape[:-1], pad), np.uint8)], axis=-1)
    np.copyto(out, np.packbits(bits, axis=-1, bitorder="little"))
    return out


def unpack(packed: np.ndarray, dtype: str | IntType, elements: int, *,
           out: np.ndarray | None = None) -> np.ndarray:
    """Unpack ``uint8 [..., nbytes]`` words into ``elements`` integers each: ``[..., elements]``.

    The inverse of :func:`pack`; equals finn-plus-driver's
    ``packed_bytearray_to_finnpy(packed, dtype, (..., elements), reverse_inner=True,
    reverse_endian=True)`` but as integers (``int32``; ``int64`` for UINT32) rather than
    float32. out: a C-contiguous array of that shape and dtype to write into (reused scratch on
    the hot path); the default allocates.
    """
    dt = parse_datatype(dtype)
    buf = np.asarray(packed)
    if buf.dtype != np.uint8 or buf.ndim == 0:
        raise ValueError(f"packed must be a uint8 array with a byte axis, got {buf.dtype}")
    nbytes = packed_bytes(elements, dt)
    if buf.shape[-1] != nbytes:
        raise ValueError(f"{elements} x {dt.name} pack into {nbytes} bytes, "
                         f"the buffer's last axis has {buf.shape[-1]}")
    shape = (*buf.shape[:-1], elements)
    if out is None:
        out = np.empty(shape, dtype=dt.container)
    elif out.shape != shape or out.dtype != dt.container or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous {dt.container} {shape}")
    if dt.byte_aligned:
        _unpack_bytes(np.ascontiguousarray(buf), dt, elements, out)
        return out
    bits = np.unpackbits(buf, axis=-1, bitorder="little")[..., : elements * dt.bits]
    bits = bits.reshape(*shape, dt.bits).astype(np.int64)
    vals = (bits << np.arange(dt.bits, dtype=np.int64)).sum(axis=-1)
    if dt.bipolar:
        vals = 2 * vals - 1
    elif dt.signed:
        vals = vals - ((vals >> (dt.bits - 1)) << dt.bits)
    np.copyto(out, vals, casting="unsafe")
    return out


def _unpack_bytes(buf: np.ndarray, dt: IntType, elements: int, out: np.ndarray) -> None:
    """Byte-aligned unpack: views for 8/16/32 bit, a 3-into-4 byte copy and a shift for 24."""
    if sys.byteorder != "little":  # pragma: no cover - the KV260 and x86 hosts are little-endian
        raise UnsupportedTypeError("the byte-aligned unpack assumes a little-endian host")
    n = dt.bits // 8
    lead = buf.shape[:-1]
    if n == 3:
        _unpack_24(buf.reshape(-1), dt.signed, out.reshape(-1))
        return
    code = {1: "i1", 2: "<i2", 4: "<i4"}[n]
    if not dt.signed:
        code = code.replace("i", "u")
    np.copyto(out, buf.view(code).reshape(*lead, elements), casting="unsafe")


def _unpack_24(flat: np.ndarray, signed: bool, out: np.ndarray) -> None:
    """3-byte little-endian words to int32 in two passes, no per-element Python.

    Value ``i`` is bytes ``[3i, 3i+3)``; read bytes ``[3i, 3i+4)`` as one unaligned
    little-endian uint32 (a strided view, no copy): its low 24 bits are the value, its top byte
    belongs to value ``i+1``. Shifting left by 8 drops that byte, and shifting back right by 8
    (arithmetic for INT24) sign-extends. The last value has no fourth byte to borrow and is done
    alone. A copy of each 3 bytes into a 4-byte word took ~2 ms per 512² tile, this ~0.15 ms.
    """
    total = out.size
    if total == 0:
        return
    u32 = out.view(np.uint32)
    if total > 1:
        words = np.ndarray((total - 1,), dtype="<u4", buffer=flat, strides=(3,))
        np.left_shift(words, 8, out=u32[:-1])
    last = np.zeros(4, np.uint8)
    last[1:] = flat[-3:]
    u32[-1] = last.view("<u4")[0]
    if signed:
        np.right_shift(out, 8, out=out)
    else:
        np.right_shift(u32, 8, out=u32)


def pack_tiles(batch: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write host tiles ``uint8 [B, C, T, T]`` (NCHW) into ``out``, ``uint8 [B, T, T, C]``
    (NHWC, e.g. a view of the DMA buffer): the UINT8 input's fold and pack, which for one byte
    per element is only this transpose. Returns ``out``.

    numpy's transpose copy with C=2 innermost ran at ~1.7 ms per 512² tile; two channels are
    interleaved here as one uint16 per pixel (~0.06 ms), others by one strided copy per channel.
    """
    b, c, h, w = batch.shape
    if out.shape != (b, h, w, c) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous uint8 {(b, h, w, c)}, got "
                         f"{out.dtype} {out.shape}")
    if batch.dtype != np.uint8:
        raise ValueError(f"tiles must be uint8, got {batch.dtype}")
    if c == 1:
        np.copyto(out.reshape(b, h, w), batch.reshape(b, h, w))
    elif c == 2 and sys.byteorder == "little":
        pair = out.view("<u2").reshape(b, h, w)
        np.left_shift(batch[:, 1], 8, out=pair, dtype=np.uint16)
        np.bitwise_or(pair, batch[:, 0], out=pair, dtype=np.uint16)
    else:
        for ch in range(c):
            out[..., ch] = batch[:, ch]
    return out
