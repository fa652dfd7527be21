"""Exceptions of the server room, each carrying the HTTP status it maps to.

Every one is a :class:`~sarvessel.runtime.errors.SarvesselError`, so the CLI prints its message
as it does for any user error. The app maps them to responses in one place
(:func:`sarvessel.runtime.server.app.install_error_handlers`); this module imports no web
framework, so the job store and the client can raise them on a runtime-only install.
"""

from __future__ import annotations

from sarvessel.runtime.errors import SarvesselError


class ServerError(SarvesselError):
    """Base class of the server's errors. ``status``: the HTTP status code; ``headers``: extra
    response headers (``Retry-After``, ``WWW-Authenticate``)."""

    status: int = 400

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})


class SettingsError(ServerError):
    """The server cannot start with these settings (unsafe bind, bad folder, bad limit)."""

    status = 500


class BadRequest(ServerError):
    """The request cannot be parsed (bad JSON, body length not matching the declared shape)."""

    status = 400


class Unauthorized(ServerError):
    """No bearer token, or the wrong one."""

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServerError):
    """A scene path outside the configured data roots."""

    status = 403


class NotFound(ServerError):
    """An unknown job, or a result file a job does not have."""

    status = 404


class Conflict(ServerError):
    """The job is not in a state that allows this (results of an unfinished job)."""

    status = 409


class PayloadTooLarge(ServerError):
    """A body over the route's size limit, or more tiles than one batch may hold."""

    status = 413


class UnsupportedMediaType(ServerError):
    """A body of the wrong content type (tiles must be ``application/octet-stream``)."""

    status = 415


class Unprocessable(ServerError):
    """Well-formed but unusable: wrong dtype or shape, not a TIFF, a truncated or unreadable
    scene, an unknown option value."""

    status = 422


class QueueFull(ServerError):
    """The job queue holds as many queued jobs as it may; retry after ``retry_after_s``."""

    status = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, int(retry_after_s)))})
        self.retry_after_s = max(1, int(retry_after_s))


class ClientError(ServerError):
    """What :class:`~sarvessel.runtime.server.client.ServerClient` raises for an error reply or
    an unreachable server: ``status`` is the reply's (0 when there was none)."""

    def __init__(self, message: str, *, status: int = 0,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)
        self.status = status
