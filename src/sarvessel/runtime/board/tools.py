"""Board tooling: put a deploy package on a board, check it, say what is installed.

:func:`flash` copies a package to ``user@host:/path`` (system ``ssh``, one tar stream, remote
``sha256sum -c``) or to a local or mounted folder, never leaving a half-flashed board::

    <path>.new   staged copy, every file checked against the package's SHA-256 manifest
    <path>       swapped in only after the check (two renames; see :func:`recover`)
    <path>.prev  the package it replaced, kept for a roll-back

If a flash stops anywhere, ``<path>`` is still the old, complete package, or (stopped between
the two renames) ``<path>`` is absent and :func:`recover` (run by every flash, check and info)
finishes the swap if ``<path>.new`` verifies, else restores ``<path>.prev``.

:func:`check` loads an installed package through a backend core (``fpga`` on a board, ``sim``
elsewhere), runs its self-test tiles and compares the accumulators with the ones stored at
build time. :func:`info` describes what is installed.
"""

from __future__ import annotations

import importlib.metadata
import io
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from sarvessel.runtime.board.accelerator import (
    AcceleratorKind,
    board_present,
    open_accelerator,
)
from sarvessel.runtime.board.errors import BoardError, ChecksumError, FlashError, PackageError
from sarvessel.runtime.board.package import (
    DRIVER_CONFIG,
    MANIFEST,
    load_package,
    package_files,
    read_manifest,
    sha256_file,
    verify_manifest,
)

log = logging.getLogger(__name__)

__all__ = [
    "CheckBackend", "SshTarget", "FlashReport", "CheckReport", "parse_target", "flash",
    "recover", "check", "info", "sensor_watts", "DEFAULT_INSTALL",
]

#: Where ``flash`` puts a package on a board when the target names no path, and where
#: ``check``/``info`` look by default.
DEFAULT_INSTALL = Path("/opt/sarvessel/deploy")
#: Suffixes of the staged and the previous package beside the installed one.
NEW, PREV = ".new", ".prev"
#: Package versions ``check``/``info`` report.
_VERSIONED = ("sarvessel", "numpy", "onnxruntime", "pynq", "finn-plus-driver")
_SSH_RE = re.compile(r"^ssh://(?:(?P<user>[^@/]+)@)?(?P<host>[^:/]+)(?::(?P<port>\d+))?"
                     r"(?P<path>/.*)$")
_SCP_RE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^:/]+):(?P<path>.+)$")

Opener = Callable[[Path], BinaryIO]


class CheckBackend(str, Enum):
    """Which core ``board check`` loads the package with."""

    AUTO = "auto"  #: fpga where a board is present, else sim
    FPGA = "fpga"
    SIM = "sim"


@dataclass(frozen=True)
class SshTarget:
    """A remote install path: ``[user@]host:/path`` or ``ssh://[user@]host[:port]/path``."""

    host: str
    path: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return f"{self.destination}:{self.path}"


@dataclass
class FlashReport:
    """What :func:`flash` did."""

    target: str
    files: int
    bytes: int
    seconds: float
    previous_kept: bool
    manifest_sha256: str


@dataclass
class CheckReport:
    """The result of :func:`check`; ``passed`` is the self-test verdict."""

    package: str
    backend: str
    passed: bool
    tiles: int
    mismatched_values: int = 0
    max_abs_diff: int = 0
    ms_per_tile: float = 0.0
    clock_mhz: float | None = None
    bitstream_sha256: str | None = None
    build: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)
    power_w: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_target(target: str | Path) -> SshTarget | Path:
    """``user@host:/path`` or ``ssh://user@host:port/path`` to an :class:`SshTarget`; anything
    else (including a path that exists locally) to a local :class:`~pathlib.Path`."""
    if isinstance(target, Path):
        return target
    m = _SSH_RE.match(target)
    if m:
        return SshTarget(m["host"], m["path"], m["user"], int(m["port"]) if m["port"] else None)
    m = _SCP_RE.match(target)
    if m and not Path(target).exists() and "/" not in m["host"]:
        return SshTarget(m["host"], m["path"], m["user"])
    return Path(target)


