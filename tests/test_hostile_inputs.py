"""scripts/hostile_inputs.py: the generated table in docs/hostile_inputs.md stays true.

A few rows are run here (the whole table takes minutes); every case the script knows must
appear in the committed table, so adding a case without regenerating the docs fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "hostile_inputs.py"
ROWS = ["no-command", "detect-all-nan", "detect-locked", "score-json-folder",
        "score-hostile-pickle", "eval-pr-png-folder"]


def test_a_few_rows_run_as_the_docs_say(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cases", ",".join(ROWS), "--out",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = out.read_text()
    doc = (ROOT / "docs" / "hostile_inputs.md").read_text()
    for name in ROWS:
        (row,) = [r for r in table.splitlines() if f"`{name}`" in r]
        assert row in doc.splitlines(), f"docs/hostile_inputs.md is stale for {name}:\n{row}"


def test_every_case_is_in_the_docs() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    names = [line.split("\t")[0] for line in proc.stdout.splitlines()]
    doc = (ROOT / "docs" / "hostile_inputs.md").read_text()
    assert len(names) > 30
    assert [n for n in names if f"`{n}`" not in doc] == []
