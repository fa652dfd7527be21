"""One measured scene run: a detector over a scene through :func:`~sarvessel.runtime.detect.
detect_scene` (the path users run, outputs and journal included), with per-tile latency by stage,
peak RSS, RSS over time and, where a power sensor exists, energy.

:func:`measure_scene` runs in this process; :func:`measure_in_child` runs it in a fresh Python
process (``python -m sarvessel.runtime.bench``), so each backend's peak RSS is its own and
not the high-water mark of everything the benchmark did before, while this process samples the
power sensor around it (RAPL and the INA260 see the whole machine, not one process).

A run is named by a spec ``KIND[:PATH]``: any kind :func:`~sarvessel.runtime.detector.
make_detector` knows (``noop``, ``cfar``, ``onnx:MODEL``, ``sim:PACKAGE``, ``fpga:PACKAGE``),
``sim-paced[:PACKAGE]`` (the simulator held to the package's estimated accelerator time per
transfer), or ``peer:PATH.onnx`` (:class:`~sarvessel.runtime.bench.networks.PeerBackend`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.runtime.backends import BackendKind
from sarvessel.runtime.bench.latency import LatencyRecorder, timed_detector
from sarvessel.runtime.bench.memory import (
    RssSampler,
    current_rss_bytes,
    peak_rss_bytes,
    reset_peak_rss,
)
from sarvessel.runtime.detect import detect_scene
from sarvessel.runtime.detector import Detector, compose, make_detector
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io.outputs import write_json
from sarvessel.runtime.pipeline import PipelineConfig
from sarvessel.runtime.power import NO_SENSOR, NullSensor, PowerSensor, Sampler, SensorKind

log = logging.getLogger(__name__)

__all__ = ["PEER", "SIM_PACED", "RunSpec", "available_kinds", "build_detector", "energy_between",
           "measure_in_child", "measure_scene"]

#: Spec kind of a peer network (:class:`~sarvessel.runtime.bench.networks.PeerBackend`).
PEER = "peer"
#: Spec kind of the paced board simulator (``sim`` with ``paced=True``).
SIM_PACED = "sim-paced"
#: Backend kinds whose PATH is a deploy package, not a model.
_PACKAGE_KINDS = (BackendKind.SIM.value, BackendKind.FPGA.value)
_MB = 1e6


@dataclass(frozen=True)
class RunSpec:
    """What to run: a backend kind (or :data:`PEER`), its model, and the pipeline's settings.

    threads: onnxruntime intra-op threads; the default (None) is onnxruntime's. batch: tiles
    per backend call; the default is the pipeline's. overlap: tile overlap (px); the default is
    the pipeline's. label: the name in tables; the default is the kind (the file stem for peers).
    """

    kind: str
    model: Path | None = None
    threads: int | None = None
    batch: int = PipelineConfig.batch_size
    overlap: int | None = None
    label: str | None = None

    @classmethod
    def parse(cls, text: str, **kw: Any) -> RunSpec:
        """``"cfar"``, ``"onnx:path/model.onnx"``, ``"peer:yolov8n_640.onnx"``."""
        kind, _, model = text.partition(":")
        return cls(kind=kind, model=Path(model) if model else None, **kw)

    @property
    def name(self) -> str:
        """The label, else ``kind`` (``kind-<file stem>`` with an explicit model or package,
        the file stem for peers)."""
        if self.label:
            return self.label
        if self.kind == PEER and self.model is not None:
            return self.model.stem
        return self.kind + (f"-{self.model.stem}" if self.model else "")

    @property
    def arg(self) -> str:
        return self.kind + (f":{self.model}" if self.model else "")

    def config(self, tile_size: int) -> PipelineConfig:
        overlap = PipelineConfig.overlap if self.overlap is None else self.overlap
        return PipelineConfig(overlap=min(overlap, tile_size // 2), batch_size=self.batch)


def available_kinds() -> list[str]:
    """Backend kinds this build knows (``auto`` left out; ``sim-paced`` after ``sim``): the
    benchmark's default list, so a backend added to
    :class:`~sarvessel.runtime.backends.BackendKind` is benchmarked too."""
    kinds = []
    for k in BackendKind:
        if k is not BackendKind.AUTO:
            kinds.append(k.value)
        if k.value == "sim":
            kinds.append(SIM_PACED)
    return kinds


def build_detector(spec: RunSpec) -> Detector:
    """The detector ``spec`` names (raises :class:`SarvesselError` for an unknown kind or a
    backend that cannot run here, e.g. ``fpga`` without a board)."""
    if spec.kind == PEER:
        from sarvessel.runtime.bench.networks import PeerBackend

        if spec.model is None:
            raise SarvesselError("a peer run needs a model: peer:PATH.onnx")
        return compose(PeerBackend(spec.model, threads=spec.threads, name=spec.label))
    if spec.kind not in available_kinds():
        raise SarvesselError(f"backend {spec.kind!r} is not in this build (known: "
                             f"{', '.join(available_kinds())})")
    kind, paced = (BackendKind.SIM.value, True) if spec.kind == SIM_PACED else (spec.kind, False)
    if kind in _PACKAGE_KINDS:
        return make_detector(kind, package=spec.model, threads=spec.threads, paced=paced,
                             batch_size=spec.batch)
    return make_detector(kind, model=spec.model, threads=spec.threads)


def measure_scene(scene: Path, spec: RunSpec, *, out_dir: Path, warmup: bool = True,
                  rss_interval_s: float = 0.25) -> dict[str, Any]:
    """Run ``spec`` over ``scene`` once, in this process, writing the scene's outputs into
    ``out_dir``; return the figures (JSON-able).

    warmup: run one all-zero batch first, so one-off costs (onnxruntime's first-run allocation)
    are not in the first tile's latency; the default is True. rss_interval_s: seconds between
    RSS samples; the default is 0.25. The peak RSS is this process's since the call (reset
    where the kernel allows, see :func:`~sarvessel.runtime.bench.memory.reset_peak_rss`).
    """
    reset = reset_peak_rss()
    t0 = time.perf_counter()
    detector = build_detector(spec)
    build_s = time.perf_counter() - t0
    warmup_s = 0.0
    if warmup:
        t0 = time.perf_counter()
        n = min(spec.batch, 8)
        detector.detect(np.zeros((n, detector.channels, detector.tile_size, detector.tile_size),
                                 np.uint8))
        warmup_s = time.perf_counter() - t0
    baseline = current_rss_bytes()
    recorder = LatencyRecorder()
    timed = timed_detector(detector, recorder)
    with RssSampler(interval_s=rss_interval_s) as rss:
        t_start = time.monotonic()
        result, paths = detect_scene(scene, timed, out_dir=out_dir,
                                     config=spec.config(detector.tile_size), resume=False,
                                     on_row=recorder.on_row)
        t_end = time.monotonic()
    recorder.add_write(result.timings.write, result.tiles_run)
    wall = t_end - t_start
    timings = result.timings.as_dict()
    return {
        "label": spec.name, "spec": spec.arg, "backend": detector.name,
        "model": _model_file(detector),
        "scene": str(scene), "scene_id": result.scene_id,
        "height": result.height, "width": result.width, "megapixels": result.megapixels,
        "tile": detector.tile_size, "overlap": spec.config(detector.tile_size).overlap,
        "batch": spec.batch, "threads": spec.threads,
        "tiles_total": result.tiles_total, "tiles_run": result.tiles_run,
        "tiles_skipped_nodata": result.tiles_skipped_nodata,
        "detections": len(result.detections),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "wall_s": round(wall, 3),
        "pipeline_mpx_per_s": (None if result.mpx_per_s is None
                               else round(result.mpx_per_s, 3)),
        "mpx_per_s": round(result.megapixels / wall, 3) if wall > 0 else None,
        "tiles_per_s": round(result.tiles_run / wall, 3) if wall > 0 else None,
        "latency_ms_per_tile": recorder.summary(),
        "peak_rss_mb": round(peak_rss_bytes() / _MB, 1),
        "peak_rss_reset": reset,
        "baseline_rss_mb": None if baseline is None else round(baseline / _MB, 1),
        "rss_trace_mb": [[round(t - t_start, 3), round(b / _MB, 1)] for t, b in rss.samples],
        "build_s": round(build_s, 3), "warmup_s": round(warmup_s, 3),
        "t_start": t_start, "t_end": t_end,
        "outputs": {k: str(v) for k, v in paths.items()},
    }


def measure_in_child(
    scene: Path,
    spec: RunSpec,
    *,
    out_dir: Path,
    sensor: PowerSensor | None = None,
    timeout_s: float | None = None,
    python: str = sys.executable,
) -> dict[str, Any]:
    """:func:`measure_scene` in a fresh process, with power sampled here around it.

    sensor: the power sensor to sample (:func:`~sarvessel.runtime.power.detect_sensor`); the
    default (None) records no energy. timeout_s: the child is killed after this; the default
    is no limit. A child that fails (a backend that cannot run here, a bad scene) gives
    ``{"label", "spec", "skipped": its one-line error}`` instead of figures.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "run.json"
    if json_path.exists():
        json_path.unlink()
    cmd = [python, "-m", "sarvessel.runtime.bench", str(scene), "--spec", spec.arg,
           "--out", str(out_dir), "--json", str(json_path), "--batch", str(spec.batch)]
    if spec.threads is not None:
        cmd += ["--threads", str(spec.threads)]
    if spec.overlap is not None:
        cmd += ["--overlap", str(spec.overlap)]
    if spec.label:
        cmd += ["--label", spec.label]
    sampler = Sampler(sensor) if sensor is not None else None
    if sampler is not None:
        sampler.start()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              env=_child_env())
    except subprocess.TimeoutExpired:
        return {"label": spec.name, "spec": spec.arg,
                "skipped": f"timed out after {timeout_s:g} s"}
    finally:
        if sampler is not None:
            sampler.stop()
            sampler.poll()  # one reading after the child ended, so the trace spans its run
    if proc.returncode != 0 or not json_path.is_file():
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        log.warning("%s: not measured: %s", spec.name, why)
        return {"label": spec.name, "spec": spec.arg, "skipped": why}
    run = json.loads(json_path.read_text())
    run["energy"] = energy_between(sampler, run["t_start"], run["t_end"], run["megapixels"])
    return run


