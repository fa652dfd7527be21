"""Accuracy beside speed, per benchmarked configuration: the xView3 aggregate on held-out
generated scenes (seeds >= 900; training uses seeds below) and SSDD AP50 on real SAR chips.

A configuration is a backend spec as the speed runs name it. The scene figure runs the spec's
own detector through the same streaming pipeline; SSDD needs a model trained for SSDD, so a
network backend is scored with the SSDD model on the same engine (``onnx``: onnxruntime), and
configurations with no SSDD counterpart say why (never a number they did not earn).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sarvessel.benchmark.scenes import ensure_scene
from sarvessel.runtime.bench.measure import PEER, SIM_PACED, RunSpec, build_detector
from sarvessel.runtime.errors import SarvesselError

log = logging.getLogger(__name__)

__all__ = ["FIRST_HELD_OUT_SEED", "ssdd_accuracy", "ssdd_counterpart", "xview3_accuracy"]

#: Generated scenes from this seed on are never trained on (sarvessel.model.data).
FIRST_HELD_OUT_SEED = 900
#: Why a configuration has no accuracy figure.
_NO_DETECTOR = "no detector, I/O path only"
_PEER = "random weights: timed only"


def xview3_accuracy(specs: Sequence[RunSpec], *, root: Path, seeds: Sequence[int],
                    size: int) -> dict[str, Any]:
    """Each spec's xView3 score over held-out generated ``size``² scenes with ``seeds``
    (generated under ``root`` if missing), through :func:`~sarvessel.runtime.pipeline.run_scene`
    and the official metric."""
    from sarvessel.evaluation.scoring import score_csv
    from sarvessel.runtime.io.outputs import write_submissions_csv
    from sarvessel.runtime.io.scene import open_scene
    from sarvessel.runtime.pipeline import run_scene

    bad = [s for s in seeds if s < FIRST_HELD_OUT_SEED]
    if bad:
        raise SarvesselError(f"evaluation seeds must be >= {FIRST_HELD_OUT_SEED} (held out "
                             f"from training), got {bad}")
    root = Path(root)
    scenes = [ensure_scene(root, height=size, width=size, seed=s) for s in seeds]
    results: dict[str, Any] = {}
    for spec in specs:
        if spec.kind == "noop":
            results[spec.name] = {"skipped": _NO_DETECTOR}
            continue
        if spec.kind == PEER:
            results[spec.name] = {"skipped": _PEER}
            continue
        if spec.kind == SIM_PACED:
            results[spec.name] = {"skipped": "the same detections as sim (pacing only waits)"}
            continue
        try:
            detector = build_detector(spec)
        except SarvesselError as exc:
            results[spec.name] = {"skipped": str(exc)}
            continue
        dets, mpx, t0 = {}, 0.0, time.perf_counter()
        for folder in scenes:
            with open_scene(folder) as sc:
                res = run_scene(sc, detector, config=spec.config(detector.tile_size))
            dets[res.scene_id] = res.detections
            mpx += res.megapixels
        secs = time.perf_counter() - t0
        pred = root / f"pred_{spec.name}.csv"
        write_submissions_csv(pred, dets)
        s = score_csv(pred, root / "labels.csv", shoreline_root=root / "shoreline")
        results[spec.name] = {**{k: round(float(v), 4) for k, v in s.as_dict(scenes=False).items()
                                 if isinstance(v, float)},
                              "tp": s.tp, "fp": s.fp, "fn": s.fn, "n_labels": s.n_labels,
                              "mpx": round(mpx, 1), "mpx_per_s": round(mpx / secs, 2)}
        log.info("%s: xView3 aggregate %.4f on %d scenes", spec.name, s.aggregate, len(scenes))
    return {"seeds": _seed_text(seeds), "scenes": len(scenes), "size": size,
            "root": str(root), "results": results}


def ssdd_counterpart(scene_model: Path, ssdd_model: Path) -> Path:
    """The SSDD model exported like ``scene_model``: the same suffix after the model name
    (``xview3_w4a4_intfloat.onnx`` → ``ssdd_w4a4_intfloat.onnx``), when that file exists;
    else ``ssdd_model``."""
    stem, base = Path(scene_model).stem, "xview3_w4a4"
    suffix = stem[len(base):] if stem.startswith(base) else ""
    cand = Path(ssdd_model).with_name(Path(ssdd_model).stem + suffix + ".onnx")
    return cand if suffix and cand.is_file() else Path(ssdd_model)


def ssdd_accuracy(specs: Sequence[RunSpec], *, model: Path, split: str = "test",
                  limit: int | None = None, threads: int | None = None) -> dict[str, Any]:
    """SSDD AP50 / AP50-95 for each spec: the SSDD ``model`` on the spec's engine where there
    is one (``onnx``: the SSDD export of the same kind as the spec's scene model,
    :func:`ssdd_counterpart`), else the reason there is no figure. limit: the first images
    only."""
    from sarvessel.evaluation.evaluate import evaluate
    from sarvessel.runtime.backends import DEFAULT_SCENE_MODEL

    results: dict[str, Any] = {}
    done: dict[Path, dict[str, Any]] = {}
    images = None
    for spec in specs:
        if spec.kind == "noop":
            results[spec.name] = {"skipped": _NO_DETECTOR}
        elif spec.kind == PEER:
            results[spec.name] = {"skipped": _PEER}
        elif spec.kind == "cfar":
            results[spec.name] = {"skipped": "CFAR is set up for calibrated dB scenes; SSDD "
                                  "chips are 8-bit images"}
        elif spec.kind != "onnx":
            results[spec.name] = {"skipped": f"no SSDD model for the {spec.kind} backend: "
                                  "it needs its own SSDD deploy package"}
        else:
            m = ssdd_counterpart(spec.model or DEFAULT_SCENE_MODEL, model)
            if m not in done:
                try:
                    r = evaluate(m, "ssdd", split=split, threads=threads, limit=limit)
                except SarvesselError as exc:
                    return {"skipped": str(exc), "split": split}
                images = r.images
                done[m] = {"ap50": round(r.report.ap50, 4), "ap50_95": round(r.report.ap50_95, 4),
                           "model": str(m), "images": r.images,
                           "ms_per_image": round(1e3 * r.seconds / max(1, r.images), 1)}
                log.info("%s: SSDD AP50 %.4f on %d images", m.name, r.report.ap50, r.images)
            results[spec.name] = done[m]
    return {"split": split, "images": images, "limit": limit,
            "models": {k: v["model"] for k, v in results.items() if "model" in v},
            "results": results}


def _seed_text(seeds: Sequence[int]) -> str:
    s = sorted(seeds)
    if len(s) > 1 and s == list(range(s[0], s[-1] + 1)):
        return f"{s[0]}-{s[-1]}"
    return ",".join(map(str, s))
