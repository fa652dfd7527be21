"""Exceptions of the hardware flow, all :class:`~sarvessel.runtime.errors.SarvesselError`."""

from __future__ import annotations

from sarvessel.runtime.errors import DeployPackageError as _DeployPackageError
from sarvessel.runtime.errors import SarvesselError


class HWError(SarvesselError):
    """Base class of every error of :mod:`sarvessel.hw`."""


class HWConfigError(HWError):
    """A hardware config file or value is invalid (unknown key, wrong type, inconsistent)."""


class ConversionError(HWError):
    """The model does not convert to a single FINN dataflow partition."""


class StepError(HWError):
    """A step name is unknown or registered twice, or a resume checkpoint is missing."""


class VerificationError(HWError):
    """The hardware graph does not compute what the QONNX model computes."""


class ToolsMissingError(HWError):
    """Vivado / Vitis HLS are needed but not installed."""


#: A deploy package is incomplete or invalid; the runtime's contract raises it (the board reads
#: packages without this module), so it is a :class:`~sarvessel.runtime.errors.ModelError`.
DeployPackageError = _DeployPackageError