def energy_between(sampler: Sampler | None, t0: float, t1: float, megapixels: float
                   ) -> dict[str, Any]:
    """Energy the sampler's sensor saw over monotonic times [t0, t1]: J, average W, J/MPx,
    or a note saying why there is none (never an invented number)."""
    if sampler is None or sampler.sensor.kind is SensorKind.NONE:
        sensor = sampler.sensor if sampler is not None else None
        note = sensor.note if isinstance(sensor, NullSensor) else NO_SENSOR
        return {"sensor": "none", "note": note}
    trace = sampler.trace
    name = sampler.sensor.name
    if len(trace) < 2 or trace.start is None or trace.start > t0 or trace.end < t1:
        return {"sensor": name, "note": f"{name}: too few readings over the run "
                f"({len(trace)} samples)"}
    joules = float(trace.energy_at(t1) - trace.energy_at(t0))
    t, _, _ = trace.arrays()
    out = {"sensor": name, "kind": SensorKind(sampler.sensor.kind).value,
           "joules": round(joules, 3), "average_w": round(joules / (t1 - t0), 3),
           "joules_per_mpx": round(joules / megapixels, 4) if megapixels else None,
           "samples": int(((t >= t0) & (t <= t1)).sum()),
           "scope": "whole machine (every process on the rail the sensor measures)"}
    if trace.gone_at is not None and trace.gone_at <= t1:
        out["note"] = f"sensor disappeared during the run ({trace.gone_reason})"
    return out


