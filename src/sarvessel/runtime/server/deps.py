"""Dependencies of the routes, as typed aliases (``StoreDep``, ``RunnerDep`` ...) so a route
states what it needs in its signature and nothing reaches for globals.

Everything hangs off one :class:`ServerContext` the app builds at start-up. Auth is one
dependency, :func:`require_token`: a constant-time compare of the bearer token
(:func:`hmac.compare_digest`), applied to whole routers.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sarvessel.runtime.server.errors import Unauthorized
from sarvessel.runtime.server.jobs import JobStore
from sarvessel.runtime.server.metrics import Metrics
from sarvessel.runtime.server.runner import DetectorPool, JobRunner, PowerProbe
from sarvessel.runtime.server.settings import ServerSettings


@dataclass
class ServerContext:
    """What one running server holds: its settings and the parts built from them."""

    settings: ServerSettings
    store: JobStore
    runner: JobRunner
    detectors: DetectorPool
    metrics: Metrics
    power: PowerProbe


def get_context(request: Request) -> ServerContext:
    return request.app.state.ctx


_bearer = HTTPBearer(auto_error=False, description="the server's token (--token-file or "
                     "SARVESSEL_SERVER_TOKEN); required when the server has one")


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse a request without the server's bearer token (when it has one)."""
    token = get_context(request).settings.token
    if token is None:
        return
    if credentials is None:
        raise Unauthorized("this server needs a bearer token (Authorization: Bearer <token>)")
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise Unauthorized("wrong bearer token")


ContextDep = Annotated[ServerContext, Depends(get_context)]


def _settings(ctx: ContextDep) -> ServerSettings:
    return ctx.settings


def _store(ctx: ContextDep) -> JobStore:
    return ctx.store


def _runner(ctx: ContextDep) -> JobRunner:
    return ctx.runner


def _detectors(ctx: ContextDep) -> DetectorPool:
    return ctx.detectors


def _metrics(ctx: ContextDep) -> Metrics:
    return ctx.metrics


def _power(ctx: ContextDep) -> PowerProbe:
    return ctx.power


SettingsDep = Annotated[ServerSettings, Depends(_settings)]
StoreDep = Annotated[JobStore, Depends(_store)]
RunnerDep = Annotated[JobRunner, Depends(_runner)]
DetectorsDep = Annotated[DetectorPool, Depends(_detectors)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
PowerDep = Annotated[PowerProbe, Depends(_power)]
