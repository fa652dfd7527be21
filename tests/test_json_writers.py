"""No JSON the project writes holds NaN or Infinity (issue #34, 6).

Python's ``json`` writes the non-standard tokens ``NaN`` and ``Infinity`` unless told not to, and
strict parsers (JavaScript's JSON.parse, Go, jq) reject them. Every JSON file goes through
:func:`sarvessel.runtime.io.outputs.write_json` (NaN becomes null), and every other
``json.dump``/``json.dumps`` call in the package passes ``allow_nan=False``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sarvessel"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _unguarded_dumps(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("dump", "dumps")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "json"):
                ok = any(k.arg == "allow_nan" and isinstance(k.value, ast.Constant)
                         and k.value.value is False for k in node.keywords)
                if not ok:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return found


def test_every_json_writer_refuses_nan():
    assert _unguarded_dumps(SRC) == []
    assert _unguarded_dumps(SCRIPTS) == []
