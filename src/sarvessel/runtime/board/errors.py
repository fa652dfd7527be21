"""Exceptions of the board room, all :class:`~sarvessel.runtime.errors.SarvesselError`: the CLI
prints their one-line message and exits 2."""

from __future__ import annotations

from sarvessel.runtime.errors import DeployPackageError, SarvesselError


class BoardError(SarvesselError):
    """Base class of every board-side error."""


class NoBoardError(BoardError):
    """The ``fpga`` backend was asked for where there is no KV260 (not aarch64, no FPGA manager,
    or PYNQ / finn-plus-driver not installed)."""


class PackageError(BoardError, DeployPackageError):
    """A deploy package is incomplete, or its ``driver_config.json`` does not validate (also a
    :class:`~sarvessel.runtime.errors.DeployPackageError`, the contract's)."""


class ChecksumError(PackageError):
    """A file of a deploy package does not match the SHA-256 recorded for it (bitstream vs
    ``driver_config.json``, or any file vs the package manifest)."""


class FlashError(BoardError):
    """Copying a package to a board failed; the board keeps its previous package."""
