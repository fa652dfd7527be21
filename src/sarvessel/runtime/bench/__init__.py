"""Benchmark room: the harness behind every performance figure. Runtime-safe (numpy,
onnxruntime, Pillow), so the same code measures on the board and on the ground.

Follow one figure: :mod:`.measure` runs a backend over a scene through ``detect_scene`` in a
fresh process and returns its figures — per-tile p50/p99 by stage (:mod:`.latency`: the
detector's calls timed per batch, the pipeline's per-row hook), MPx/s, peak RSS and RSS over time
(:mod:`.memory`), and energy where a power sensor exists (sampled by the parent,
:mod:`sarvessel.runtime.power`). :mod:`.scene` does that for every backend and peer on one scene
and times the networks alone per tile (:mod:`.networks`); :mod:`.fpga` puts the hardware
estimate beside the published DPU system; :mod:`.host` records the machine; :mod:`.report`
writes the JSON, the Markdown table and the Pillow plots (:mod:`.plots`).

``sarvessel bench SCENE --report DIR`` runs :func:`~.scene.bench_scene` on a scene you have;
``sarvessel bench --quick`` / ``--full`` is the suite in :mod:`sarvessel.benchmark` (ground:
generated scenes for scaling, the YOLOv8n peer export, accuracy). See ``docs/benchmarks.md``.
"""

from __future__ import annotations

from sarvessel.runtime.bench.host import host_info
from sarvessel.runtime.bench.latency import LatencyRecorder, Stage, timed_detector
from sarvessel.runtime.bench.measure import (
    PEER,
    RunSpec,
    available_kinds,
    measure_in_child,
    measure_scene,
)
from sarvessel.runtime.bench.memory import peak_rss_bytes, reset_peak_rss
from sarvessel.runtime.bench.report import render_markdown, scaling_summary, write_report
from sarvessel.runtime.bench.scene import bench_scene, default_threads

__all__ = [
    "PEER",
    "LatencyRecorder",
    "RunSpec",
    "Stage",
    "available_kinds",
    "bench_scene",
    "default_threads",
    "host_info",
    "measure_in_child",
    "measure_scene",
    "peak_rss_bytes",
    "render_markdown",
    "reset_peak_rss",
    "scaling_summary",
    "timed_detector",
    "write_report",
]