def _model_file(detector: Detector) -> str | None:
    """The file or package the detector runs (None for noop and CFAR)."""
    backend = detector.backend
    for attr in ("model_path", "path"):  # onnx, peer
        v = getattr(backend, attr, None)
        if v is not None:
            return str(v)
    pkg = getattr(getattr(backend, "core", None), "package", None)  # sim, fpga
    return str(getattr(pkg, "root", pkg)) if pkg is not None else None


def _child_env() -> dict[str, str]:
    """The environment for a child: this process's, with ``sarvessel`` importable from where
    it was imported here (a source checkout run with PYTHONPATH, or an install)."""
    import sarvessel

    env = dict(os.environ)
    src = str(Path(sarvessel.__file__).resolve().parents[1])
    paths = env.get("PYTHONPATH", "").split(os.pathsep) if env.get("PYTHONPATH") else []
    if src not in paths:
        env["PYTHONPATH"] = os.pathsep.join([src, *paths])
    return env


def main(argv: list[str] | None = None) -> int:
    """Child entry: measure one run and write its JSON (see :func:`measure_in_child`)."""
    ap = argparse.ArgumentParser(prog="python -m sarvessel.runtime.bench",
                                 description="One measured scene run (a benchmark's child).")
    ap.add_argument("scene", type=Path)
    ap.add_argument("--spec", required=True, help="KIND[:MODEL] or peer:PATH.onnx")
    ap.add_argument("--out", type=Path, help="output folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--batch", type=int, default=PipelineConfig.batch_size)
    ap.add_argument("--overlap", type=int)
    ap.add_argument("--label")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    spec = RunSpec.parse(args.spec, threads=args.threads, batch=args.batch,
                         overlap=args.overlap, label=args.label)
    try:
        if args.out is None:
            with tempfile.TemporaryDirectory(prefix="sarvessel-bench-") as tmp:
                run = measure_scene(args.scene, spec, out_dir=Path(tmp))
        else:
            run = measure_scene(args.scene, spec, out_dir=args.out)
    except SarvesselError as exc:
        print(f"{spec.name}: {exc}", file=sys.stderr)
        return 2
    write_json(args.json, run)
    return 0
