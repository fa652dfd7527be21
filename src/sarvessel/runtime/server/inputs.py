"""What comes in, checked before anything runs: scene paths under the data roots, uploaded band
files, and tile batches.

Each check raises a :class:`~sarvessel.runtime.server.errors.ServerError` whose message names
what was wrong in the client's own terms (the path it sent, the shape it declared), never a
server path or a traceback. No web framework here: these are plain functions on bytes, paths
and file objects, tested without a server.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sarvessel.runtime.detections import Detections
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io.scene import XVIEW3_AUX, XVIEW3_BANDS, open_scene
from sarvessel.runtime.preprocess import BATHYMETRY, DEFAULT_BANDS, preprocess, valid_mask
from sarvessel.runtime.server.errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    Unprocessable,
)

log = logging.getLogger(__name__)

#: First four bytes of a classic TIFF and a BigTIFF, little- and big-endian.
TIFF_MAGIC: tuple[bytes, ...] = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Upload form fields that carry a band file: the xView3 bands and auxiliary rasters by name,
#: or ``scene`` for one multi-band GeoTIFF.
SCENE_FIELD = "scene"
BAND_FIELDS: tuple[str, ...] = (*XVIEW3_BANDS, *XVIEW3_AUX)
#: A scene id a client may choose (it names the output files).
SCENE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_COPY_CHUNK = 1 << 20


class TileDtype(str, Enum):
    """Pixel types the tile endpoint takes."""

    UINT8 = "uint8"  #: preprocessed tiles, what every backend consumes
    FLOAT32 = "float32"  #: backscatter in dB (little-endian), mapped as the pipeline maps it


# -- scene paths ------------------------------------------------------------------------------


def resolve_scene_path(raw: str, roots: Sequence[Path]) -> Path:
    """The real path of the scene ``raw`` names (absolute, or relative to a data root), which
    must lie under one of ``roots`` after ``..`` and symbolic links are resolved.

    Raises :class:`Forbidden` for anything outside the roots (a ``../`` climb, a link leading
    out, an absolute path elsewhere), :class:`Unprocessable` for a path that does not exist.
    """
    if not roots:
        raise Forbidden("this server takes uploads only (it was started without --data-root)")
    if "\x00" in raw:
        raise Unprocessable("scene path contains a NUL character")
    given = Path(raw)
    candidates = [given] if given.is_absolute() else [root / given for root in roots]
    inside: list[Path] = []
    for cand in candidates:
        real = Path(os.path.realpath(cand))
        if any(real == root or root in real.parents for root in roots):
            inside.append(real)
    if not inside:
        raise Forbidden(f"scene path {raw!r} lies outside the server's data roots")
    for real in inside:
        if real.exists():
            return real
    raise Unprocessable(f"scene path {raw!r}: no such scene folder or file under the data roots")


# -- uploads ----------------------------------------------------------------------------------


def check_scene_id(scene_id: str) -> str:
    """``scene_id`` if it may name output files (letters, digits, ``_.-``; at most 128)."""
    if not SCENE_ID.fullmatch(scene_id):
        raise Unprocessable(f"scene_id {scene_id!r} must be 1-128 letters, digits, '_', '-' or "
                            "'.', starting with a letter or digit")
    return scene_id


def check_upload_fields(names: Sequence[str]) -> None:
    """The file fields of an upload: ``VV_dB`` and ``VH_dB`` (plus optional auxiliary rasters),
    or one ``scene`` GeoTIFF."""
    unknown = [n for n in names if n not in (*BAND_FIELDS, SCENE_FIELD)]
    if unknown:
        raise Unprocessable(f"unknown upload field(s) {', '.join(map(repr, unknown))}; send "
                            f"{' and '.join(XVIEW3_BANDS)} (optionally "
                            f"{', '.join(XVIEW3_AUX)}) or one {SCENE_FIELD!r} GeoTIFF")
    if len(set(names)) != len(names):
        raise Unprocessable("an upload field is repeated")
    if SCENE_FIELD in names:
        if len(names) != 1:
            raise Unprocessable(f"send either one {SCENE_FIELD!r} GeoTIFF or band files, "
                                "not both")
        return
    missing = [b for b in XVIEW3_BANDS if b not in names]
    if missing:
        raise Unprocessable(f"upload lacks band file(s) {', '.join(missing)}"
                            if names else "upload holds no band file")


def check_tiff_magic(name: str, head: bytes) -> None:
    """Refuse a file whose first bytes are not a TIFF's (checked before it is stored)."""
    if head[:4] not in TIFF_MAGIC:
        raise Unprocessable(f"upload {name!r} is not a TIFF (it starts with {head[:4]!r}, a "
                            "TIFF with II*\\0 or MM\\0*)")


