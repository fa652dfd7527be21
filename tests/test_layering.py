"""The house rules of the package map, checked on the source (every import, also those inside
functions): the runtime imports no host or ground tool, the ground tools import no host tool,
and no module imports itself through others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sarvessel"
HOST = {"model", "quantize", "hw"}
GROUND = {"evaluation", "synth", "archive"}
#: Tools that compose the others (the benchmark suite imports runtime, ground and, lazily, the
#: peer network of model/): only the command line imports them.
COMPOSERS = {"benchmark"}


def _module_name(path: Path) -> str:
    parts = ["sarvessel", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every sarvessel module ``path`` imports, at any depth of the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}  # imports for annotations only never run
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sarvessel")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.startswith("sarvessel"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_runtime_imports_no_host_or_ground_tool(graph: dict[str, set[str]]) -> None:
    bad = {m: sorted(i for i in deps if _top(i) in HOST | GROUND | COMPOSERS | {"cli", "demo"})
           for m, deps in graph.items() if _top(m) == "runtime"}
    assert not {m: v for m, v in bad.items() if v}


def test_ground_tools_import_no_host_tool(graph: dict[str, set[str]]) -> None:
    bad = {m: sorted(i for i in deps if _top(i) in HOST | COMPOSERS)
           for m, deps in graph.items() if _top(m) in GROUND}
    assert not {m: v for m, v in bad.items() if v}


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    """Tarjan's strongly connected components over module imports (a package's ``__init__``
    imported by its own modules is not a cycle worth reporting, and none exists today)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles
