"""Shared fixtures of the archive tests: generated scenes, what single ``detect`` runs make of
them, and a real LocalCluster (processes, 2 workers of 1 thread) on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sarvessel.cli import main
from sarvessel.synth.generate import synthesize_scene

#: (height, width, seed) of the four scenes most tests run: small, unequal sizes.
SCENES = ((1024, 768, 11), (768, 1024, 12), (900, 900, 13), (640, 1280, 14))
#: A taller scene (5 tile rows of one tile each) that a test slows down to kill its worker.
SLOW_SCENE = (2304, 512, 15)
#: Backend options every run of these tests uses: the shipped model, one thread, so archive
#: and single runs compute the same floats.
BACKEND = ("--backend", "onnx", "--threads", "1")


@pytest.fixture(scope="session")
def archive_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset root with the four scenes and the slow one (labels.csv, shoreline/)."""
    root = tmp_path_factory.mktemp("archive_scenes")
    for h, w, seed in (*SCENES, SLOW_SCENE):
        synthesize_scene(root, height=h, width=w, seed=seed)
    return root


@pytest.fixture(scope="session")
def scene_dirs(archive_root: Path) -> list[Path]:
    """The four scenes, in the order of :data:`SCENES`."""
    return [archive_root / f"synth{s:04d}{h}x{w}v" for h, w, s in SCENES]


@pytest.fixture(scope="session")
def slow_scene(archive_root: Path) -> Path:
    h, w, s = SLOW_SCENE
    return archive_root / f"synth{s:04d}{h}x{w}v"


@pytest.fixture(scope="session")
def single_runs(tmp_path_factory: pytest.TempPathFactory, scene_dirs: list[Path],
                slow_scene: Path) -> dict[str, str]:
    """Submission CSV text of one ``sarvessel detect`` run per scene, by scene id."""
    out = tmp_path_factory.mktemp("single")
    texts = {}
    for scene in (*scene_dirs, slow_scene):
        assert main(["-q", "detect", str(scene), "--out", str(out), *BACKEND]) == 0
        texts[scene.name] = (out / f"{scene.name}.csv").read_text()
    return texts


@pytest.fixture(scope="module")
def client() -> Iterator:
    """A client of a fresh LocalCluster: 2 worker processes with one thread each."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c
