"""Request and response bodies of the HTTP API (pydantic), kept apart from what is stored.

As in the FastAPI full-stack template: what a client may send (:class:`JobCreate`,
:class:`JobOptions`; unknown keys refused), what is stored
(:class:`~sarvessel.runtime.server.jobs.JobRecord`, a dataclass the store owns) and what a
client is shown (:class:`JobPublic`, built by :func:`job_public`) are separate models, so a
stored field never leaks by accident (the server's own paths stay private).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sarvessel.runtime.backends import BackendKind
from sarvessel.runtime.backends.tta import TTA_SETS
from sarvessel.runtime.detect import POWER_PNG, output_paths
from sarvessel.runtime.pipeline import PipelineConfig
from sarvessel.runtime.power import DEFAULT_WINDOW_S
from sarvessel.runtime.server.jobs import JobRecord, JobState

#: Result kinds a finished job serves, and their media types.
RESULT_TYPES: dict[str, str] = {"csv": "text/csv", "geojson": "application/geo+json",
                                "png": "image/png", "summary": "application/json",
                                "power": "image/png"}
ResultKind = Literal["csv", "geojson", "png", "summary", "power"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobOptions(_Strict):
    """How a scene job runs. Every field is optional; the defaults are ``sarvessel detect``'s."""

    backend: BackendKind = Field(BackendKind.AUTO, description="tile detector: auto (fpga "
                                 "on a board with a deploy package, else the server's model, "
                                 "else CFAR), onnx, sim, fpga, cfar or noop")
    conf_threshold: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="score threshold; the default is the model's own")
    iou_threshold: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="NMS IoU threshold within a tile; the default is the model's own")
    tta: int = Field(1, description=f"dihedral views per tile, one of {sorted(TTA_SETS)} "
                     "(network backends only)")
    second_stage: bool = Field(True, description="run the refiner/rescorer the model names")
    overlap: Annotated[int, Field(ge=0)] | None = Field(
        None, description="tile overlap (px); the default is 64 or half a small tile")
    batch_size: Annotated[int, Field(ge=1, le=256)] = Field(
        PipelineConfig.batch_size, description="tiles per backend call")
    gate_db: Annotated[float, Field(ge=-50, le=20)] | None = Field(
        None, description="skip tiles whose brightest VV pixel is under this many dB (as "
        "`detect --gate-db`); the default is off")
    power_budget_w: Annotated[float, Field(gt=0)] | None = Field(
        None, description="keep the moving average of measured power at or under this many "
        "watts by pausing between backend calls (the power governor); needs a power sensor")
    power_window_s: Annotated[float, Field(gt=0)] = Field(
        DEFAULT_WINDOW_S, description="moving-average window of the power budget (s)")

    @field_validator("tta")
    @classmethod
    def _tta(cls, v: int) -> int:
        if v not in TTA_SETS:
            raise ValueError(f"tta must be one of {sorted(TTA_SETS)}")
        return v

    @field_validator("power_budget_w", "power_window_s")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class JobCreate(_Strict):
    """Submit a scene the server can read: a folder or GeoTIFF under one of its data roots."""

    scene: str = Field(..., min_length=1, max_length=4096,
                       description="path of an xView3 scene folder or a GeoTIFF, absolute or "
                       "relative to a data root")
    options: JobOptions = Field(default_factory=JobOptions)


class Progress(BaseModel):
    tiles_done: int
    tiles_total: int
    tiles_resumed: int = Field(description="tiles taken from the journal of an earlier attempt")
    fraction: float
    mpx_per_s: float | None = Field(description="scene megapixels per second of this attempt")
    eta_s: float | None


class JobPublic(BaseModel):
    """A job as clients see it."""

    id: str
    state: JobState
    scene_id: str
    uploaded: bool
    height: int
    width: int
    megapixels: float
    options: dict
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    progress: Progress
    watts: float | None = Field(description="last measured draw while running (W); null "
                                "where no power sensor reads")
    detections: int | None
    error: str | None
    note: str | None
    results: dict[str, str] = Field(description="result kind -> URL, once done (power only "
                                    "where a sensor gave readings)")


class JobList(BaseModel):
    jobs: list[JobPublic]


class TileDetection(BaseModel):
    """One detection in tile pixel coordinates."""

    row: float
    col: float
    score: float
    class_id: int
    box: list[float] = Field(description="top, left, bottom, right (px)")
    length_px: float | None


class TileResult(BaseModel):
    index: int
    detections: list[TileDetection]


class TileResponse(BaseModel):
    backend: str
    tiles: list[TileResult]
    infer_ms: float = Field(description="inference + post-processing time of the batch")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class Ready(BaseModel):
    ready: bool
    database: bool
    workers: bool
    queue_depth: int
    max_queue: int


class ErrorBody(BaseModel):
    """Every error reply: a status code and one line saying what was wrong."""

    status: int
    detail: str


def job_public(job: JobRecord, *, base_url: str = "/v1") -> JobPublic:
    """The public view of a stored job (no server paths)."""
    total = job.tiles_total
    results = ({k: f"{base_url}/jobs/{job.id}/results/{k}" for k, p in
                result_paths(job).items() if k != "power" or p.is_file()}
               if job.state is JobState.DONE else {})
    return JobPublic(
        id=job.id, state=job.state, scene_id=job.scene_id, uploaded=job.uploaded,
        height=job.height, width=job.width, megapixels=round(job.megapixels, 6),
        options=job.options, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, attempts=job.attempts,
        progress=Progress(tiles_done=job.tiles_done, tiles_total=total,
                          tiles_resumed=job.tiles_resumed,
                          fraction=job.tiles_done / total if total else 0.0,
                          mpx_per_s=_finite(job.mpx_per_s), eta_s=_finite(job.eta_s)),
        watts=job.watts, detections=job.detections, error=job.error, note=job.note,
        results=results)


def result_paths(job: JobRecord) -> dict[str, Path]:
    """Where a job's results are, by :data:`RESULT_TYPES` kind (the power trace exists only
    where a sensor gave readings)."""
    paths = output_paths(Path(job.out_dir), job.scene_id)
    return {"csv": paths["csv"], "geojson": paths["geojson"], "png": paths["png"],
            "summary": paths["json"],
            "power": Path(job.out_dir) / POWER_PNG.format(sid=job.scene_id)}


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None