def store_upload(files: Mapping[str, BinaryIO], *, dest: Path, scene_id: str) -> Path:
    """Write uploaded band files as a scene under ``dest`` atomically and check it opens.

    ``files``: field name → readable file (:func:`check_upload_fields` names). Files go to a
    temporary sibling folder, are fsynced, and the folder is renamed to ``dest`` only once the
    scene opens and every TIFF is whole, so ``dest`` holds a complete scene or nothing.
    Returns the scene path (a folder, or the one GeoTIFF).
    """
    check_upload_fields(list(files))
    check_scene_id(scene_id)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if SCENE_FIELD in files:
            tmp.mkdir(parents=True)
            rel = Path(f"{scene_id}.tif")
            _copy_checked(SCENE_FIELD, files[SCENE_FIELD], tmp / rel)
        else:
            rel = Path(scene_id)
            (tmp / rel).mkdir(parents=True)
            for name, fh in files.items():
                _copy_checked(name, fh, tmp / rel / f"{name}.tif")
        _fsync_dir(tmp / rel if rel.suffix == "" else tmp)
        check_scene(tmp / rel, label="upload")
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest / rel


def check_scene(path: Path, *, label: str) -> tuple[str, int, int]:
    """(scene id, height, width) of a scene that opens and whose TIFFs are whole; a scene that
    does not is :class:`Unprocessable`, with the file named relative to the scene."""
    try:
        with open_scene(path) as scene:
            return scene.scene_id, scene.height, scene.width
    except SarvesselError as exc:
        msg = str(exc).replace(str(path.parent) + os.sep, "")  # no server paths in replies
        raise Unprocessable(f"{label}: {msg}") from exc


def _copy_checked(name: str, src: BinaryIO, dst: Path) -> None:
    src.seek(0)
    check_tiff_magic(name, src.read(4))
    src.seek(0)
    with dst.open("wb") as out:
        shutil.copyfileobj(src, out, _COPY_CHUNK)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- tiles ------------------------------------------------------------------------------------


def parse_shape(text: str) -> tuple[int, ...]:
    """A declared shape ``"B,C,T,T"`` (or ``"C,T,T"`` for one tile) as integers.

    >>> parse_shape("8,2,512,512"), parse_shape("2, 512, 512")
    ((8, 2, 512, 512), (2, 512, 512))
    """
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError as exc:
        raise Unprocessable(f"shape {text!r} must be comma-separated integers, e.g. "
                            "8,2,512,512") from exc
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise Unprocessable(f"shape {text!r} must be B,C,T,T or C,T,T with positive sizes")
    return shape


def decode_tiles(body: bytes, *, shape: tuple[int, ...], dtype: TileDtype, channels: int,
                 tile_size: int, max_batch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The uint8 batch ``[B, C, T, T]`` of a tile request, and where its pixels hold data
    (``bool [B, T, T]``, float input only; None for uint8).

    The body is the C-order array of the declared ``shape`` and ``dtype``; its length must
    match exactly. float32 tiles are backscatter in dB and go through
    :func:`~sarvessel.runtime.preprocess.preprocess` with the bands the pipeline uses (VV, VH,
    then bathymetry for three channels), nodata (−32768) and NaN included.
    """
    if len(shape) == 3:
        shape = (1, *shape)
    b, c, h, w = shape
    if b > max_batch:
        raise PayloadTooLarge(f"{b} tiles in one request; at most {max_batch}")
    if c != channels or h != tile_size or w != tile_size:
        raise Unprocessable(f"shape {list(shape)} does not fit the detector, which takes "
                            f"[B, {channels}, {tile_size}, {tile_size}]")
    np_dtype = np.dtype(np.uint8) if dtype is TileDtype.UINT8 else np.dtype("<f4")
    want = b * c * h * w * np_dtype.itemsize
    if len(body) != want:
        raise BadRequest(f"body holds {len(body)} bytes; shape {list(shape)} of {dtype.value} "
                         f"needs {want}")
    arr = np.frombuffer(body, np_dtype).reshape(shape)
    if dtype is TileDtype.UINT8:
        return arr, None
    ranges = DEFAULT_BANDS[:c] if c <= len(DEFAULT_BANDS) else (*DEFAULT_BANDS, BATHYMETRY)
    if len(ranges) != c:
        raise Unprocessable(f"float32 tiles take at most {len(DEFAULT_BANDS) + 1} channels")
    valid = valid_mask(arr[:, 0])
    for k in range(1, min(c, len(DEFAULT_BANDS))):
        valid &= valid_mask(arr[:, k])
    return preprocess(arr, ranges), valid


def tile_detections(dets: Detections, valid: np.ndarray | None) -> list[dict]:
    """One tile's detections as JSON-able dicts (tile pixels), without those on nodata pixels
    (as the pipeline drops them) when ``valid`` is known."""
    if valid is not None and len(dets):
        r = np.clip(dets.rows.astype(np.intp), 0, valid.shape[0] - 1)
        c = np.clip(dets.cols.astype(np.intp), 0, valid.shape[1] - 1)
        dets = dets.select(valid[r, c])
    out = []
    for i in range(len(dets)):
        length = float(dets.lengths_px[i])
        out.append({"row": float(dets.rows[i]), "col": float(dets.cols[i]),
                    "score": float(dets.scores[i]), "class_id": int(dets.classes[i]),
                    "box": [float(v) for v in dets.boxes[i]],
                    "length_px": length if np.isfinite(length) else None})
    return out
