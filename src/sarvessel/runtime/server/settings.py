"""The server's settings: one validated class, built once by ``sarvessel serve`` (or a test) and
handed to :func:`~sarvessel.runtime.server.app.create_app`.

Safe by default: it binds to loopback, and binding anywhere else without a bearer token is
refused here, before a socket is opened. Paths are made absolute once, so a job keeps working
whatever the current folder. No web framework is imported: the CLI validates settings (and
says what is wrong) even where the ``serve`` extra is missing.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sarvessel.runtime.backends import BackendKind
from sarvessel.runtime.server.errors import SettingsError

#: Environment variable holding the bearer token (``--token-file`` takes precedence).
TOKEN_ENV = "SARVESSEL_SERVER_TOKEN"
#: Test hook: seconds each scene job sleeps after every finished tile row (default 0). Lets a
#: test kill the server mid-job on a small scene; never set it in production.
ROW_DELAY_ENV = "SARVESSEL_SERVER_TEST_ROW_DELAY_S"
#: Shortest accepted token: a guessable token is no protection.
MIN_TOKEN_CHARS = 16
DEFAULT_PORT = 8765
GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``sarvessel serve`` can be told. Sizes in bytes, times in seconds."""

    #: Address to bind. The default is loopback; any other needs ``token``.
    host: str = "127.0.0.1"
    #: TCP port. The default is :data:`DEFAULT_PORT`.
    port: int = DEFAULT_PORT
    #: Folder of the job database (``jobs.sqlite3``), job outputs (``jobs/<id>/``) and uploads
    #: (``uploads/<id>/``). The default is ``./sarvessel-server``.
    work_dir: Path = Path("sarvessel-server")
    #: Folders a submitted scene path must lie under (after resolving ``..`` and links).
    #: The default (none) accepts uploads only.
    data_roots: tuple[Path, ...] = ()
    #: Bearer token every ``/v1`` and ``/metrics`` request must carry; None: no auth (loopback
    #: only). Never logged or shown.
    token: str | None = field(default=None, repr=False)
    #: Queued (not yet running) jobs the queue holds; one more gets 429. The default is 8.
    max_queue: int = 8
    #: Scene jobs run at once. The default is 1 (a scene already uses every core).
    workers: int = 1
    #: Largest upload request (all band files together). The default is 8 GiB (two full
    #: Sentinel-1 IW bands in float32).
    max_upload_bytes: int = 8 * GIB
    #: Most tiles in one tile request. The default is 64.
    max_tile_batch: int = 64
    #: Largest JSON request body. The default is 1 MiB.
    max_json_bytes: int = MIB
    #: ONNX model of the ``onnx``/``auto`` backends. The default is the shipped scene model.
    model: Path | None = None
    #: Deploy package of the ``sim``/``fpga`` backends. The defaults are ``detect``'s.
    package: Path | None = None
    #: onnxruntime threads per detector. The default (None) is every core.
    threads: int | None = None
    #: Backend of ``POST /v1/tiles`` when the request names none. The default is ``auto``.
    tile_backend: BackendKind = BackendKind.AUTO
    #: Read a power sensor (INA260 on the board, RAPL on a PC) for the watts in job status and
    #: metrics. The default is True.
    power_sensor: bool = True
    #: Seconds a stopping server waits for open requests before closing them. Scene jobs are not
    #: cut off: each finishes its current tile row. The default is 10.
    graceful_timeout_s: float = 10.0
    #: Test hook (:data:`ROW_DELAY_ENV`): pause after each tile row of a scene job.
    row_delay_s: float = 0.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once here
        set_(self, "work_dir", Path(os.path.abspath(self.work_dir)))
        set_(self, "data_roots", tuple(Path(os.path.realpath(p)) for p in self.data_roots))
        set_(self, "tile_backend", _backend(self.tile_backend))
        for name in ("model", "package"):
            if getattr(self, name) is not None:
                set_(self, name, Path(os.path.abspath(getattr(self, name))))
        if not 0 < self.port < 65536:
            raise SettingsError(f"--port must be in 1..65535, got {self.port}")
        for name in ("max_queue", "workers", "max_upload_bytes", "max_tile_batch",
                     "max_json_bytes"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise SettingsError(f"--threads must be >= 1, got {self.threads}")
        for name in ("graceful_timeout_s", "row_delay_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise SettingsError(f"{name} must be a number >= 0, got {v}")
        for root in self.data_roots:
            if not root.is_dir():
                raise SettingsError(f"--data-root {root}: not a folder")
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise SettingsError(f"the bearer token must be at least {MIN_TOKEN_CHARS} "
                                f"characters (got {len(self.token)})")
        if self.token is None and not is_loopback(self.host):
            raise SettingsError(
                f"refusing to serve on {self.host} without a bearer token: anyone on that "
                f"network could run jobs and read results. Give --token-file FILE or set "
                f"{TOKEN_ENV}, or bind 127.0.0.1")

    @property
    def db_path(self) -> Path:
        """The job database."""
        return self.work_dir / "jobs.sqlite3"

    @property
    def jobs_dir(self) -> Path:
        return self.work_dir / "jobs"

    @property
    def uploads_dir(self) -> Path:
        return self.work_dir / "uploads"

    @property
    def auth_required(self) -> bool:
        return self.token is not None


def load_settings(*, token_file: Path | None = None, env: Mapping[str, str] | None = None,
                  **kw: object) -> ServerSettings:
    """:class:`ServerSettings` with the token read from ``token_file`` (first line, stripped)
    or the :data:`TOKEN_ENV` variable, and the test row delay from :data:`ROW_DELAY_ENV`.
    ``env``: the environment to read. The default is ``os.environ``."""
    env = os.environ if env is None else env
    token = read_token(token_file, env)
    delay = env.get(ROW_DELAY_ENV, "").strip()
    try:
        row_delay = float(delay) if delay else 0.0
    except ValueError as exc:
        raise SettingsError(f"{ROW_DELAY_ENV}={delay!r} is not a number") from exc
    return ServerSettings(token=token, row_delay_s=row_delay, **kw)  # type: ignore[arg-type]


def read_token(token_file: Path | None, env: Mapping[str, str]) -> str | None:
    """The bearer token from ``token_file`` (its first line) or :data:`TOKEN_ENV`; None if
    neither gives one."""
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"--token-file {token_file}: cannot read ({exc.strerror})") \
                from exc
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not token:
            raise SettingsError(f"--token-file {token_file}: empty")
        return token
    token = env.get(TOKEN_ENV, "").strip()
    return token or None


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and the loopback addresses (127.0.0.0/8, ::1).

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _backend(value: BackendKind | str) -> BackendKind:
    try:
        return BackendKind(value)
    except ValueError as exc:
        raise SettingsError(f"unknown backend {value!r} (one of "
                            f"{', '.join(k.value for k in BackendKind)})") from exc

