"""The FastAPI application: routes under ``/v1``, OpenAPI at ``/docs``, one place that maps
errors to status codes, request size limits and latency metrics as ASGI middleware, and a
lifespan that opens the job store and starts the workers (and stops them after the current
tile row).

Run it with ``sarvessel serve`` (:mod:`sarvessel.runtime.server.cli`), or
``uvicorn.run(create_app(settings))``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sarvessel import __version__
from sarvessel.runtime.contract import TILE_SIZE
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.server.deps import ServerContext, require_token
from sarvessel.runtime.server.errors import ServerError
from sarvessel.runtime.server.jobs import JobStore
from sarvessel.runtime.server.metrics import Metrics
from sarvessel.runtime.server.routers import jobs, system, tiles
from sarvessel.runtime.server.runner import DetectorPool, JobRunner, PowerProbe
from sarvessel.runtime.server.settings import ServerSettings

log = logging.getLogger(__name__)

API_PREFIX = "/v1"
#: Bytes of an over-limit chunked body still read (and dropped) after the 413 is sent.
DRAIN_BYTES = 4 << 20


def create_app(settings: ServerSettings, *, sensor: object | None = None) -> FastAPI:
    """The app for ``settings``. ``sensor``: a power sensor
    (:mod:`sarvessel.runtime.power.sensors`); the default detects one when
    ``settings.power_sensor`` is set."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = _start(settings, sensor)
        app.state.ctx = ctx
        try:
            yield
        finally:
            log.info("stopping: running jobs finish their current tile row")
            ctx.runner.stop()
            ctx.store.close()

    app = FastAPI(
        title="sarvessel tile server",
        version=__version__,
        description="Vessel detection in Sentinel-1 SAR scenes and tiles over HTTP: scene jobs "
        "that survive a crash, and a tile endpoint for an on-board producer.",
        docs_url="/docs",
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    auth = [Depends(require_token)]
    app.include_router(system.probes, prefix=API_PREFIX)
    app.include_router(jobs.router, prefix=API_PREFIX, dependencies=auth)
    app.include_router(tiles.router, prefix=API_PREFIX, dependencies=auth)
    app.include_router(system.metrics_router, dependencies=auth)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(RequestMetrics)
    return app


def _start(settings: ServerSettings, sensor: object | None) -> ServerContext:
    store = JobStore(settings.db_path)
    try:
        settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        requeued = store.recover()
        if sensor is None and settings.power_sensor:
            from sarvessel.runtime.power import detect_sensor

            sensor = detect_sensor()
        power = PowerProbe(sensor)  # type: ignore[arg-type]
        metrics = Metrics(power=power.available)
        detectors = DetectorPool(model=settings.model, package=settings.package,
                                 threads=settings.threads)
        runner = JobRunner(settings, store, detectors, metrics=metrics, power=power)
        runner.sweep_uploads()
        runner.start()
    except BaseException:
        store.close()
        raise
    log.info("serving %s (work folder %s, %d job(s) resumed, auth %s)",
             ", ".join(map(str, settings.data_roots)) or "uploads only", settings.work_dir,
             len(requeued), "on" if settings.auth_required else "off (loopback only)")
    return ServerContext(settings=settings, store=store, runner=runner, detectors=detectors,
                         metrics=metrics, power=power)


# -- errors: one place maps every failure to a status code --------------------------------------


def install_error_handlers(app: FastAPI) -> None:
    """Map errors to JSON replies ``{"status": ..., "detail": "..."}``:

    - :class:`ServerError` → its own status (400 … 429), with its headers;
    - any other :class:`~sarvessel.runtime.errors.SarvesselError` (an unreadable scene, a
      model that cannot be built) → 422;
    - request validation → 422, or 400 when the body is not JSON at all;
    - a client that hung up mid-body → 400; HTTP errors of the framework (404 route, 405) →
      their status;
    - anything else → 500 with no detail (it is a bug, logged with its traceback).
    """

    @app.exception_handler(ServerError)
    async def _server_error(request: Request, exc: ServerError) -> JSONResponse:
        return _reply(exc.status, str(exc), exc.headers)

    @app.exception_handler(SarvesselError)
    async def _user_error(request: Request, exc: SarvesselError) -> JSONResponse:
        return _reply(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_reply(list(exc.errors()))

    @app.exception_handler(ValidationError)
    async def _invalid_model(request: Request, exc: ValidationError) -> JSONResponse:
        return _validation_reply(list(exc.errors()), prefix="options")

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return _reply(400, "the client closed the connection before the body was complete")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _reply(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _reply(500, "internal error (logged on the server)")


def _reply(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": status, "detail": detail}, status_code=status,
                        headers=headers or None)


def _validation_reply(errors: list, *, prefix: str = "") -> JSONResponse:
    bad_json = [e for e in errors if e.get("type") == "json_invalid"]
    if bad_json:
        why = (bad_json[0].get("ctx") or {}).get("error", "")
        return _reply(400, f"{prefix or 'request body'} is not valid JSON"
                      + (f" ({why})" if why else ""))
    return _reply(422, _describe(errors, prefix=prefix))


def _describe(errors: list[dict], *, prefix: str = "") -> str:
    """Validation errors as one line: ``body.options.tta: tta must be one of [1, 2, 4, 8]``."""
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in ([prefix] if prefix else []) + list(e.get("loc", ())))
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


# -- middleware -------------------------------------------------------------------------------


class BodyLimit:
    """Refuse request bodies over the route's limit with 413, before they are read (by
    Content-Length) or as soon as they pass it (a chunked body: the app is then told the
    client left, and its own reply is dropped): uploads
    ``max_upload_bytes``, tiles ``max_tile_batch`` float32 tiles of up to 4 channels, the
    rest ``max_json_bytes``."""

    def __init__(self, app: ASGIApp, *, settings: ServerSettings) -> None:
        self.app = app
        self.upload = settings.max_upload_bytes
        self.tiles = settings.max_tile_batch * 4 * 4 * TILE_SIZE * TILE_SIZE + 4096
        self.other = settings.max_json_bytes

    def limit(self, path: str) -> int:
        if path == f"{API_PREFIX}/jobs/upload":
            return self.upload
        if path == f"{API_PREFIX}/tiles":
            return self.tiles
        return self.other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                await _send_json(send, 400, "Content-Length is not a number")
                return
            if n > limit:
                await _send_json(send, 413, f"request body of {n} bytes; this route takes at "
                                 f"most {limit}")
                return
        seen, started, cut_off = 0, False, False

        async def limited() -> Message:
            nonlocal seen, cut_off
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    if not started:
                        await _send_json(send, 413, f"request body over {limit} bytes, the "
                                         "most this route takes")
                    cut_off = True
                    # read (and drop) a little more of the body, so a client that sends it
                    # all before reading still gets the 413 rather than a reset connection
                    drained, more = 0, msg.get("more_body", False)
                    while more and drained < DRAIN_BYTES:
                        nxt = await receive()
                        drained += len(nxt.get("body", b""))
                        more = nxt["type"] == "http.request" and nxt.get("more_body", False)
                    return {"type": "http.disconnect"}  # the app stops reading
            return msg

        async def guarded(msg: Message) -> None:
            nonlocal started
            if cut_off:  # the app's reply to a cut-off body goes nowhere: 413 was sent
                return
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        await self.app(scope, limited, guarded)


class RequestMetrics:
    """Latency of every request by handler (the route's function name, ``get_job``: bounded,
    unlike paths with job ids), method and status, into the server's histogram."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def watch(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, watch)
        finally:
            ctx = getattr(scope["app"].state, "ctx", None)
            if ctx is not None:
                handler = getattr(scope.get("endpoint"), "__name__", "unmatched")
                ctx.metrics.http_seconds.labels(handler, scope["method"], str(status)).observe(
                    time.perf_counter() - t0)


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"status": status, "detail": detail}, allow_nan=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
