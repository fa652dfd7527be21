"""Shared fixtures: where the real data lives, and skips that say why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: SSDD is read in place from ../shared/data/ssdd (never copied into the repo);
#: SARVESSEL_SSDD overrides the location.
SSDD_DIR = Path(os.environ.get("SARVESSEL_SSDD", REPO.parent / "shared" / "data" / "ssdd"))


@pytest.fixture(scope="session")
def ssdd_dir() -> Path:
    """The SSDD root, or skip with the path that was looked at."""
    if not (SSDD_DIR / "ImageSets" / "Main" / "test.txt").is_file():
        pytest.skip(f"SSDD not found at {SSDD_DIR} (set SARVESSEL_SSDD to its folder)")
    return SSDD_DIR
