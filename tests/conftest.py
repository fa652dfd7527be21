"""Shared fixtures: where the real data lives, and skips that say why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: SSDD is read in place from ../shared/data/ssdd (never copied into the repo);
#: SARVESSEL_SSDD overrides the location.
SSDD_DIR = Path(os.environ.get("SARVESSEL_SSDD", REPO.parent / "shared" / "data" / "ssdd"))
#: OpenSARShip likewise (../shared/data/opensarship; SARVESSEL_OPENSARSHIP overrides).
OPENSARSHIP_DIR = Path(os.environ.get("SARVESSEL_OPENSARSHIP",
                                      REPO.parent / "shared" / "data" / "opensarship"))


@pytest.fixture(scope="session")
def ssdd_dir() -> Path:
    """The SSDD root, or skip with the path that was looked at."""
    if not (SSDD_DIR / "ImageSets" / "Main" / "test.txt").is_file():
        pytest.skip(f"SSDD not found at {SSDD_DIR} (set SARVESSEL_SSDD to its folder)")
    return SSDD_DIR


@pytest.fixture(scope="session")
def opensarship_dir() -> Path:
    """The OpenSARShip root (``yolo_uint8/`` and ``scenes/``), or skip with the path looked at."""
    if not ((OPENSARSHIP_DIR / "yolo_uint8" / "images").is_dir()
            and (OPENSARSHIP_DIR / "scenes").is_dir()):
        pytest.skip(f"OpenSARShip not found at {OPENSARSHIP_DIR} "
                    "(set SARVESSEL_OPENSARSHIP to its folder)")
    return OPENSARSHIP_DIR
