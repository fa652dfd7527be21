"""``/v1/jobs``: submit a scene (a path under a data root, or uploaded band files), list jobs,
follow one, cancel it, fetch its results. Thin: checks and work live in
:mod:`~sarvessel.runtime.server.inputs` and :mod:`~sarvessel.runtime.server.runner`."""

from __future__ import annotations

import re
import shutil
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.types import Message, Receive

from sarvessel.runtime.server.deps import RunnerDep, SettingsDep, StoreDep
from sarvessel.runtime.server.errors import (
    BadRequest,
    Conflict,
    NotFound,
    Unprocessable,
    UnsupportedMediaType,
)
from sarvessel.runtime.server.inputs import (
    BAND_FIELDS,
    check_scene_id,
    resolve_scene_path,
    store_upload,
)
from sarvessel.runtime.server.jobs import JobState, new_job_id
from sarvessel.runtime.server.models import (
    RESULT_TYPES,
    JobCreate,
    JobList,
    JobOptions,
    JobPublic,
    ResultKind,
    job_public,
    result_paths,
)

router = APIRouter(prefix="/jobs", tags=["jobs"])

#: Non-file fields an upload form may carry.
UPLOAD_FIELDS = ("options", "scene_id")
#: Largest non-file form field (the options JSON).
MAX_FIELD_BYTES = 64 * 1024


@router.post("", status_code=201, response_model=JobPublic,
             summary="submit a scene the server can read (under a data root)")
def submit_job(body: JobCreate, runner: RunnerDep, settings: SettingsDep,
               response: Response) -> JobPublic:
    path = resolve_scene_path(body.scene, settings.data_roots)
    job = runner.submit(path, body.options.model_dump(mode="json"),
                        label=f"scene {body.scene!r}")
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_public(job)


@router.post("/upload", status_code=201, response_model=JobPublic,
             summary="submit a scene by uploading its band files (multipart/form-data)",
             description="File fields VV_dB and VH_dB (optionally bathymetry, owiMask, ...) or "
             "one 'scene' GeoTIFF; text fields 'options' (JobOptions as JSON) and 'scene_id'.")
async def upload_job(request: Request, runner: RunnerDep, settings: SettingsDep,
                     response: Response) -> JobPublic:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMediaType("an upload is multipart/form-data with one file field per "
                                   "band")
    runner.check_room()  # before gigabytes are stored
    tail = _Tail(request.receive)
    try:
        form = await Request(request.scope, tail).form(
            max_files=len(BAND_FIELDS) + 1, max_fields=len(UPLOAD_FIELDS),
            max_part_size=MAX_FIELD_BYTES)
    except MultiPartException as exc:
        raise BadRequest(f"malformed multipart body: {exc.message}") from exc
    try:
        # the parser takes a body cut off mid-file without complaint: check its end
        if not tail.ends_with_closing_boundary(request.headers["content-type"]):
            raise BadRequest("multipart body ends before its closing boundary (a truncated "
                             "upload)")
        items = list(form.multi_items())
        files = {k: v for k, v in items if isinstance(v, UploadFile)}
        fields = {k: v for k, v in items if isinstance(v, str)}
        if len(files) + len(fields) != len(items):
            raise Unprocessable("an upload field is repeated")
        unknown = sorted(set(fields) - set(UPLOAD_FIELDS))
        if unknown:
            raise Unprocessable(f"unknown form field(s) {', '.join(unknown)}; text fields are "
                                f"{', '.join(UPLOAD_FIELDS)}")
        options = JobOptions.model_validate_json(fields.get("options") or "{}")
        job_id = new_job_id()
        scene_id = check_scene_id(fields.get("scene_id") or f"upload-{job_id[:8]}")
        dest = settings.uploads_dir / job_id
        path = await run_in_threadpool(store_upload, {k: v.file for k, v in files.items()},
                                       dest=dest, scene_id=scene_id)
        try:
            job = await run_in_threadpool(runner.submit, path, options.model_dump(mode="json"),
                                          label="upload", uploaded=True, job_id=job_id)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    finally:
        await form.close()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_public(job)


@router.get("", response_model=JobList, summary="list jobs, newest first")
def list_jobs(store: StoreDep, state: JobState | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JobList:
    return JobList(jobs=[job_public(j) for j in store.list(state=state, limit=limit)])


@router.get("/{job_id}", response_model=JobPublic,
            summary="a job's state and progress (tiles, MPx/s, ETA, watts)")
def get_job(job_id: str, store: StoreDep) -> JobPublic:
    return job_public(store.get(job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic,
             summary="cancel a job (a running one stops after its current tile row)")
def cancel_job(job_id: str, runner: RunnerDep) -> JobPublic:
    runner.cancel(job_id)
    return job_public(runner.store.get(job_id))


@router.get("/{job_id}/results/{kind}", response_class=FileResponse,
            summary="a finished job's CSV (xView3), GeoJSON, quicklook PNG, summary JSON or "
            "power trace PNG",
            responses={200: {"content": {t: {} for t in RESULT_TYPES.values()}}})
def get_result(job_id: str, kind: ResultKind, store: StoreDep) -> FileResponse:
    job = store.get(job_id)
    if job.state is not JobState.DONE:
        raise Conflict(f"job {job_id} is {job.state.value}; results exist once it is done")
    path = result_paths(job)[kind]
    if not path.is_file():
        why = ("no power sensor gave readings" if kind == "power"
               else "removed from the server?")
        raise NotFound(f"job {job_id} has no {kind} result ({why})")
    return FileResponse(path, media_type=RESULT_TYPES[kind], filename=path.name)


class _Tail:
    """A receive channel that remembers the last bytes of the body passing through it."""

    KEEP = 256

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.tail = b""

    async def __call__(self) -> Message:
        msg = await self.receive()
        if msg["type"] == "http.request":
            self.tail = (self.tail + msg.get("body", b""))[-self.KEEP:]
        return msg

    def ends_with_closing_boundary(self, content_type: str) -> bool:
        """True if the body ends ``--BOUNDARY--`` (optionally followed by a line break)."""
        m = re.search(r'boundary="?([^";]+)"?', content_type)
        if m is None:
            return False
        return self.tail.rstrip(b"\r\n").endswith(b"--" + m.group(1).encode() + b"--")
