"""The top-level ``sarvessel`` command on a runtime-only install (``make demo``, the board)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: Runs the command with module ``mod`` made unimportable, as on a runtime-only install.
BLOCK = ("import sys; sys.modules[{mod!r}] = None; from sarvessel.cli import main; "
         "sys.exit(main({argv!r}))")


@pytest.mark.parametrize(("mod", "argv"), [
    ("torch", ["train", "--out", "{tmp}/run"]),
    ("torch", ["export", "{tmp}/ck.pt", "--out", "{tmp}/x"]),
    ("onnx", ["hw", "estimate", "{tmp}/m.onnx"]),
])
def test_host_commands_without_the_host_tools_say_what_to_install(tmp_path: Path, mod: str,
                                                                 argv: list[str]):
    """These once ended in a ModuleNotFoundError traceback after ``make demo``'s install."""
    (tmp_path / "ck.pt").write_bytes(b"x")
    (tmp_path / "m.onnx").write_bytes(b"x")
    argv = [a.format(tmp=tmp_path) for a in argv]
    proc = subprocess.run([sys.executable, "-c", BLOCK.format(mod=mod, argv=argv)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"needs {mod}, which is not installed here" in proc.stderr
    assert "use `make test`'s .venv, which has every host tool" in proc.stderr
