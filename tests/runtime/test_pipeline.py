"""The scene pipeline end to end on real GeoTIFF scenes, with small deterministic backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from sarvessel.runtime.backends.base import Backend, NoopBackend
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.errors import SceneError
from sarvessel.runtime.io.scene import open_scene
from sarvessel.runtime.pipeline import PipelineConfig, run_scene
from tests.runtime.conftest import bright_pixel_detections

TARGETS = [(40, 50), (300, 700), (505, 260), (770, 1010), (1020, 30)]  # (row, col)


def _scene(tmp_path: Path, h: int = 1100, w: int = 1050, *, nodata_rows: int = 0) -> Path:
    rng = np.random.default_rng(0)
    vv = (rng.standard_normal((h, w)) - 22).astype(np.float32)
    for r, c in TARGETS:
        if r < h and c < w:
            vv[r, c] = 25.0  # a bright point target (clipped to 20 dB = 255)
    vv[:nodata_rows] = -32768
    folder = tmp_path / "scene_v"
    folder.mkdir()
    tifffile.imwrite(folder / "VV_dB.tif", vv, tile=(256, 256))
    tifffile.imwrite(folder / "VH_dB.tif", vv - 8, tile=(256, 256))
    return folder


class BrightestPixel:
    """Reports every pixel of channel 0 at 255 (a point target), in tile coordinates."""

    name = "brightest"
    fingerprint = "brightest"
    channels = 2

    def __init__(self, tile_size: int = 256, fail_after: int | None = None) -> None:
        self.tile_size = tile_size
        self.calls = 0
        self.fail_after = fail_after

    def infer(self, batch: np.ndarray) -> list[Detections]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated power loss")
        return bright_pixel_detections(batch)


def _positions(d: Detections) -> list[tuple[int, int]]:
    return sorted(zip(d.rows.astype(int).tolist(), d.cols.astype(int).tolist(), strict=True))


def test_backend_protocol_is_met():
    assert isinstance(BrightestPixel(), Backend) and isinstance(NoopBackend(), Backend)


@pytest.mark.parametrize("overlap", [0, 32, 100])
def test_every_target_found_once_in_scene_coordinates(tmp_path, overlap):
    with open_scene(_scene(tmp_path)) as sc:
        res = run_scene(sc, BrightestPixel(), config=PipelineConfig(overlap=overlap,
                                                                   batch_size=3))
    assert _positions(res.detections) == sorted(TARGETS)
    assert res.tiles_run == res.tiles_total and res.tiles_skipped_nodata == 0
    assert res.timings.total > 0 and res.mpx_per_s > 0
    assert res.thumbnail.shape == (1100, 1050)  # small scene: thumbnail at full resolution


def test_nodata_tiles_are_skipped_and_all_nodata_is_an_error(tmp_path):
    with open_scene(_scene(tmp_path, nodata_rows=600)) as sc:
        res = run_scene(sc, BrightestPixel(), config=PipelineConfig(overlap=0))
    assert res.tiles_skipped_nodata == 2 * 5  # rows 0-255 and 256-511 of 5 columns
    assert _positions(res.detections) == sorted(t for t in TARGETS if t[0] >= 600)
    (tmp_path / "b").mkdir()
    with open_scene(_scene(tmp_path / "b", nodata_rows=1100)) as sc, pytest.raises(
        SceneError, match="no valid pixels"
    ):
        run_scene(sc, NoopBackend(tile_size=256))


def test_scene_smaller_than_a_tile_is_padded(tmp_path):
    with open_scene(_scene(tmp_path, h=200, w=120)) as sc:
        res = run_scene(sc, BrightestPixel(tile_size=256))
    assert _positions(res.detections) == [(40, 50)]


def test_interrupted_run_resumes_from_journal_without_losing_rows(tmp_path):
    scene = _scene(tmp_path)
    journal = tmp_path / "out" / "job.journal.jsonl"
    cfg = PipelineConfig(overlap=0, batch_size=5)  # one backend call per tile row
    with open_scene(scene) as sc, pytest.raises(RuntimeError, match="power loss"):
        run_scene(sc, BrightestPixel(fail_after=3), config=cfg, journal=journal)
    assert len(journal.read_text().splitlines()) == 1 + 3  # header + 3 finished tile rows
    backend = BrightestPixel()
    with open_scene(scene) as sc:
        res = run_scene(sc, backend, config=cfg, journal=journal)
    assert backend.calls == 5 - 3  # only the unfinished rows ran again
    assert res.tiles_resumed == 3 * 5
    assert _positions(res.detections) == sorted(TARGETS)


def test_journal_of_another_job_is_not_reused(tmp_path):
    scene = _scene(tmp_path)
    journal = tmp_path / "j.jsonl"
    with open_scene(scene) as sc:
        run_scene(sc, BrightestPixel(), config=PipelineConfig(overlap=0), journal=journal)
        backend = BrightestPixel()
        res = run_scene(sc, backend, config=PipelineConfig(overlap=16), journal=journal)
    assert res.tiles_resumed == 0 and backend.calls > 0


def _interrupted(scene: Path, journal: Path, cfg: PipelineConfig, rows: int = 3) -> None:
    """Run ``scene`` until a simulated power loss after ``rows`` tile rows."""
    with open_scene(scene) as sc, pytest.raises(RuntimeError, match="power loss"):
        run_scene(sc, BrightestPixel(fail_after=rows), config=cfg, journal=journal)


def test_a_record_torn_by_a_power_cut_costs_one_row_not_the_rest(tmp_path):
    """Once, a torn line made every later record unreadable and appends glued onto it."""
    scene, journal = _scene(tmp_path), tmp_path / "j.jsonl"
    cfg = PipelineConfig(overlap=0, batch_size=5)
    _interrupted(scene, journal, cfg)
    lines = journal.read_text().splitlines()
    assert len(lines) == 1 + 3  # header, tile rows 0, 1, 2
    journal.write_text("\n".join([lines[0], lines[1][: len(lines[1]) // 2], lines[2],
                                   lines[3][:-7]]))  # rows 0 and 2 torn, no final newline
    _interrupted(scene, journal, cfg, rows=1)  # keeps row 1, runs row 0 again, then dies
    lines = journal.read_text().splitlines()
    assert len(lines) == 1 + 2 and all(line.endswith("}}") for line in lines)
    backend = BrightestPixel()
    with open_scene(scene) as sc:
        res = run_scene(sc, backend, config=cfg, journal=journal)
    assert backend.calls == 3 and res.tiles_resumed == 2 * 5  # rows 2, 3, 4 run now
    assert _positions(res.detections) == sorted(TARGETS)
    # throughput counts the tiles this run made, not the resumed ones
    assert res.mpx_per_s == pytest.approx(res.megapixels * 3 / 5 / res.timings.total)


class Thresholded(BrightestPixel):
    """BrightestPixel with a setting that changes its output, named in its fingerprint."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.fingerprint = f"brightest:level={level}"


