"""Which scenes an archive run covers: the command's arguments expanded, then scanned once.

An argument is a scene folder (xView3 layout) or a GeoTIFF, a glob pattern (quote it so the
shell leaves it alone: ``'data/*/'``), or a text file listing scenes one per line (blank lines
and ``#`` comments skipped; relative paths are relative to the list file). A folder named
explicitly is always a scene, so a broken one fails as ``sarvessel detect`` would; folders that
a glob matches but hold no ``.tif`` at all (``shoreline/``, an output folder) are not scenes and
are left out.

The scan opens each scene's headers (no pixels) for its id, size and file fingerprint, which
size the progress bar and let the client skip finished scenes without a task.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sarvessel.archive.errors import ArchiveError
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io.scene import open_scene

log = logging.getLogger(__name__)

#: Suffixes of single-file scenes (anything else that is a file is a list of scenes).
RASTER_SUFFIXES = frozenset({".tif", ".tiff"})
#: Scene ids that would overwrite the archive's own files in the output folder.
RESERVED_SCENE_IDS = frozenset({"submission", "archive"})


@dataclass(frozen=True)
class ScenePlan:
    """One scene of the archive as the client sees it before any task runs."""

    #: Absolute path of the scene folder or file (symlinks kept, as ``detect`` names them).
    path: Path
    #: Scene id (the folder name, or the file's stem); None when the scene could not be opened.
    scene_id: str | None = None
    height: int = 0
    width: int = 0
    #: [path, size, mtime_ns] of every file read (:meth:`Scene.fingerprint`).
    files: tuple[tuple, ...] = ()
    #: Why the scene could not be opened here (its task will say the same, in one line).
    error: str | None = None

    @property
    def megapixels(self) -> float:
        return self.height * self.width / 1e6

    @property
    def label(self) -> str:
        """The scene id, or the path's name when the scene could not be opened."""
        return self.scene_id or self.path.name


def expand_scene_args(args: Sequence[str | Path]) -> list[Path]:
    """Scene paths named by ``args`` (folders, GeoTIFFs, globs, list files), in order, each once.

    Raises :class:`ArchiveError` for an argument that names nothing, a glob that matches no
    scene, or a folder that holds scenes rather than being one (with the glob to use instead).
    """
    out: list[Path] = []
    for arg in args:
        out.extend(_expand_one(str(arg)))
    seen: set[str] = set()
    unique = []
    for p in out:
        key = os.path.realpath(p)
        if key in seen:
            continue
        seen.add(key)
        unique.append(p)
    if not unique:
        raise ArchiveError("no scenes given")
    return unique


def scan_scenes(paths: Iterable[Path]) -> list[ScenePlan]:
    """Open each scene's headers; a scene that cannot be opened keeps its one-line reason.

    Raises :class:`ArchiveError` when two scenes share an id (their outputs would collide in
    the output folder) or a scene id is one the archive's own files use.
    """
    plans = [scan_scene(p) for p in paths]
    by_id: dict[str, Path] = {}
    for plan in plans:
        if plan.scene_id is None:
            continue
        if plan.scene_id in RESERVED_SCENE_IDS:
            raise ArchiveError(f"{plan.path}: scene id {plan.scene_id!r} would overwrite the "
                               "archive's own output; rename the scene")
        if plan.scene_id in by_id:
            raise ArchiveError(f"scene id {plan.scene_id!r} twice: {by_id[plan.scene_id]} and "
                               f"{plan.path} (their outputs would overwrite each other)")
        by_id[plan.scene_id] = plan.path
    return plans


def scan_scene(path: Path) -> ScenePlan:
    """The :class:`ScenePlan` of one scene (headers only)."""
    path = Path(os.path.abspath(path))
    try:
        with open_scene(path) as scene:
            return ScenePlan(path=path, scene_id=scene.scene_id, height=scene.height,
                             width=scene.width,
                             files=tuple(tuple(f) for f in scene.fingerprint()))
    except SarvesselError as exc:
        log.debug("cannot open %s here: %s", path, exc)
        return ScenePlan(path=path, error=one_line(str(exc)))


def one_line(message: str) -> str:
    """A message on one line (continuation lines joined with `` | ``)."""
    lines = [s.strip() for s in str(message).splitlines() if s.strip()]
    return " | ".join(lines) if lines else str(message)


# -- helpers ------------------------------------------------------------------------------


def _expand_one(arg: str) -> list[Path]:
    if glob.has_magic(arg):
        matches = sorted(glob.glob(arg))
        scenes = [Path(m) for m in matches if _looks_like_scene(Path(m))]
        if len(scenes) < len(matches):
            log.info("%s: %d of %d matches hold no .tif and are not scenes", arg,
                     len(matches) - len(scenes), len(matches))
        if not scenes:
            raise ArchiveError(f"{arg}: matches no scene folder or GeoTIFF")
        return scenes
    path = Path(arg)
    if path.is_dir():
        if not any(path.glob("*.tif")) and any(_looks_like_scene(d) for d in path.iterdir()
                                                if d.is_dir()):
            raise ArchiveError(f"{arg}: holds scene folders rather than being one; name them "
                               f"with a quoted glob: '{path / '*'}'")
        return [path]
    if path.is_file():
        if path.suffix.lower() in RASTER_SUFFIXES:
            return [path]
        return _read_list(path)
    raise ArchiveError(f"{arg}: no such scene folder, GeoTIFF, glob or list file")


def _read_list(path: Path) -> list[Path]:
    """Scenes listed in a text file, one per line; relative paths are relative to the file.
    A listed path that does not exist is kept: its task fails with ``detect``'s message."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{path}: not a text list of scenes (nor a .tif scene)") from exc
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot read the list of scenes ({exc.strerror})") from exc
    out: list[Path] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        entry = str(p if p.is_absolute() else path.parent / p)
        # a listed scene that is missing fails its own task, as ``detect`` would fail
        out.extend(_expand_one(entry) if glob.has_magic(line) else [Path(entry)])
    if not out:
        raise ArchiveError(f"{path}: lists no scenes")
    return out


def _looks_like_scene(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in RASTER_SUFFIXES
    return path.is_dir() and any(path.glob("*.tif"))
