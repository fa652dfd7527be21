"""The ``sim`` backend on the shipped scene model's simulator package: it loads through the
model contract, detects what the CPU graph detects, paces to the package's estimate, and its
timing-only mode decodes to an empty sea."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarvessel.runtime.backends import DEFAULT_SCENE_MODEL, DEFAULT_SIM_PACKAGE, make_backend
from sarvessel.runtime.backends.accelerator import AcceleratorBackend
from sarvessel.runtime.board.accelerator import SimAccelerator
from sarvessel.runtime.detect import detect_scene
from sarvessel.runtime.detector import compose, make_detector
from sarvessel.runtime.errors import ModelError
from sarvessel.runtime.pipeline import PipelineConfig
from sarvessel.runtime.power import ManualClock


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sarvessel.synth.generate import synthesize_scene

    return synthesize_scene(tmp_path_factory.mktemp("s"), height=1024, width=1536,
                            seed=905).scene_dir


def test_sim_detects_what_the_cpu_fallback_detects_on_a_scene(scene: Path, tmp_path: Path
                                                               ) -> None:
    cfg = PipelineConfig(batch_size=4)
    _, sim = detect_scene(scene, make_detector("sim"), out_dir=tmp_path / "sim", config=cfg)
    _, cpu = detect_scene(scene, make_detector("onnx", model=DEFAULT_SCENE_MODEL),
                          out_dir=tmp_path / "cpu", config=cfg)
    assert sim["csv"].read_text() == cpu["csv"].read_text()
    assert len(sim["csv"].read_text().splitlines()) > 1  # it found something to compare


def test_the_package_carries_the_contract_and_the_pace() -> None:
    backend = make_backend("sim")
    assert isinstance(backend, AcceleratorBackend) and backend.name == "sim"
    assert (backend.channels, backend.tile_size) == (2, 512)
    assert backend.metadata.name == "xview3_w4a4" and backend.model_dir == DEFAULT_SIM_PACKAGE
    est = backend.core.package.config["estimate"]
    assert backend.core.package.seconds_per_tile == pytest.approx(
        est["cycles_per_tile"] / (backend.core.package.clock_mhz * 1e6))
    assert backend.fingerprint.startswith("sim:")
    with pytest.raises(ModelError, match="--package is for the sim and fpga"):
        make_backend("onnx", package=DEFAULT_SIM_PACKAGE)
    with pytest.raises(ModelError, match="not --model"):
        make_backend("sim", model=DEFAULT_SCENE_MODEL)


def test_paced_timing_only_sim_waits_the_accelerator_time_and_sees_an_empty_sea() -> None:
    clock = ManualClock(0.0)
    core = SimAccelerator(DEFAULT_SIM_PACKAGE, batch_size=4, timing_only=True, clock=clock)
    det = compose(AcceleratorBackend(core))
    tiles = np.full((6, 2, 512, 512), 120, np.uint8)
    found = det.detect(tiles)
    assert [len(d) for d in found] == [0] * 6
    assert core.paced_wait_s == pytest.approx(6 * core.seconds_per_tile)
    assert clock.now() == pytest.approx(6 * core.seconds_per_tile)
