"""Exceptions of the power room (all are :class:`~sarvessel.runtime.errors.SarvesselError`)."""

from __future__ import annotations

from sarvessel.runtime.errors import SarvesselError


class PowerError(SarvesselError):
    """A power sensor, budget or trace cannot be used."""


class PowerBudgetError(PowerError):
    """The power budget cannot be kept (e.g. it is below the measured idle draw)."""


class SensorGone(PowerError):
    """A sensor stopped answering mid-run (hwmon device removed, trace ended, driver error)."""
