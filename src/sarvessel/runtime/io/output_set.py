"""A scene's outputs as one set: staged, committed with the summary last, checked when read.

A run writes every output (CSV, GeoJSON, quicklook PNG) into a staging folder
``.<scene_id>.<pid>.staging`` inside the output folder, then the summary JSON, which names the
run (``run_id``) and lists each output's file name, size and SHA-256. :func:`commit` then

1. removes the previous run's summary, so from here on the set reads as incomplete;
2. moves each output into place (``os.replace`` on one file system: each move is atomic) and
   removes outputs of the previous set that this run does not write (a GeoJSON, when the
   scene has no georeferencing);
3. fsyncs the folder, moves the summary into place (the commit point) and fsyncs again.

A kill before step 1 leaves the previous set whole; a kill between 1 and 3 leaves no summary;
after 3 the new set is whole. :func:`read_output_set` tells these apart: a summary whose listed
files all match is a complete set; a missing summary or a file that differs from its listing
is an :class:`OutputSetError`. The run id lives in the summary only: the other files stay
byte-identical for the same job (a resumed run's equal an uninterrupted run's), and their
hashes in the summary tie them to it. The caller holds the scene's job lock throughout
(:mod:`sarvessel.runtime.journal`), so no other run stages or commits the same names.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarvessel.runtime.errors import SarvesselError

log = logging.getLogger(__name__)

#: Output kind of the summary, the file committed last.
SUMMARY = "json"


class OutputSetError(SarvesselError):
    """A scene's outputs in a folder are missing, incomplete or from different runs."""


@dataclass
class OutputSet:
    """A complete, consistent set of one scene's outputs."""

    scene_id: str
    run_id: str
    #: The summary JSON's content.
    summary: dict[str, Any]
    #: Output kind → path, the summary included.
    paths: dict[str, Path] = field(default_factory=dict)


def staging_dir(out_dir: Path, scene_id: str) -> Path:
    """Where this process stages the outputs of ``scene_id`` before committing them."""
    return Path(out_dir) / f".{scene_id}.{os.getpid()}.staging"


def remove_stale_staging(out_dir: Path, scene_id: str) -> None:
    """Delete staging folders of ``scene_id`` that killed runs left (call with the job lock)."""
    for d in Path(out_dir).glob(f".{glob.escape(scene_id)}.*.staging"):
        if d.name[len(scene_id) + 2 : -len(".staging")].isdigit():  # not scene "<id>.x"'s
            shutil.rmtree(d, ignore_errors=True)


def describe(paths: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """Output kind → ``{"file": name, "bytes": size, "sha256": hex}`` of each file."""
    return {kind: {"file": Path(p).name, "bytes": Path(p).stat().st_size,
                   "sha256": _sha256(Path(p))} for kind, p in paths.items()}


def commit(staged: Mapping[str, Path], final: Mapping[str, Path], *,
           drop: Iterable[Path] = ()) -> None:
    """Move ``staged`` outputs onto ``final`` as one set, :data:`SUMMARY` last (module
    docstring); ``drop``: files of the previous set this run does not write, removed."""
    if SUMMARY not in staged:
        raise ValueError("an output set needs its summary")
    folder = Path(final[SUMMARY]).parent
    Path(final[SUMMARY]).unlink(missing_ok=True)
    _fsync_dir(folder)
    for kind, src in staged.items():
        if kind != SUMMARY:
            os.replace(src, final[kind])
    for path in drop:
        Path(path).unlink(missing_ok=True)
    _fsync_dir(folder)
    os.replace(staged[SUMMARY], final[SUMMARY])
    _fsync_dir(folder)


def read_output_set(paths: Mapping[str, Path]) -> OutputSet:
    """The complete output set whose files would be ``paths`` (kind → path, the summary
    :data:`SUMMARY` among them), checked file by file against the summary's listing.

    Raises :class:`OutputSetError` when there is no summary (no run finished here, or one was
    killed while committing), when a listed file is missing or differs from the summary (a
    mixed set), or when the summary predates output sets (no ``run_id``).
    """
    summary_path = Path(paths[SUMMARY])
    out_dir = summary_path.parent
    if not summary_path.is_file():
        others = sorted(Path(p).name for k, p in paths.items()
                        if k != SUMMARY and Path(p).is_file())
        if others:
            raise OutputSetError(f"{out_dir}: incomplete outputs: {', '.join(others)} without "
                                 f"{summary_path.name} (a run was interrupted while writing "
                                 "them); run it again")
        raise OutputSetError(f"{out_dir}: no {summary_path.name}: no run finished here")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as exc:
        raise OutputSetError(f"{summary_path}: unreadable summary ({exc})") from exc
    run_id = summary.get("run_id") if isinstance(summary, dict) else None
    listed = summary.get("outputs") if isinstance(summary, dict) else None
    if not run_id or not isinstance(listed, dict):
        raise OutputSetError(f"{summary_path}: no run_id/outputs listing (written by an older "
                             "version); run the scene again")
    found: dict[str, Path] = {}
    for kind, entry in listed.items():
        path = out_dir / str(entry.get("file", ""))
        if not path.is_file():
            raise OutputSetError(f"{path}: missing from run {run_id}'s output set")
        if path.stat().st_size != entry.get("bytes") or _sha256(path) != entry.get("sha256"):
            raise OutputSetError(f"{path}: not the file run {run_id} wrote (a mixed set: "
                                 "another run replaced it); run the scene again")
        found[kind] = path
    found[SUMMARY] = summary_path
    return OutputSet(scene_id=str(summary.get("scene_id", "")), run_id=str(run_id),
                     summary=summary, paths=found)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (a power cut must not undo the commit order)."""
    with contextlib.suppress(OSError):  # some file systems refuse to open folders
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
