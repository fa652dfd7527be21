"""``/v1/tiles``: a batch of tiles in, detections in tile coordinates out — the on-board
producer's path to the accelerator. The body is the raw array (no JSON, no base64), so the
server costs a copy, not an encode; decoding and inference run off the event loop."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from sarvessel.runtime.backends import BackendKind
from sarvessel.runtime.detector import Detector
from sarvessel.runtime.server.deps import DetectorsDep, MetricsDep, SettingsDep
from sarvessel.runtime.server.errors import UnsupportedMediaType
from sarvessel.runtime.server.inputs import (
    TileDtype,
    decode_tiles,
    parse_shape,
    tile_detections,
)
from sarvessel.runtime.server.models import TileResponse
from sarvessel.runtime.server.runner import DetectorSpec

router = APIRouter(tags=["tiles"])

#: The tile body's content type.
TILE_MEDIA_TYPE = "application/octet-stream"


@router.post(
    "/tiles", response_model=TileResponse,
    summary="detect in a batch of tiles (raw uint8, or float32 dB)",
    description="Body: the C-order array of `shape` and `dtype` (float32 little-endian), "
    f"content type {TILE_MEDIA_TYPE}. uint8 tiles are preprocessed already; float32 tiles "
    "are backscatter in dB, mapped to uint8 as the scene pipeline maps them.",
    openapi_extra={"requestBody": {"required": True,
                                   "content": {TILE_MEDIA_TYPE: {"schema": {
                                       "type": "string", "format": "binary"}}}}},
)
async def detect_tiles(
    request: Request,
    detectors: DetectorsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    shape: Annotated[str, Query(description="B,C,T,T (or C,T,T for one tile)",
                                examples=["8,2,512,512"])],
    dtype: TileDtype = TileDtype.UINT8,
    backend: Annotated[BackendKind | None, Query(description="the default is the server's "
                                                 "--tile-backend")] = None,
) -> JSONResponse:
    if request.headers.get("content-type", "").split(";")[0].strip() != TILE_MEDIA_TYPE:
        raise UnsupportedMediaType(f"tiles are sent as {TILE_MEDIA_TYPE} (the raw array)")
    dims = parse_shape(shape)
    body = await request.body()
    spec = DetectorSpec(backend=backend or settings.tile_backend)

    def run() -> tuple[Detector, list[list[dict]], float]:  # one hop off the event loop
        detector = detectors.get(spec)
        batch, valid = decode_tiles(body, shape=dims, dtype=dtype, channels=detector.channels,
                                    tile_size=detector.tile_size,
                                    max_batch=settings.max_tile_batch)
        t0 = time.perf_counter()
        found = detector.detect(batch)
        dt = time.perf_counter() - t0
        return detector, [tile_detections(d, None if valid is None else valid[i])
                          for i, d in enumerate(found)], dt

    detector, tiles, dt = await run_in_threadpool(run)
    metrics.tile_batch_seconds.labels(detector.name).observe(dt)
    metrics.tiles_done("tile_api", len(tiles))
    metrics.detections_found("tile_api", sum(len(t) for t in tiles))
    # built here, not re-validated against TileResponse (which documents it): the hot path
    return JSONResponse({"backend": detector.name, "infer_ms": dt * 1e3,
                         "tiles": [{"index": i, "detections": t} for i, t in enumerate(tiles)]})
