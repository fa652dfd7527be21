"""Benchmark one scene: every backend and peer through the pipeline (each in its own process),
the networks alone per tile with the same threads, and the FPGA side. Runtime-only: it needs a
scene on disk and ONNX files, nothing from the ground or host tools, so it runs on the board
(``sarvessel bench SCENE --report DIR``); the suite (:mod:`sarvessel.benchmark`) calls it on a
generated scene and adds scaling and accuracy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sarvessel.runtime.backends import DEFAULT_SCENE_MODEL, BackendKind
from sarvessel.runtime.bench.fpga import fpga_side
from sarvessel.runtime.bench.measure import PEER, SIM_PACED, RunSpec, measure_in_child
from sarvessel.runtime.bench.networks import network_ratios, time_networks
from sarvessel.runtime.bench.report import mean_ms_per_tile
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.power import PowerSensor

log = logging.getLogger(__name__)

__all__ = ["bench_scene", "default_threads"]


def default_threads() -> int:
    """Threads every onnxruntime session of a benchmark gets (the same for ours and the peers):
    the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def bench_scene(
    scene: Path,
    *,
    specs: Sequence[RunSpec],
    out_dir: Path,
    peers: Mapping[str, Path] | None = None,
    threads: int | None = None,
    batch: int = 8,
    network_batches: Sequence[int] = (1, 8),
    network_repeats: int = 5,
    hw_estimate: Path | None = None,
    sensor: PowerSensor | None = None,
    timeout_s: float | None = None,
    reuse: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Measure ``scene`` with each of ``specs`` and each peer; return the report sections
    ``backends``, ``peers`` and ``fpga``.

    peers: label → peer ONNX file (:class:`~sarvessel.runtime.bench.networks.PeerBackend`),
    run through the pipeline and timed per tile beside our model; the default is none.
    threads: onnxruntime threads for every session; the default is :func:`default_threads`.
    batch: tiles per backend call. network_batches, network_repeats: the per-tile timing
    (:func:`~sarvessel.runtime.bench.networks.time_networks`). hw_estimate: a ``sarvessel hw
    estimate`` JSON for the FPGA side. sensor: power sensor sampled around each run.
    timeout_s: per run. reuse: runs already measured on this scene, by label (not run again).
    """
    threads = threads or default_threads()
    out_dir = Path(out_dir)
    runs: list[dict[str, Any]] = []
    all_specs = list(specs) + [RunSpec(PEER, model=Path(p), threads=threads, batch=batch,
                                       label=label) for label, p in (peers or {}).items()]
    for spec in all_specs:
        if reuse and spec.name in reuse:
            runs.append(dict(reuse[spec.name]))
            continue
        log.info("measuring %s on %s", spec.name, scene)
        runs.append(measure_in_child(scene, spec, out_dir=out_dir / "runs" / spec.name,
                                     sensor=sensor, timeout_s=timeout_s))
    out: dict[str, Any] = {"backends": runs}
    onnx_specs = [s for s in specs if s.kind == BackendKind.ONNX.value]
    if peers:
        out["peers"] = compare_with_peers(onnx_specs, peers, threads=threads,
                                          batches=network_batches, repeats=network_repeats)
    onnx_run = next((r for r in runs if r.get("backend") == "onnx" and not r.get("skipped")),
                    None)
    done = [r for r in runs if not r.get("skipped")]
    sim_run = next((r for r in done if r["label"] == SIM_PACED),
                   next((r for r in done if r.get("backend") == "sim"), None))
    host = mean_ms_per_tile(onnx_run) if onnx_run else None
    out["fpga"] = fpga_side(hw_estimate, host_ms_per_tile=host,
                            write_s_per_scene=onnx_run["timings_s"]["write"] if onnx_run
                            else None,
                            host_label=f"{onnx_run['label']} run" if onnx_run else "",
                            sim_run=sim_run)
    return out


def compare_with_peers(onnx_specs: Sequence[RunSpec], peers: Mapping[str, Path], *,
                       threads: int, batches: Sequence[int], repeats: int) -> dict[str, Any]:
    """Our networks (each ``onnx`` spec's model; the shipped default without one) and each peer
    timed per tile, round-robin, with the same threads; ratios against the first of ours."""
    from sarvessel.runtime.backends.onnx import OnnxBackend
    from sarvessel.runtime.bench.networks import PeerBackend

    models = list(dict.fromkeys(Path(s.model) if s.model else DEFAULT_SCENE_MODEL
                                for s in onnx_specs)) or [DEFAULT_SCENE_MODEL]
    ours = [f"ours ({m.stem})" for m in models]
    try:
        nets = {label: OnnxBackend(m, threads=threads) for label, m in zip(ours, models,
                                                                         strict=True)}
        nets |= {label: PeerBackend(p, threads=threads, name=label) for label, p in peers.items()}
    except SarvesselError as exc:
        return {"skipped": str(exc)}
    timings = time_networks(nets, batch_sizes=batches, repeats=repeats)
    return {"threads": threads, "reference": ours[0], "networks": timings,
            "ratios": network_ratios(timings, ours[0])}
