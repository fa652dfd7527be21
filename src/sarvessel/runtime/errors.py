"""Exceptions of the runtime.

Every error a user can cause (bad file, bad band, bad request) is a :class:`SarvesselError`; the
CLI prints its message without a traceback and exits non-zero.
"""

from __future__ import annotations


class SarvesselError(ValueError):
    """Base class of every user-facing sarvessel error."""


class SceneError(SarvesselError):
    """A scene folder or raster cannot be read (missing band, truncated TIFF, size mismatch)."""


class LabelsError(SarvesselError):
    """A labels or predictions CSV cannot be used (missing columns, empty, bad values)."""


class ModelError(SarvesselError):
    """A model file or its metadata is missing or does not fit the scene."""


class DeployPackageError(ModelError):
    """A deploy package folder is incomplete or its driver_config.json is invalid."""
