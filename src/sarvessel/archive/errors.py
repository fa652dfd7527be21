"""The archive's exception: a user-facing error, printed in one line by the ``sarvessel`` CLI."""

from __future__ import annotations

from sarvessel.runtime.errors import SarvesselError


class ArchiveError(SarvesselError):
    """Archive arguments, output folder, lock or cluster cannot be used as asked."""
