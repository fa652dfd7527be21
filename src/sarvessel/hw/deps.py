"""finn-plus' external dependencies, pinned, fetched once and checked offline.

On its first run ``finn build`` clones finn-hlslib, attention-hlslib, AuroraFlow and board files
(XilinxBoardStore ``kv260_som`` among them) and downloads nlohmann-json into ``$FINN_DEPS``
(finn-plus ``interface/external_dependencies.yaml``); a build host behind a firewall fails there.
The build image fetches them at image build time instead, with finn-plus' own
``DependencyUpdater`` (which, unlike ``finn deps update``, runs without Vivado), from the pinned
list :data:`PINNED_DEPS_FILE` (finn-plus' format, so finn-plus reads the same file as
``FINN_DEPS_DEFINITIONS``), and builds run with ``AUTOMATIC_DEPENDENCY_UPDATES=false``.

:func:`missing_dependencies` is the offline check: where finn-plus looks for each dependency
(``<deps>/<name>`` checked out at the pinned commit; board files in ``<deps>/board_files/<dir>``
with their clone in ``<deps>/board_files_downloads/<name>``; downloads unpacked under
``<deps>/<target_directory>``) and whether it is there, reading ``.git/HEAD`` directly (no git,
no network). ``sarvessel hw build`` runs it before starting finn-plus when automatic updates are
off.

Command line (the Dockerfile runs the first)::

    python -m sarvessel.hw.deps fetch /opt/finn_deps
    python -m sarvessel.hw.deps check /opt/finn_deps
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sarvessel.hw.errors import ToolsMissingError

log = logging.getLogger(__name__)

__all__ = [
    "PINNED_DEPS_FILE",
    "DepKind",
    "PinnedDependency",
    "fetch_dependencies",
    "finn_plus_definitions",
    "load_pins",
    "missing_dependencies",
]

#: The pinned list (finn-plus' definition format plus ``sarvessel_sha256``).
PINNED_DEPS_FILE = Path(__file__).with_name("finn_deps.yaml")
#: Dependencies a KV260 build cannot do without (HLS layers, the board files, finn_xsi's JSON).
KV260_ESSENTIAL = ("finn-hlslib", "kv260-som-bdf", "nlohmann-json")
#: Environment variables of finn-plus' settings the image sets (finn/interface/settings.py).
AUTO_UPDATE_ENV = "AUTOMATIC_DEPENDENCY_UPDATES"


class DepKind(str, Enum):
    """The three kinds of finn-plus external dependencies."""

    GIT = "git_deps"
    BOARDFILE = "boardfile_deps"
    DOWNLOAD = "direct_download_deps"


@dataclass(frozen=True)
class PinnedDependency:
    """One pinned external dependency."""

    name: str
    kind: DepKind
    url: str
    #: Git commit (git and board-file dependencies); None for downloads.
    commit: str | None = None
    #: Folder inside the repository copied to ``board_files`` (board files only).
    subdirectory: str | None = None
    #: Folder (relative to the dependency root) a download is unpacked into.
    target_directory: str | None = None
    #: SHA-256 of the downloaded file (downloads only).
    sha256: str | None = None

    def paths(self, deps_dir: Path) -> list[Path]:
        """Where finn-plus' ``DependencyUpdater`` puts this dependency under ``deps_dir``."""
        if self.kind is DepKind.GIT:
            return [deps_dir / self.name]
        if self.kind is DepKind.BOARDFILE:
            sub = Path(self.subdirectory or ".")
            clone = deps_dir / "board_files_downloads" / self.name
            return [clone] if sub == Path(".") else [clone, deps_dir / "board_files" / sub.name]
        return [deps_dir / (self.target_directory or ".") / _unpacked_name(self.url)]

    def archive(self, deps_dir: Path) -> Path:
        """The downloaded file of a download dependency."""
        return deps_dir / (self.target_directory or ".") / self.url.rsplit("/", 1)[-1]