def flash(package: Path | str, target: str | Path, *, ssh_options: Sequence[str] = (),
          ssh: str = "ssh", opener: Opener | None = None,
          timeout_s: float = 600.0) -> FlashReport:
    """Copy the deploy package folder ``package`` to ``target`` and swap it in once every file's
    SHA-256 matches.

    target: a local or mounted folder, ``[user@]host:/path`` or ``ssh://[user@]host[:port]/path``
    (copied by the system ``ssh`` with a tar stream; the board needs ``tar`` and coreutils'
    ``sha256sum``). ssh_options: extra ``ssh`` arguments (``-i KEY``, ``-o ...``); the default
    none. opener: opens each source file for reading (default :func:`open` in binary mode; a
    test injects faults). timeout_s: limit for each ssh command (default 600 s).
    Raises :class:`PackageError` when the package does not validate or does not match its own
    manifest, and :class:`FlashError` when the copy fails or does not check out on arrival;
    the target keeps its previous package in both cases.
    """
    t0 = time.monotonic()
    src = Path(package)
    load_package(src)  # refuse what the board could not load
    digests = _source_digests(src)
    manifest = "".join(f"{d}  {name}\n" for name, d in digests.items()).encode()
    opener = opener or _open_binary
    size = sum((src / name).stat().st_size for name in digests)
    dest = parse_target(target)
    if isinstance(dest, SshTarget):
        prev = _flash_ssh(src, digests, manifest, dest, ssh=ssh, ssh_options=ssh_options,
                          opener=opener, timeout_s=timeout_s)
    else:
        prev = _flash_local(src, digests, manifest, dest, opener=opener)
    report = FlashReport(str(dest), len(digests), size, time.monotonic() - t0, prev,
                         _sha256_bytes(manifest))
    log.info("flashed %s to %s: %d files, %d bytes, %.1f s", src, dest, report.files,
             report.bytes, report.seconds)
    return report


def recover(path: Path | str) -> str:
    """Bring an install folder to a consistent state after an interrupted flash; return what
    was done (``"ok"``, ``"finished swap"``, ``"rolled back"``, ``"removed stale staging"``,
    ``"nothing installed"``)."""
    path = Path(path)
    new, prev = _sibling(path, NEW), _sibling(path, PREV)
    if path.exists():
        if new.exists():
            shutil.rmtree(new)
            return "removed stale staging"
        return "ok"
    if new.is_dir():
        try:
            verify_manifest(new)
        except PackageError:
            shutil.rmtree(new)
        else:
            os.replace(new, path)
            return "finished swap"
    if prev.is_dir():
        os.replace(prev, path)
        return "rolled back"
    return "nothing installed"