def test_rows_of_another_detector_or_other_files_are_not_resumed(tmp_path):
    """Resuming once reused another model's rows (the key held only the backend's name) and
    another scene's rows under the same scene id."""
    scene, journal = _scene(tmp_path), tmp_path / "j.jsonl"
    cfg = PipelineConfig(overlap=0, batch_size=5)
    with open_scene(scene) as sc, pytest.raises(RuntimeError, match="power loss"):
        b = Thresholded(1)
        b.fail_after = 3
        run_scene(sc, b, config=cfg, journal=journal)
    backend = Thresholded(2)
    with open_scene(scene) as sc:
        res = run_scene(sc, backend, config=cfg, journal=journal)
    assert res.tiles_resumed == 0 and backend.calls == 5
    _interrupted(scene, journal, cfg)
    vh = scene / "VH_dB.tif"  # the band is replaced (say, recalibrated) before the rerun
    tifffile.imwrite(vh, tifffile.imread(vh) - 1.0, tile=(256, 256))
    backend = BrightestPixel()
    with open_scene(scene) as sc:
        res = run_scene(sc, backend, config=cfg, journal=journal)
    assert res.tiles_resumed == 0 and backend.calls == 5


@pytest.mark.parametrize("fill", [-32768.0, np.nan])
def test_a_band_without_data_is_refused_and_partial_gaps_are_nodata(tmp_path, fill):
    """A VH band of nodata or NaN once ran as real backscatter (validity came from VV alone)."""
    scene = _scene(tmp_path)
    vh = tifffile.imread(scene / "VH_dB.tif")
    tifffile.imwrite(scene / "VH_dB.tif", np.full_like(vh, fill), tile=(256, 256))
    with open_scene(scene) as sc, pytest.raises(SceneError, match="band VH_dB holds no data"):
        run_scene(sc, BrightestPixel())
    gap = vh.copy()
    gap[:, 600:] = fill  # VH missing over the right part: no detections there
    tifffile.imwrite(scene / "VH_dB.tif", gap, tile=(256, 256))
    with open_scene(scene) as sc:
        res = run_scene(sc, BrightestPixel(), config=PipelineConfig(overlap=0))
    assert _positions(res.detections) == sorted(t for t in TARGETS if t[1] < 600)
    assert res.tiles_skipped_nodata == 5 * 2  # the tile columns at 768 and 794 hold no data
    gap = vh.copy()
    gap[650:680] = fill  # rows shared by the tile rows at 432 and 648: masked in both
    gap[-3:] = fill  # a ragged last few rows in VH alone: masked, not a broken band
    tifffile.imwrite(scene / "VH_dB.tif", gap, tile=(256, 256))
    vv = tifffile.imread(scene / "VV_dB.tif")
    vv[665, 100] = 25.0  # a target inside the VH gap: no detection
    tifffile.imwrite(scene / "VV_dB.tif", vv, tile=(256, 256))
    with open_scene(scene) as sc:
        res = run_scene(sc, BrightestPixel(), config=PipelineConfig(overlap=40))
    assert _positions(res.detections) == sorted(TARGETS)


