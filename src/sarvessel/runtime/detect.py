"""Detect vessels in one scene and write its outputs: the library entry every front end calls.

``sarvessel detect``, the demo, the tile server's scene jobs and archive tasks all call
:func:`detect_scene`, so a scene gives the same files whoever runs it:
``<scene_id>.csv`` (xView3 submission), ``.geojson``, ``_quicklook.png`` and ``_summary.json``
in the output folder, with ``<scene_id>.journal.jsonl`` beside them while it runs (removed only
after every output is written, so a killed run resumes where it stopped).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sarvessel.runtime.detector import Detector
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io.outputs import (
    remove_stale_temporaries,
    write_geojson,
    write_json,
    write_quicklook_png,
    write_submission_csv,
)
from sarvessel.runtime.io.scene import open_scene
from sarvessel.runtime.pipeline import (
    PipelineConfig,
    ProgressFn,
    RowHook,
    SceneResult,
    run_scene,
)
from sarvessel.runtime.power import PowerGovernor, write_power_trace_png

log = logging.getLogger(__name__)

#: Output kinds of a scene and their file names (``{sid}`` is the scene id).
OUTPUT_NAMES: dict[str, str] = {"csv": "{sid}.csv", "geojson": "{sid}.geojson",
                                "png": "{sid}_quicklook.png", "json": "{sid}_summary.json"}
#: The power trace PNG, written beside the outputs when a power sensor gave readings.
POWER_PNG = "{sid}_power.png"
#: Called with a progress label; returns the (done, total) callback for that scene.
ProgressFactory = Callable[[str], ProgressFn | None]


def output_paths(out_dir: Path, scene_id: str) -> dict[str, Path]:
    """The output files of ``scene_id`` in ``out_dir``, by kind."""
    return {k: Path(out_dir) / v.format(sid=scene_id) for k, v in OUTPUT_NAMES.items()}


def journal_path(out_dir: Path, scene_id: str) -> Path:
    """The journal of a running scene (finished tile rows, JSON lines)."""
    return Path(out_dir) / f"{scene_id}.journal.jsonl"


def detect_scene(
    scene_path: Path,
    detector: Detector,
    *,
    out_dir: Path,
    config: PipelineConfig | None = None,
    resume: bool = True,
    progress: ProgressFn | None = None,
    governor: PowerGovernor | None = None,
    on_row: RowHook | None = None,
) -> tuple[SceneResult, dict[str, Path]]:
    """Run one scene through ``detector`` and write its outputs into ``out_dir``.

    resume: reuse the finished rows of an interrupted run of the same job (the default); False
    starts afresh. progress: called with (tiles done, tiles in total) after each tile row.
    governor: a started power governor that paces the backend calls and measures the scene's
    energy (its report goes into the summary under ``power``, and a trace PNG beside the
    quicklook when a sensor gave readings); the default measures nothing.
    on_row: per-row stage timings for benchmarks (:data:`~sarvessel.runtime.pipeline.RowHook`).
    Output paths are checked before any tile runs; the journal is removed only after all
    outputs are written.
    """
    check_out_dir(out_dir)
    with open_scene(scene_path) as scene:
        sid = scene.scene_id
        journal = journal_path(out_dir, sid)
        paths = output_paths(out_dir, sid)
        for path in [journal, *paths.values()]:  # refuse before the scene runs, not after
            check_writable_file(path)
        remove_stale_temporaries(out_dir, [journal, *paths.values()])
        if not resume and journal.exists():
            journal.unlink()
        t_power = governor.clock.now() if governor else 0.0
        result = run_scene(scene, detector, config=config or PipelineConfig(),
                           journal=journal, progress=progress, pacer=governor,
                           on_row=on_row)
        power = (governor.report(start=t_power, megapixels=result.megapixels)
                 if governor else None)
        result.power = power
        t0 = time.perf_counter()
        dets = result.detections
        write_submission_csv(paths["csv"], sid, dets, pixel_size_m=scene.pixel_size_m)
        to_ll = scene.to_lonlat if scene.georef is not None else None
        write_geojson(paths["geojson"], sid, dets, to_lonlat=to_ll,
                      pixel_size_m=scene.pixel_size_m)
        write_quicklook_png(paths["png"], result.thumbnail, scale=result.thumbnail_scale,
                            detections=dets, labels=scene_labels(scene.source, sid),
                            title=f"{sid}  {detector.name}  {len(dets)} detections")
        if governor is not None and power is not None and power.samples >= 2:
            paths["power_png"] = Path(out_dir) / POWER_PNG.format(sid=sid)
            write_power_trace_png(paths["power_png"], governor.sampler.trace, start=t_power,
                                  budget_w=governor.budget_w, idle_w=governor.idle_w,
                                  window_s=governor.window_s, rows=governor.rows,
                                  pauses=governor.pauses, title=f"{sid}  power")
        result.timings.write = time.perf_counter() - t0
        summary = scene_summary(result, detector.name)
        summary["power"] = power.to_dict() if power is not None else None
        write_json(paths["json"], summary)
        if journal.exists():
            journal.unlink()
    return result, paths


def scene_summary(result: SceneResult, backend: str) -> dict:
    """The ``_summary.json`` of a scene run."""
    return {"scene_id": result.scene_id, "backend": backend, "height": result.height,
            "width": result.width, "megapixels": result.megapixels,
            "detections": len(result.detections), "tiles_total": result.tiles_total,
            "tiles_run": result.tiles_run, "tiles_skipped_nodata": result.tiles_skipped_nodata,
            "tiles_skipped_land": result.tiles_skipped_land,
            "tiles_skipped_dark": result.tiles_skipped_dark,
            "tiles_resumed": result.tiles_resumed, "mpx_per_s": result.mpx_per_s,
            "timings_s": result.timings.as_dict()}


def scene_labels(scene_path: Path, scene_id: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Ground truth for the quicklook if a labels.csv sits beside the scene (generated scenes):
    (rows, cols, is_vessel); None when there is none or it cannot be read."""
    csv_path = Path(scene_path).parent / "labels.csv"
    if not csv_path.is_file():
        return None
    from sarvessel.runtime.io.xview3_csv import read_labels_csv

    try:
        t = read_labels_csv(csv_path)
    except SarvesselError as exc:
        log.warning("not drawing labels: %s", exc)
        return None
    sel = t["scene_id"] == scene_id
    return (t["detect_scene_row"][sel], t["detect_scene_column"][sel], t["is_vessel"][sel])


def check_out_dir(out_dir: Path) -> None:
    """Create the output folder, or say in one line why it cannot be used."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SarvesselError(f"--out {out_dir}: exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SarvesselError(f"--out {out_dir}: cannot create the folder ({exc.strerror})") \
            from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise SarvesselError(f"--out {out_dir}: folder is not writable")


def check_writable_file(path: Path) -> None:
    """Refuse an output path that is a folder or lies in a folder that cannot be written."""
    if path.is_dir():
        raise SarvesselError(f"{path}: is a folder; an output file is written here")
    parent = path.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SarvesselError(f"{parent}: cannot create the folder ({exc.strerror})") \
                from exc
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise SarvesselError(f"{parent}: cannot write {path.name} there")