def load_pins(path: Path = PINNED_DEPS_FILE) -> list[PinnedDependency]:
    """Read the pinned list. The default is the list shipped with this package."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    sha = data.get("sarvessel_sha256") or {}
    out = []
    for kind in DepKind:
        for name, d in (data.get(kind.value) or {}).items():
            out.append(PinnedDependency(
                name=name, kind=kind, url=str(d["url"]), commit=d.get("commit"),
                subdirectory=None if d.get("subdirectory") is None else str(d["subdirectory"]),
                target_directory=d.get("target_directory"), sha256=sha.get(name),
            ))
    return out


def finn_plus_definitions() -> dict[str, Any]:
    """finn-plus' own dependency definitions (the installed ``external_dependencies.yaml``)."""
    import finn.interface
    import yaml

    path = Path(finn.interface.__file__).with_name("external_dependencies.yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def missing_dependencies(deps_dir: Path, pins: list[PinnedDependency] | None = None) -> list[str]:
    """What an offline build would not find under ``deps_dir``, one line per problem (empty
    when every pinned dependency is at its pinned path and commit). Reads files only."""
    pins = load_pins() if pins is None else pins
    problems = []
    for dep in pins:
        for p in dep.paths(deps_dir):
            if not p.exists():
                problems.append(f"{dep.name}: {p} missing")
        if dep.kind is not DepKind.DOWNLOAD:
            head = _git_head(dep.paths(deps_dir)[0])
            if head is not None and head != dep.commit:
                problems.append(f"{dep.name}: checked out at {head}, pinned {dep.commit}")
    return problems


def fetch_dependencies(deps_dir: Path, *, definitions: Path = PINNED_DEPS_FILE,
                       git_timeout_s: float = 600.0) -> list[PinnedDependency]:
    """Fetch every pinned dependency into ``deps_dir`` with finn-plus' ``DependencyUpdater``
    (network; git and wget must be installed), then check the commits, the download hashes and
    :func:`missing_dependencies`; raise :class:`ToolsMissingError` on any problem."""
    from finn.interface.manage_deps import DependencyUpdater

    for tool in ("git", "wget"):
        if shutil.which(tool) is None:
            raise ToolsMissingError(f"fetching finn-plus dependencies needs `{tool}` on PATH")
    deps_dir.mkdir(parents=True, exist_ok=True)
    pins = load_pins(definitions)
    updater = DependencyUpdater(dependency_location=deps_dir,
                                dependency_definition_file=Path(definitions),
                                git_timeout_s=git_timeout_s, non_interactive=True)
    try:
        updater.update()
    except SystemExit as exc:  # finn-plus exits on a failed update
        raise ToolsMissingError(f"finn-plus dependency update failed (exit {exc.code})") from None
    problems = missing_dependencies(deps_dir, pins)
    for dep in pins:
        if dep.sha256 is None:
            continue
        archive = dep.archive(deps_dir)
        got = _sha256(archive) if archive.is_file() else None
        if got != dep.sha256:
            problems.append(f"{dep.name}: {archive} has SHA-256 {got}, pinned {dep.sha256}")
    if problems:
        raise ToolsMissingError("finn-plus dependencies incomplete: " + "; ".join(problems))
    log.info("%d finn-plus dependencies in %s", len(pins), deps_dir)
    return pins


def auto_updates_enabled(env: Mapping[str, str] | None = None) -> bool:
    """finn-plus' ``AUTOMATIC_DEPENDENCY_UPDATES`` as finn-plus reads it from the environment
    (its default is on)."""
    value = (os.environ if env is None else env).get(AUTO_UPDATE_ENV)
    return value is None or value.strip().lower() not in ("0", "false", "no", "off")


def _git_head(repo: Path) -> str | None:
    """The commit a detached checkout is at (``.git/HEAD``), or None where there is none."""
    head = repo / ".git" / "HEAD"
    if not head.is_file():
        return None
    text = head.read_text(encoding="utf-8").strip()
    if text.startswith("ref:"):
        ref = repo / ".git" / text.split(None, 1)[1]
        return ref.read_text(encoding="utf-8").strip() if ref.is_file() else text
    return text


def _unpacked_name(url: str) -> str:
    name = url.rsplit("/", 1)[-1]
    for suffix in (".tar.xz", ".tar.gz", ".tar.bz2", ".tgz", ".tar", ".zip"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """``python -m sarvessel.hw.deps fetch|check DEPS_DIR``."""
    p = argparse.ArgumentParser(prog="python -m sarvessel.hw.deps", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("action", choices=["fetch", "check"])
    p.add_argument("deps_dir", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.action == "fetch":
        fetch_dependencies(args.deps_dir)
        return 0
    problems = missing_dependencies(args.deps_dir)
    for line in problems:
        log.error("%s", line)
    if not problems:
        log.info("all %d pinned finn-plus dependencies present in %s", len(load_pins()),
                 args.deps_dir)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