def test_model_wanting_more_channels_than_the_scene_has(tmp_path):
    class ThreeChannels(BrightestPixel):
        channels = 4

    with open_scene(_scene(tmp_path)) as sc, pytest.raises(SceneError, match="takes 4 channels"):
        run_scene(sc, ThreeChannels())


def test_model_wanting_resampled_images_is_refused(tmp_path):
    from sarvessel.runtime.contract import ModelMetadata

    class Upsampling(BrightestPixel):
        metadata = ModelMetadata(name="up", tile_size=256, channels=2, stride=8, reg_max=16,
                                 nc=1, input_scale=1.5)

    with open_scene(_scene(tmp_path)) as sc, pytest.raises(SceneError, match="resampled by 1.5"):
        run_scene(sc, Upsampling())


@pytest.mark.parametrize("units", ["dn", "linear"])
def test_bands_not_in_db_are_refused_before_any_tile_runs(tmp_path, units):
    """A raw GRD TIFF (uint16 digital numbers) or a linear sigma0 band is valid numbers, but
    read as dB the detector would see a white or flat grey scene: refused, naming the file,
    by the pre-scan's windows (rows 0-255 are nodata here), before any tile runs and before
    a journal exists (issue #34, 4: the journal header was written first)."""
    rng = np.random.default_rng(1)
    h, w = 700, 600
    if units == "dn":
        vv = rng.integers(40, 2000, (h, w)).astype(np.uint16)
        vv[:256] = 0  # GRD nodata: 0 DN is read as 0 dB, so mark it as xView3 nodata instead
        vv = np.where(np.arange(h)[:, None] < 256, -32768, vv.astype(np.float32))
    else:
        vv = rng.gamma(1.0, 0.03, (h, w)).astype(np.float32)  # sigma0 of sea, linear
        vv[:256] = np.nan
    path = tmp_path / f"{units}.tif"
    two_bands = {"photometric": "minisblack", "planarconfig": "separate"}
    tifffile.imwrite(path, np.stack([vv, vv]).astype(np.float32), **two_bands)
    backend = BrightestPixel()
    journal = tmp_path / "out" / f"{units}.journal.jsonl"
    with open_scene(path) as sc, pytest.raises(
        SceneError, match=rf"{units}.tif: 36 windows sampled over the scene: 100% of the valid "
                          r"VV_dB samples are at or above 0 dB.*convert it to dB"):
        run_scene(sc, backend, config=PipelineConfig(overlap=0), journal=journal)
    assert backend.calls == 0
    assert sorted(p.name for p in journal.parent.iterdir()) == []  # no journal, no lock
    # the same scene in dB runs
    db = 10 * np.log10(np.clip(vv, 1e-6, None)) if units == "linear" else 20 * np.log10(
        np.clip(vv, 1, None)) - 80
    db[:256] = -32768
    tifffile.imwrite(path, np.stack([db, db - 6]).astype(np.float32), **two_bands)
    with open_scene(path) as sc:
        assert run_scene(sc, backend, config=PipelineConfig(overlap=0)).tiles_run > 0


