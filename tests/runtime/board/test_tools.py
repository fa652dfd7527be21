"""board flash / check / info on local folders, and the CLI."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest

from sarvessel.runtime.board.errors import FlashError, PackageError
from sarvessel.runtime.board.package import MANIFEST, read_manifest, verify_manifest
from sarvessel.runtime.board.tools import (
    SshTarget,
    check,
    flash,
    info,
    parse_target,
    recover,
    sensor_watts,
)

from .conftest import make_package


def _same_tree(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


class FailingOpener:
    """Opens files normally until ``after`` files, then fails (a pulled cable, a full disk)."""

    def __init__(self, after: int) -> None:
        self.after, self.opened = after, 0

    def __call__(self, path: Path) -> BinaryIO:
        self.opened += 1
        if self.opened > self.after:
            raise OSError("connection lost")
        return path.open("rb")


def corrupting_opener(name: str):  # type: ignore[no-untyped-def]
    """Flips one byte of ``name`` in transit (same size, different content)."""

    def opener(path: Path) -> BinaryIO:
        data = bytearray(path.read_bytes())
        if path.name == name:
            data[len(data) // 2] ^= 0xFF
        return io.BytesIO(bytes(data))

    return opener


def test_parse_target(tmp_path: Path) -> None:
    assert parse_target("ubuntu@kv260:/opt/sarvessel/deploy") == SshTarget(
        "kv260", "/opt/sarvessel/deploy", "ubuntu")
    assert parse_target("ssh://root@127.0.0.1:2222/srv/pkg") == SshTarget(
        "127.0.0.1", "/srv/pkg", "root", 2222)
    assert parse_target(str(tmp_path / "x")) == tmp_path / "x"
    assert parse_target("relative/folder") == Path("relative/folder")


def test_flash_local_then_again_keeps_prev(tmp_path: Path, package: Path) -> None:
    dest = tmp_path / "board" / "deploy"
    r1 = flash(package, dest)
    assert not r1.previous_kept and r1.files == len(read_manifest(package))
    _same_tree(package, dest)
    verify_manifest(dest)
    pkg2 = make_package(tmp_path / "pkg2", clock_mhz=150.0)
    r2 = flash(pkg2, str(dest))
    assert r2.previous_kept
    _same_tree(pkg2, dest)
    _same_tree(package, dest.with_name("deploy.prev"))
    assert not dest.with_name("deploy.new").exists()


def test_flash_writes_a_manifest_when_the_package_has_none(tmp_path: Path) -> None:
    src = make_package(tmp_path / "p", manifest=False)
    dest = tmp_path / "d"
    flash(src, dest)
    assert (dest / MANIFEST).is_file() and not (src / MANIFEST).exists()
    verify_manifest(dest)


def test_interrupted_flash_keeps_the_previous_package(tmp_path: Path, package: Path) -> None:
    dest = tmp_path / "deploy"
    flash(package, dest)
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    pkg2 = make_package(tmp_path / "pkg2", clock_mhz=150.0)
    with pytest.raises(FlashError, match="previous package kept: connection lost"):
        flash(pkg2, dest, opener=FailingOpener(after=2))
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "deploy.new").exists()
    flash(pkg2, dest)  # and the next flash goes through
    _same_tree(pkg2, dest)


def test_checksum_mismatch_on_arrival_is_refused(tmp_path: Path, package: Path) -> None:
    dest = tmp_path / "deploy"
    flash(package, dest)
    pkg2 = make_package(tmp_path / "pkg2", clock_mhz=150.0)
    with pytest.raises(FlashError, match="accelerator.bit: SHA-256 .* does not match"):
        flash(pkg2, dest, opener=corrupting_opener("accelerator.bit"))
    _same_tree(package, dest)


def test_damaged_or_invalid_source_is_refused(tmp_path: Path, package: Path) -> None:
    (package / "selftest" / "inputs.npy").write_bytes(b"damaged")
    with pytest.raises(PackageError, match="does not match its manifest"):
        flash(package, tmp_path / "d")
    bad = make_package(tmp_path / "bad", manifest=False)
    (bad / "driver_config.json").write_text("{}")
    with pytest.raises(PackageError, match="missing key"):
        flash(bad, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_recover_after_a_stop_between_the_two_renames(tmp_path: Path, package: Path) -> None:
    dest = tmp_path / "deploy"
    flash(package, dest)
    pkg2 = make_package(tmp_path / "pkg2", clock_mhz=150.0)
    flash(pkg2, dest)
    # stopped after `deploy -> deploy.prev`, before `deploy.new -> deploy`
    shutil.move(dest, tmp_path / "deploy.new")
    assert recover(dest) == "finished swap"
    _same_tree(pkg2, dest)
    # the same with a staged copy that is incomplete: roll back to .prev
    shutil.move(dest, tmp_path / "deploy.new")
    (tmp_path / "deploy.new" / "accelerator.bit").unlink()
    assert recover(dest) == "rolled back"
    _same_tree(package, dest)
    (tmp_path / "deploy.new").mkdir()
    assert recover(dest) == "removed stale staging"
    assert recover(dest) == "ok"


def test_check_with_the_sim_core(tmp_path: Path, package: Path) -> None:
    dest = tmp_path / "deploy"
    flash(package, dest)
    report = check(dest, backend="sim", power=lambda: 4.8)
    assert report.passed, report.message
    assert report.backend == "sim" and report.tiles == 8 and report.mismatched_values == 0
    assert report.clock_mhz == 200.0 and report.power_w == 4.8
    assert report.build == {"finn_plus": "1.6.1", "vivado": "2022.2"}
    assert report.bitstream_sha256 and report.versions["numpy"] == np.__version__
    # expected accumulators that the core does not reproduce: a fail, with a count
    exp = np.load(dest / "selftest" / "expected_acc.npy")
    exp[0, 0, 0, 0] += 3
    np.save(dest / "selftest" / "expected_acc.npy", exp)
    report = check(dest, backend="sim", power=lambda: None)
    assert not report.passed and report.mismatched_values == 1 and report.max_abs_diff == 3


def test_check_auto_is_sim_off_board_and_fpga_reports_no_board(package: Path) -> None:
    assert check(package, power=lambda: None).backend == "sim"
    from sarvessel.runtime.board.errors import NoBoardError

    with pytest.raises(NoBoardError):
        check(package, backend="fpga", power=lambda: None)


def test_check_through_the_fake_board(package: Path, fake_pynq, no_board_check) -> None:
    report = check(package, backend="fpga", power=lambda: 6.1, board_check=no_board_check,
                   batch_size=4)
    assert report.passed and report.clock_mhz == 187.5 and report.power_w == 6.1
    assert fake_pynq.tiles_seen == 8


def test_check_without_selftest(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "p", manifest=False)
    shutil.rmtree(pkg / "selftest")
    with pytest.raises(PackageError, match="no self-test tiles"):
        check(pkg, backend="sim")


def test_info(tmp_path: Path, package: Path) -> None:
    dest = tmp_path / "deploy"
    assert info(dest)["installed"] is None
    flash(package, dest)
    flash(make_package(tmp_path / "p2", clock_mhz=150.0), dest)
    out = info(dest)
    assert out["installed"]["clock_mhz"] == 150.0 and out["installed"]["manifest"] == "ok"
    assert out["previous"]["clock_mhz"] == 200.0
    assert out["installed"]["output"] == "INT24 [1, 2, 2, 5]"
    (dest / "accelerator.hwh").write_text("edited on the board")
    assert "does not match" in info(dest)["installed"]["manifest"]


def test_power_reading_from_the_power_rooms_sensor(tmp_path: Path) -> None:
    assert sensor_watts(tmp_path) is None
    mon = tmp_path / "sys" / "class" / "hwmon" / "hwmon3"
    mon.mkdir(parents=True)
    (mon / "name").write_text("ina260_u14\n")
    (mon / "power1_input").write_text("5120000\n")
    (mon / "in1_input").write_text("5000\n")
    (mon / "curr1_input").write_text("1024\n")
    assert sensor_watts(tmp_path) == pytest.approx(5.12)


def test_cli(tmp_path: Path, package: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sarvessel.cli import main

    dest = tmp_path / "deploy"
    assert main(["board", "flash", str(package), str(dest)]) == 0
    assert main(["board", "check", str(dest), "--backend", "sim", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    assert report["passed"] is True
    assert main(["board", "info", str(dest)]) == 0
    assert "INT24 [1, 2, 2, 5]" in capsys.readouterr().out
    assert main(["board", "check", str(tmp_path / "nothing"), "--backend", "sim"]) == 2
    assert "deploy package folder not found" in capsys.readouterr().err
