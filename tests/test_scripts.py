"""Repo scripts that produce quoted figures run from a checkout and reject bad arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("brevitas")


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args],
                          capture_output=True, text=True, timeout=300)


def test_export_untrained_writes_a_qonnx_with_the_asked_bit_widths(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "sep.onnx"
    r = _run("export_untrained.py", str(out), "--widths", "8,16,16", "--separable-from", "1",
             "--tile", "64", "--bits", "act=6,dw_act=4")
    assert r.returncode == 0, r.stderr
    model = onnx.load(str(out))
    inits = {i.name: i for i in model.graph.initializer}
    widths = sorted({int(numpy_helper.to_array(inits[n.input[3]]))
                     for n in model.graph.node if n.op_type == "Quant"})
    # 4-bit weights and depthwise outputs, 6-bit other activations, 8-bit first/last layers
    assert widths == [4, 6, 8]
    assert "params" in r.stdout


def test_scripts_name_bad_bit_widths() -> None:
    r = _run("export_untrained.py", "x.onnx", "--bits", "act=12")
    assert r.returncode == 2 and "act=12" in r.stderr
    r = _run("quant_sensitivity.py", "missing.pt", "--choice", "nolabel")
    assert r.returncode == 2 and "label=spec" in r.stderr