def test_one_missing_row_at_the_bottom_of_one_band_is_not_a_broken_band(tmp_path):
    """With 1025 rows the last tile row reads one new row; a VH without it once refused the
    whole scene ("band VH_dB holds no data in rows 1024-1025")."""
    vv = np.full((1025, 5000), -22.0, np.float32)
    vv[1000, 2500] = 25.0
    vh = vv - 8
    vh[-1] = -32768
    folder = tmp_path / "tall_v"
    folder.mkdir()
    tifffile.imwrite(folder / "VV_dB.tif", vv, tile=(256, 256))
    tifffile.imwrite(folder / "VH_dB.tif", vh, tile=(256, 256))
    with open_scene(folder) as sc:
        res = run_scene(sc, BrightestPixel(), config=PipelineConfig(overlap=0))
    assert _positions(res.detections) == [(1000, 2500)]


def test_concurrent_stages_give_what_the_sequential_loop_gives(tmp_path):
    """Reading, inference and merging on neighbouring rows: the same detections, counts and
    journal records as one row at a time."""
    scene = _scene(tmp_path)
    out = {}
    for concurrent in (False, True):
        journal = tmp_path / f"j{concurrent}.jsonl"
        cfg = PipelineConfig(overlap=32, batch_size=3, concurrent=concurrent)
        with open_scene(scene) as sc:
            res = run_scene(sc, BrightestPixel(), config=cfg, journal=journal)
        out[concurrent] = (res, journal.read_text().splitlines()[1:])
    (seq, seq_rows), (con, con_rows) = out[False], out[True]
    assert _positions(con.detections) == _positions(seq.detections) == sorted(TARGETS)
    np.testing.assert_array_equal(con.detections.scores, seq.detections.scores)
    assert (con.tiles_run, con.tiles_skipped_nodata) == (seq.tiles_run, seq.tiles_skipped_nodata)
    assert con_rows == seq_rows  # same records, same order
    np.testing.assert_array_equal(con.thumbnail, seq.thumbnail)


def test_a_failing_post_stage_stops_the_concurrent_run(tmp_path):
    class FailingPost:
        fingerprint = "failing"
        calls = 0

        def __call__(self, raw, batch):
            FailingPost.calls += 1
            if FailingPost.calls > 2:
                raise RuntimeError("post stage broke")
            return list(raw)

    from sarvessel.runtime.detector import Detector

    det = Detector(BrightestPixel(), FailingPost())
    with open_scene(_scene(tmp_path)) as sc, pytest.raises(RuntimeError, match="post stage broke"):
        run_scene(sc, det, config=PipelineConfig(overlap=0, batch_size=2))


