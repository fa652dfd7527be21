"""Fake sysfs trees (exact file formats of Linux hwmon and powercap) built in ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def _write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")  # sysfs attributes: decimal text, one trailing newline


@pytest.fixture
def make_hwmon(tmp_path: Path) -> Callable[..., Path]:
    """``make_hwmon(index, name, power_uw=None, curr_ma=None, in_mv=None, interval_ms=None)``
    builds ``<tmp>/sys/class/hwmon/hwmon<index>`` and returns the folder."""

    def make(index: int, name: str, *, power_uw: int | None = None, curr_ma: int | None = None,
             in_mv: int | None = None, interval_ms: int | None = None) -> Path:
        d = tmp_path / "sys" / "class" / "hwmon" / f"hwmon{index}"
        _write(d / "name", name)
        for attr, v in (("power1_input", power_uw), ("curr1_input", curr_ma),
                        ("in1_input", in_mv), ("update_interval", interval_ms)):
            if v is not None:
                _write(d / attr, v)
        return d

    return make


@pytest.fixture
def make_rapl(tmp_path: Path) -> Callable[..., Path]:
    """``make_rapl(zone, name, energy_uj, max_uj)`` builds
    ``<tmp>/sys/class/powercap/<zone>`` (e.g. ``intel-rapl:0``) and returns the folder."""

    def make(zone: str, name: str, energy_uj: int, max_uj: int = 262143328850) -> Path:
        d = tmp_path / "sys" / "class" / "powercap" / zone
        _write(d / "name", name)
        _write(d / "energy_uj", energy_uj)
        _write(d / "max_energy_range_uj", max_uj)
        _write(d / "enabled", 1)
        return d

    return make


@pytest.fixture
def set_attr() -> Callable[[Path, object], None]:
    """Rewrite one sysfs attribute the way the kernel presents it."""
    return _write