def check(package: Path | str = DEFAULT_INSTALL, *, backend: CheckBackend | str = "auto",
          power: Callable[[], float | None] | None = None, batch_size: int = 1,
          **core_kwargs: Any) -> CheckReport:
    """Load ``package`` through the ``fpga`` or ``sim`` core and run its self-test tiles.

    backend: ``auto`` (the default) is ``fpga`` where :func:`board_present`, else ``sim``.
    power: returns the board's power in watts, or None (the default is
    :func:`sensor_watts`). batch_size: tiles per accelerator call (default 1).
    core_kwargs go to the core's constructor. Raises the core's one-line errors (no board, bad
    package, bitstream mismatch) and :class:`PackageError` when the package has no self-test.
    """
    path = Path(package)
    if path.exists() or _sibling(path, NEW).exists() or _sibling(path, PREV).exists():
        state = recover(path)
        if state not in ("ok", "nothing installed"):
            log.warning("%s: interrupted flash found: %s", path, state)
    kind = CheckBackend(backend)
    if kind is CheckBackend.AUTO:
        kind = CheckBackend.FPGA if board_present() else CheckBackend.SIM
    pkg = load_package(path, need_bitstream=kind is CheckBackend.FPGA)
    pair = pkg.selftest
    if pair is None:
        raise PackageError(f"{path}: no self-test tiles (selftest/inputs.npy and "
                           "selftest/expected_acc.npy)")
    try:
        inputs = np.load(pair[0], allow_pickle=False)
        expected = np.load(pair[1], allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PackageError(f"{path}: cannot read the self-test arrays: {exc}") from exc
    core = open_accelerator(AcceleratorKind(kind.value), path, batch_size=batch_size,
                            **core_kwargs)
    try:
        t0 = time.perf_counter()
        got = core.accumulators(inputs)
        seconds = time.perf_counter() - t0
    finally:
        core.close()
    report = CheckReport(package=str(path), backend=kind.value, passed=False, tiles=len(inputs),
                         ms_per_tile=1e3 * seconds / max(len(inputs), 1),
                         build=dict(pkg.config.get("build") or {}), versions=_versions())
    if kind is CheckBackend.FPGA:
        report.clock_mhz = float(getattr(core, "clock_mhz", pkg.clock_mhz))
        report.bitstream_sha256 = getattr(core, "bitstream_sha256", None)
    else:
        report.clock_mhz = pkg.clock_mhz
        report.bitstream_sha256 = (sha256_file(pkg.bitfile) if pkg.has_bitstream
                                   else pkg.config.get("bitfile_sha256"))
    if got.shape != expected.shape:
        report.message = (f"expected accumulators {list(expected.shape)}, the {kind.value} "
                          f"core gave {list(got.shape)}")
    else:
        diff = np.abs(got.astype(np.int64) - expected.astype(np.int64))
        report.mismatched_values = int(np.count_nonzero(diff))
        report.max_abs_diff = int(diff.max(initial=0))
        report.passed = report.mismatched_values == 0
        report.message = ("all accumulators bit-exact" if report.passed else
                          f"{report.mismatched_values} of {diff.size} accumulators differ")
    report.power_w = (power or sensor_watts)()
    return report


def info(path: Path | str = DEFAULT_INSTALL) -> dict[str, Any]:
    """What is installed at ``path`` (and its ``.prev``): package summary, manifest state,
    versions, whether a board is present."""
    path = Path(path)
    state = recover(path) if path.exists() or _sibling(path, NEW).exists() or _sibling(
        path, PREV).exists() else "nothing installed"
    out: dict[str, Any] = {"path": str(path), "recovery": state, "board_present": board_present(),
                           "machine": platform.machine(), "versions": _versions(),
                           "installed": _describe(path)}
    prev = _sibling(path, PREV)
    out["previous"] = _describe(prev) if prev.exists() else None
    return out


def sensor_watts(root: Path = Path("/")) -> float | None:
    """One power reading (W) from the best sensor on this host (the power room's
    :func:`~sarvessel.runtime.power.sensors.detect_sensor`: the KV260's INA260, PYNQ rails,
    RAPL), None where there is none or it gives no number yet. root: filesystem root holding
    ``sys/class/...`` (tests pass a fake tree); the default ``/``."""
    from sarvessel.runtime.power.errors import PowerError
    from sarvessel.runtime.power.sensors import detect_sensor

    try:
        sample = detect_sensor(root, use_pynq=False).read()
    except PowerError as exc:
        log.debug("no power reading: %s", exc)
        return None
    return sample.watts


# --- helpers -------------------------------------------------------------------------------


def _open_binary(path: Path) -> BinaryIO:
    return path.open("rb")


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _source_digests(src: Path) -> dict[str, str]:
    """Digests of every file of the source package; its own manifest must agree if it has
    one (a package damaged before the flash is refused, not copied)."""
    if (src / MANIFEST).is_file():
        try:
            verify_manifest(src)
        except ChecksumError as exc:
            raise PackageError(f"source package does not match its manifest: {exc}") from exc
        return read_manifest(src)
    return {rel.as_posix(): sha256_file(src / rel) for rel in package_files(src)}


def _flash_local(src: Path, digests: Mapping[str, str], manifest: bytes, dest: Path, *,
                 opener: Opener) -> bool:
    dest = dest.absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover(dest)
    new, prev = _sibling(dest, NEW), _sibling(dest, PREV)
    if new.exists():
        shutil.rmtree(new)
    try:
        for name in digests:
            out = new / name
            out.parent.mkdir(parents=True, exist_ok=True)
            with opener(src / name) as fin, out.open("wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
        (new / MANIFEST).write_bytes(manifest)
        verify_manifest(new, digests)
    except (OSError, PackageError) as exc:
        shutil.rmtree(new, ignore_errors=True)
        raise FlashError(f"flash to {dest} failed, previous package kept: {exc}") from exc
    had_prev = dest.exists()
    if had_prev:
        if prev.exists():
            shutil.rmtree(prev)
        os.replace(dest, prev)
    os.replace(new, dest)
    _fsync_dir(dest.parent)
    return had_prev


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remote_script(path: str, files: int, manifest_sha: str) -> str:
    """POSIX sh run on the board after the tar stream: verify the staged copy, then swap."""
    p = shlex.quote(path)
    n, pv = shlex.quote(path + NEW), shlex.quote(path + PREV)
    return f"""set -e
cd {n}
sha256sum -c --quiet {MANIFEST} || {{ echo "sarvessel-flash: checksum mismatch" >&2; exit 3; }}
echo "{manifest_sha}  {MANIFEST}" | sha256sum -c --quiet - \
  || {{ echo "sarvessel-flash: manifest damaged" >&2; exit 3; }}
count=$(find . -type f ! -name {MANIFEST} | wc -l)
[ "$count" -eq {files} ] \
  || {{ echo "sarvessel-flash: $count files, expected {files}" >&2; exit 3; }}
cd /
prev=0
if [ -e {p} ]; then rm -rf {pv}; mv {p} {pv}; prev=1; fi
mv {n} {p}
sync
echo "sarvessel-flash: ok prev=$prev"
"""


def _recover_script(path: str) -> str:
    """POSIX sh: :func:`recover` on the board, then an empty staging folder."""
    p = shlex.quote(path)
    n, pv = shlex.quote(path + NEW), shlex.quote(path + PREV)
    return f"""set -e
mkdir -p "$(dirname {p})"
if [ ! -e {p} ]; then
  if [ -d {n} ] && (cd {n} && sha256sum -c --quiet {MANIFEST}) >/dev/null 2>&1; then mv {n} {p};
  elif [ -d {pv} ]; then mv {pv} {p}; fi
fi
rm -rf {n}
mkdir -p {n}
cd {n}
tar -xf -
"""


def _flash_ssh(src: Path, digests: Mapping[str, str], manifest: bytes, dest: SshTarget, *,
               ssh: str, ssh_options: Sequence[str], opener: Opener,
               timeout_s: float) -> bool:
    if not dest.path.startswith("/"):
        raise FlashError(f"{dest}: the remote path must be absolute")
    base = [ssh, "-o", "BatchMode=yes", *ssh_options]
    if dest.port:
        base += ["-p", str(dest.port)]
    base.append(dest.destination)
    stream = _tar_stream(src, digests, manifest, opener)
    _ssh(base, _recover_script(dest.path), stream, timeout_s, "copy", dest)
    out = _ssh(base, _remote_script(dest.path, len(digests), _sha256_bytes(manifest)), b"",
               timeout_s, "verify", dest)
    return "prev=1" in out


def _ssh(base: list[str], script: str, stdin: bytes, timeout_s: float, step: str,
         dest: SshTarget) -> str:
    # the script goes as the remote command (sh -c), the payload on stdin
    cmd = [*base, "sh -c " + shlex.quote(script)]
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout_s,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FlashError(f"flash to {dest} failed at {step}, previous package kept: {exc}"
                         ) from exc
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        why = next((ln for ln in reversed(err) if ln.startswith("sarvessel-flash:")),
                   err[-1] if err else f"exit {proc.returncode}")
        raise FlashError(f"flash to {dest} failed at {step}, previous package kept: {why}")
    return proc.stdout.decode(errors="replace")


def _tar_stream(src: Path, digests: Mapping[str, str], manifest: bytes,
                opener: Opener) -> bytes:
    """The package as an uncompressed tar (bitstreams do not compress much; the A53 has better
    things to do), the manifest last."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in digests:
            path = src / name
            ti = tarfile.TarInfo(name)
            ti.size = path.stat().st_size
            ti.mode = 0o644
            ti.mtime = int(path.stat().st_mtime)
            with opener(path) as f:
                tar.addfile(ti, f)
        ti = tarfile.TarInfo(MANIFEST)
        ti.size, ti.mode, ti.mtime = len(manifest), 0o644, int(time.time())
        tar.addfile(ti, io.BytesIO(manifest))
    return buf.getvalue()


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _describe(path: Path) -> dict[str, Any] | None:
    """Summary of the package folder ``path`` (None when absent)."""
    if not (path / DRIVER_CONFIG).is_file():
        return None
    try:
        pkg = load_package(path)
    except BoardError as exc:
        return {"valid": False, "error": str(exc)}
    cfg = pkg.config
    try:
        verify_manifest(path)
        manifest = "ok"
    except PackageError as exc:
        manifest = str(exc) if (path / MANIFEST).is_file() else "no manifest"
    return {
        "valid": True,
        "model": cfg["model"].get("name"),
        "board": cfg["board"],
        "clock_mhz": pkg.clock_mhz,
        "input": f"{cfg['input']['finn_datatype']} {cfg['input']['shape_normal']}",
        "output": f"{cfg['output']['finn_datatype']} {cfg['output']['shape_normal']}",
        "bitstream": pkg.has_bitstream,
        "bitfile_sha256": cfg.get("bitfile_sha256"),
        "simulator": cfg.get("sim", {}).get("model"),
        "selftest": pkg.selftest is not None,
        "build": cfg.get("build") or {},
        "estimate_ms_per_tile": None if pkg.seconds_per_tile is None
        else round(pkg.seconds_per_tile * 1e3, 3),
        "manifest": manifest,
    }
