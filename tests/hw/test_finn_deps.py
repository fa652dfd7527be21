"""finn-plus' external dependencies: the pinned list and the offline check (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarvessel.hw.deps import (
    KV260_ESSENTIAL,
    PINNED_DEPS_FILE,
    DepKind,
    auto_updates_enabled,
    load_pins,
    main,
    missing_dependencies,
)


def lay_out(deps_dir: Path, pins=None) -> None:
    """Put every pinned dependency where finn-plus' DependencyUpdater leaves it: a detached
    checkout (``.git/HEAD`` = commit) per clone, the copied board-file folder, the unpacked
    download (what the image's fetch produces, minus the file contents)."""
    for dep in pins or load_pins():
        for p in dep.paths(deps_dir):
            p.mkdir(parents=True, exist_ok=True)
        if dep.kind is not DepKind.DOWNLOAD:
            git = dep.paths(deps_dir)[0] / ".git"
            for sub in ("objects", "refs"):  # what git needs to see a repository
                (git / sub).mkdir(parents=True, exist_ok=True)
            (git / "HEAD").write_text(dep.commit + "\n")


def test_pins_are_finn_plus_own() -> None:
    """Each pinned dependency is finn-plus 1.6.1's (same URL, commit, folder); an upgraded
    finn-plus that moves a pin fails here until the list is updated."""
    pytest.importorskip("finn.interface.manage_deps")
    from sarvessel.hw.deps import finn_plus_definitions

    theirs = finn_plus_definitions()
    pins = load_pins()
    assert {p.name for p in pins} >= set(KV260_ESSENTIAL)
    for dep in pins:
        ref = theirs[dep.kind.value][dep.name]
        assert str(ref["url"]) == dep.url, dep.name
        if dep.kind is DepKind.DOWNLOAD:
            assert ref["target_directory"] == dep.target_directory
            assert dep.sha256 and len(dep.sha256) == 64, "downloads need a content hash"
        else:
            assert len(dep.commit or "") == 40 and ref["commit"] == dep.commit, dep.name
    # everything of finn-plus' list is pinned except the two unpinnable PYNQ board zips
    all_theirs = {n for kind in DepKind for n in theirs.get(kind.value, {})}
    assert all_theirs - {p.name for p in pins} == {"pynq-z1", "pynq-z2"}


def test_pinned_file_is_valid_for_finn_plus() -> None:
    manage_deps = pytest.importorskip("finn.interface.manage_deps")
    import yaml

    data = manage_deps.DependencyData.model_validate(yaml.load(PINNED_DEPS_FILE.read_text(),
                                                               yaml.Loader))
    assert data.get_dependency_count() == len(load_pins())


def test_offline_build_finds_every_dependency(tmp_path: Path, monkeypatch) -> None:
    """What finn-plus does at the start of an offline build: its own DependencyUpdater, reading
    the pinned file, finds nothing outdated in a complete dependency folder, with the network
    gone (its wget header request fails: no remote version)."""
    manage_deps = pytest.importorskip("finn.interface.manage_deps")
    lay_out(tmp_path)
    assert missing_dependencies(tmp_path) == []
    monkeypatch.setattr(manage_deps.DependencyUpdater, "_get_remote_version_token",
                        lambda self, url: None)
    upd = manage_deps.DependencyUpdater(tmp_path, PINNED_DEPS_FILE, git_timeout_s=30,
                                        non_interactive=True)
    assert upd.get_outdated_dependencies() == []


def test_missing_and_wrong_commits_are_named(tmp_path: Path) -> None:
    pins = load_pins()
    lay_out(tmp_path)
    hls = next(p for p in pins if p.name == "finn-hlslib")
    (hls.paths(tmp_path)[0] / ".git" / "HEAD").write_text("0" * 40)
    board = next(p for p in pins if p.name == "kv260-som-bdf")
    board.paths(tmp_path)[1].rmdir()
    problems = missing_dependencies(tmp_path, pins)
    assert any("finn-hlslib: checked out at 0000" in p for p in problems)
    assert any(p.startswith("kv260-som-bdf:") and "kv260_som missing" in p for p in problems)
    assert len(problems) == 2
    assert main(["check", str(tmp_path)]) == 1
    assert main(["check", str(tmp_path / "empty")]) == 1


def test_paths_follow_finn_plus_layout(tmp_path: Path) -> None:
    by = {p.name: p for p in load_pins()}
    assert by["finn-hlslib"].paths(tmp_path) == [tmp_path / "finn-hlslib"]
    assert by["kv260-som-bdf"].paths(tmp_path) == [
        tmp_path / "board_files_downloads" / "kv260-som-bdf",
        tmp_path / "board_files" / "kv260_som",
    ]
    assert by["nlohmann-json"].paths(tmp_path) == [tmp_path / "nlohmann_json" / "json"]


@pytest.mark.parametrize(("value", "on"), [(None, True), ("false", False), ("False", False),
                                           ("0", False), ("true", True)])
def test_auto_updates_read_like_finn_plus(value: str | None, on: bool) -> None:
    env = {} if value is None else {"AUTOMATIC_DEPENDENCY_UPDATES": value}
    assert auto_updates_enabled(env) is on
