"""The board environment (Python 3.10, numpy 1.26, pynq 4.0.0, finn-plus-driver 1.6.1) with the
runtime installed into it: scripts/board_env.sh, which runs the board tests there."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PYTHON310 = Path(os.environ.get("PYTHON310", "/root/.pyenv/versions/3.10.13/bin/python"))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_board_environment(tmp_path: Path) -> None:
    if not PYTHON310.is_file():
        pytest.skip(f"no Python 3.10 at {PYTHON310} (set PYTHON310)")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "board_env.sh"), str(tmp_path / "venv")],
                       capture_output=True, text=True, timeout=1200,
                       env={**os.environ, "PYTHON310": str(PYTHON310)})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "board environment OK" in r.stdout
