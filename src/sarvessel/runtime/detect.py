"""Detect vessels in one scene and write its outputs: the library entry every front end calls.

``sarvessel detect``, the demo, the tile server's scene jobs and archive tasks all call
:func:`detect_scene`, so a scene gives the same files whoever runs it:
``<scene_id>.csv`` (xView3 submission), ``.geojson`` (georeferenced scenes only),
``_quicklook.png`` and ``_summary.json`` in the output folder. While it runs, the run holds
``<scene_id>.journal.lock`` and keeps ``<scene_id>.journal.jsonl`` (finished tile rows), both
removed only after every output is in place, so a killed run resumes where it stopped and a
second run of the same scene into the same folder is refused or waits
(:mod:`sarvessel.runtime.journal`). The outputs are committed as one set, the summary last
(:mod:`sarvessel.runtime.io.output_set`); :func:`read_scene_outputs` reads a set back and
refuses an incomplete or mixed one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sarvessel.runtime.detector import Detector, compose
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io import output_set
from sarvessel.runtime.io.output_set import OutputSet, read_output_set
from sarvessel.runtime.io.outputs import (
    check_out_dir,
    check_writable_file,
    remove_stale_temporaries,
    write_geojson,
    write_json,
    write_quicklook_png,
    write_submission_csv,
)
from sarvessel.runtime.io.scene import Scene, open_scene
from sarvessel.runtime.journal import JobLock, Journal, lock_path
from sarvessel.runtime.pipeline import (
    PipelineConfig,
    ProgressFn,
    RowHook,
    SceneResult,
    journal_key,
    run_scene,
)
from sarvessel.runtime.power import PowerGovernor, write_power_trace_png

log = logging.getLogger(__name__)

__all__ = ["OUTPUT_NAMES", "check_out_dir", "check_writable_file", "detect_scene",
           "journal_path", "output_paths", "read_scene_outputs", "scene_summary"]

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
    """The journal of a running scene (finished tile rows, JSON lines); its lock is
    :func:`~sarvessel.runtime.journal.lock_path` of it."""
    return Path(out_dir) / f"{scene_id}.journal.jsonl"


def read_scene_outputs(out_dir: Path, scene_id: str) -> OutputSet:
    """The outputs of ``scene_id`` in ``out_dir`` as one checked set (files by kind, the
    summary, the run id). Raises :class:`~sarvessel.runtime.io.output_set.OutputSetError`
    when no run finished there, or its set is incomplete or mixed: a finished scene is one
    this returns for."""
    return read_output_set(output_paths(out_dir, scene_id))


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
    wait_s: float = 0.0,
) -> tuple[SceneResult, dict[str, Path]]:
    """Run one scene through ``detector`` and write its outputs into ``out_dir``.

    resume: reuse the finished rows of an interrupted run of the same job (the default); False
    starts afresh. progress: called with (tiles done, tiles in total) after each tile row.
    governor: a started power governor that paces the backend calls and measures the scene's
    energy (its report goes into the summary under ``power``, and a trace PNG beside the
    quicklook when a sensor gave readings); the default measures nothing.
    on_row: per-row stage timings for benchmarks (:data:`~sarvessel.runtime.pipeline.RowHook`).
    wait_s: seconds to wait for another live run of this scene into ``out_dir`` to finish;
    the default 0 refuses at once (:class:`~sarvessel.runtime.journal.JobLockedError`),
    ``math.inf`` waits as long as it takes. Output paths are checked before any tile runs.
    Returns the result and the paths written, by kind (no ``geojson`` for a scene without
    georeferencing: the summary's ``notes`` say why).
    """
    out_dir = Path(out_dir)
    config = config or PipelineConfig()
    if not isinstance(detector, Detector):  # a bare backend: its post stage, as run_scene does
        detector = compose(detector)
    check_out_dir(out_dir)
    with open_scene(scene_path) as scene:
        sid = scene.scene_id
        journal = journal_path(out_dir, sid)
        paths = output_paths(out_dir, sid)
        for path in [journal, lock_path(journal), *paths.values()]:  # before the scene runs
            check_writable_file(path)
        jr = Journal(journal, journal_key(scene, detector, config))
        with JobLock(lock_path(journal), job=jr.job, wait_s=wait_s):
            # this run owns the scene's names in out_dir now: what others left is stale
            remove_stale_temporaries(out_dir, [journal, *paths.values()], owned=True)
            output_set.remove_stale_staging(out_dir, sid)
            if not resume:
                jr.discard()
            try:
                t_power = governor.clock.now() if governor else 0.0
                result = run_scene(scene, detector, config=config, journal=jr,
                                   progress=progress, pacer=governor, on_row=on_row)
                result.power = (governor.report(start=t_power, megapixels=result.megapixels)
                                if governor else None)
                written = _write_outputs(scene, result, detector.name, jr.job, paths,
                                         governor=governor, t_power=t_power)
            finally:
                jr.close()
            jr.discard()
    return result, written


def _write_outputs(scene: Scene, result: SceneResult, backend: str, job: str,
                   paths: dict[str, Path], *, governor: PowerGovernor | None,
                   t_power: float) -> dict[str, Path]:
    """Write the outputs into a staging folder, then commit them as one set, summary last
    (:mod:`~sarvessel.runtime.io.output_set`)."""
    sid = scene.scene_id
    run_id = uuid.uuid4().hex
    out_dir = paths["json"].parent
    paths = {**paths, "power_png": out_dir / POWER_PNG.format(sid=sid)}
    stage = output_set.staging_dir(out_dir, sid)
    stage.mkdir()
    try:
        staged = {k: stage / p.name for k, p in paths.items()}
        power = result.power
        t0 = time.perf_counter()
        dets = result.detections
        notes: list[str] = []
        write_submission_csv(staged["csv"], sid, dets, pixel_size_m=scene.pixel_size_m)
        if scene.georef is not None:
            write_geojson(staged["geojson"], sid, dets, to_lonlat=scene.to_lonlat,
                          pixel_size_m=scene.pixel_size_m)
        else:
            del staged["geojson"]
            notes.append("no GeoJSON: the scene has no georeferencing (GeoJSON coordinates "
                         "are lon/lat); positions are in the CSV, in scene pixels")
            log.warning("%s: %s", sid, notes[-1])
        write_quicklook_png(staged["png"], result.thumbnail, scale=result.thumbnail_scale,
                            detections=dets, labels=scene_labels(scene.source, sid),
                            title=f"{sid}  {backend}  {len(dets)} detections")
        if governor is not None and power is not None and power.samples >= 2:
            write_power_trace_png(staged["power_png"], governor.sampler.trace, start=t_power,
                                  budget_w=governor.budget_w, idle_w=governor.idle_w,
                                  window_s=governor.window_s, rows=governor.rows,
                                  pauses=governor.pauses, title=f"{sid}  power")
        else:
            del staged["power_png"]
        result.timings.write = time.perf_counter() - t0
        summary = {**scene_summary(result, backend), "run_id": run_id, "job": job,
                   "power": power.to_dict() if power is not None else None, "notes": notes,
                   "outputs": output_set.describe({k: p for k, p in staged.items()
                                                   if k != output_set.SUMMARY})}
        write_json(staged["json"], summary)
        output_set.commit(staged, paths,
                          drop=[p for k, p in paths.items() if k not in staged])
    finally:
        for leftover in stage.iterdir():
            leftover.unlink()
        stage.rmdir()
    return {k: paths[k] for k in staged}


def scene_summary(result: SceneResult, backend: str) -> dict:
    """The ``_summary.json`` of a scene run."""
    return {"scene_id": result.scene_id, "backend": backend, "height": result.height,
            "width": result.width, "megapixels": result.megapixels,
            "detections": len(result.detections), "tiles_total": result.tiles_total,
            "tiles_run": result.tiles_run, "tiles_skipped_nodata": result.tiles_skipped_nodata,
            "tiles_skipped_land": result.tiles_skipped_land,
            "tiles_skipped_dark": result.tiles_skipped_dark,
            "tiles_resumed": result.tiles_resumed,
            "detections_outside_tile": result.detections_outside_tile,
            "mpx_per_s": result.mpx_per_s, "timings_s": result.timings.as_dict()}


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