class PlacesDetections(BrightestPixel):
    """Reports fixed tile positions in every tile (a backend with a decode bug)."""

    def __init__(self, positions: list[tuple[float, float]], tile_size: int = 256) -> None:
        super().__init__(tile_size=tile_size)
        self.positions = positions

    def infer(self, batch: np.ndarray) -> list[Detections]:
        r = np.array([p[0] for p in self.positions], np.float32)
        c = np.array([p[1] for p in self.positions], np.float32)
        boxes = np.stack([r - 2, c - 2, r + 2, c + 2], 1)
        n = len(r)
        return [Detections(r, c, np.full(n, 0.9), np.ones(n), boxes, np.full(n, 3.0))
                for _ in batch]


def test_detections_outside_their_tile_are_dropped_not_clipped_onto_its_edge(tmp_path):
    """A centre outside the tile was clipped onto the tile's edge and kept (issue #34, 2)."""
    scene = _scene(tmp_path, h=256, w=256)
    backend = PlacesDetections([(100.0, 100.0), (-5.0, 10.0), (300.0, 10.0), (10.0, 1e6),
                                (np.nan, 5.0)])
    with open_scene(scene) as sc:
        res = run_scene(sc, backend, config=PipelineConfig(mask_land=False))
    assert _positions(res.detections) == [(100, 100)]
    assert res.detections_outside_tile == 4


def test_a_head_map_larger_than_the_contract_is_refused_on_the_first_batch(tmp_path):
    """A graph with symbolic output dims passes the load check; its 2x larger map once decoded
    into boxes far outside the tile (issue #34, 2: 8,317 detections, rows past the scene)."""
    from sarvessel.runtime.backends.onnx import OnnxBackend
    from sarvessel.runtime.errors import ModelError
    from tests.runtime.conftest import toy_meta, write_toy_model

    model = write_toy_model(tmp_path / "wide.onnx", pool=4, symbolic_size=True)
    toy_meta().write_sidecar(model)
    backend = OnnxBackend(model)  # the load-time check cannot see the symbolic dims
    scene = _scene(tmp_path, h=300, w=300)
    with open_scene(scene) as sc, pytest.raises(
            ModelError, match=r"head map of shape \[\d+, 18, 16, 16\].*contract says "
                              r"\[\d+, 18, 8, 8\]"):
        run_scene(sc, backend, config=PipelineConfig(overlap=0))


def test_memory_per_scene_column_is_bounded(tmp_path, monkeypatch):
    """The raw-read buffer once held two full-width tile rows per band and per thread
    (~27 KB of memory per scene column: 488 MB at 16,000 columns, issue #34, 8). Measured
    with tracemalloc (numpy reports its buffers to it) on two tiled scenes that differ only
    in width; docs/runtime.md gives the bound (11 KB per column, 2 bands, 512 px tiles). The
    read chunk is made one tile here so that both widths exceed it, as real scenes do."""
    import tracemalloc

    from sarvessel.runtime.io import raster

    monkeypatch.setattr(raster, "READ_CHUNK_BYTES", 512 * 512 * 4)

    def peak(width: int) -> int:
        folder = tmp_path / f"w{width}_v"
        folder.mkdir()
        band = np.full((1100, width), -22.0, np.float32)
        for name in ("VV_dB", "VH_dB"):
            tifffile.imwrite(folder / f"{name}.tif", band, tile=(512, 512))
        with open_scene(folder) as sc:
            tracemalloc.start()
            try:
                run_scene(sc, NoopBackend(tile_size=512))
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    per_column = (peak(6144) - peak(1024)) / (6144 - 1024)
    assert per_column < 12 * 1024, f"{per_column / 1024:.1f} KB per scene column"
