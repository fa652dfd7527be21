"""Scene arguments: folders, GeoTIFFs, globs and list files, each scene once, clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from sarvessel.archive.errors import ArchiveError
from sarvessel.archive.scenes import expand_scene_args, scan_scenes


def _scene(root: Path, name: str, shape: tuple[int, int] = (64, 80)) -> Path:
    d = root / name
    d.mkdir(parents=True)
    for band in ("VV_dB", "VH_dB"):
        tifffile.imwrite(d / f"{band}.tif", np.full(shape, -20, np.float32))
    return d


def test_folders_globs_and_list_files_expand_in_order_each_scene_once(tmp_path):
    a, b, c = (_scene(tmp_path / "data", n) for n in ("A", "B", "C"))
    (tmp_path / "data" / "shoreline").mkdir()  # a glob match that is no scene
    tif = tmp_path / "one.tif"
    tifffile.imwrite(tif, np.zeros((2, 32, 32), np.float32))
    listing = tmp_path / "lists" / "scenes.txt"
    listing.parent.mkdir()
    listing.write_text("# comment\n\n../data/C\n../missing_scene\n")
    got = expand_scene_args([str(b), str(tmp_path / "data" / "*"), str(listing), str(tif),
                             str(tmp_path / "data" / "B" / ".." / "B")])
    assert [p.name for p in got] == ["B", "A", "C", "missing_scene", "one.tif"]
    assert got[0] == b and got[1] == a and Path(got[2]).resolve() == c


def test_a_listed_scene_that_is_missing_is_kept_to_fail_its_own_task(tmp_path):
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"{tmp_path / 'gone'}\n")
    (plan,) = scan_scenes(expand_scene_args([listing]))
    assert plan.scene_id is None and "no such scene folder or file" in plan.error


@pytest.mark.parametrize(("arg", "message"), [
    ("nothing_here", "no such scene folder, GeoTIFF, glob or list file"),
    ("data/*.nope", "matches no scene folder or GeoTIFF"),
    ("data", "holds scene folders rather than being one"),
    ("empty.txt", "lists no scenes"),
])
def test_arguments_that_name_no_scene_are_refused(tmp_path, monkeypatch, arg, message):
    _scene(tmp_path / "data", "A")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArchiveError, match=message.replace("*", r"\*")):
        expand_scene_args([arg])


def test_scan_reads_headers_and_refuses_scene_ids_that_collide(tmp_path):
    a = _scene(tmp_path / "x", "S1", shape=(100, 200))
    (plan,) = scan_scenes([a])
    assert (plan.scene_id, plan.height, plan.width, plan.megapixels) == ("S1", 100, 200, 0.02)
    assert plan.files and plan.error is None
    b = _scene(tmp_path / "y", "S1")
    with pytest.raises(ArchiveError, match="scene id 'S1' twice"):
        scan_scenes([a, b])
    with pytest.raises(ArchiveError, match="would overwrite the archive's own output"):
        scan_scenes([_scene(tmp_path, "submission")])
