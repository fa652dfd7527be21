"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response

from sarvessel import __version__
from sarvessel.runtime.server.deps import MetricsDep, PowerDep, RunnerDep, SettingsDep, StoreDep
from sarvessel.runtime.server.jobs import JobState
from sarvessel.runtime.server.metrics import CONTENT_TYPE
from sarvessel.runtime.server.models import Health, Ready

#: Open to anyone who can reach the port (liveness and readiness probes carry no token).
probes = APIRouter(tags=["system"])
#: Behind the token like the API.
metrics_router = APIRouter(tags=["system"])


@probes.get("/health", response_model=Health, summary="the process answers")
def health() -> Health:
    return Health(version=__version__)


@probes.get("/ready", response_model=Ready,
            summary="the job database answers and the job workers run (503 otherwise)",
            responses={503: {"model": Ready}})
def ready(store: StoreDep, runner: RunnerDep, settings: SettingsDep,
          response: Response) -> Ready:
    db = store.ping()
    depth = store.counts()[JobState.QUEUED] if db else 0
    out = Ready(ready=db and runner.alive, database=db, workers=runner.alive,
                queue_depth=depth, max_queue=settings.max_queue)
    if not out.ready:
        response.status_code = 503
    return out


@metrics_router.get("/metrics", response_class=Response,
                    summary="Prometheus text exposition",
                    responses={200: {"content": {CONTENT_TYPE: {}}}})
def metrics(metrics: MetricsDep, store: StoreDep, power: PowerDep) -> Response:
    return Response(metrics.render(store, power.watts()), media_type=CONTENT_TYPE)
