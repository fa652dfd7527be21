#!/usr/bin/env bash
# The board's Python stack, rebuilt here: Python 3.10, numpy 1.26, pynq 4.0.0,
# finn-plus-driver 1.6.1 (Kria-PYNQ on Ubuntu 22.04), then `pip install .` (runtime only) and a
# smoke test in it: imports, the board packing against finn-plus-driver's, the sim core, the fpga
# core through the real FINNDMAOverlay with PYNQ faked at its boundary, flash/check/info.
#
#   scripts/board_env.sh [VENV_DIR]      (default /tmp/sarvessel-board-env; recreated)
#   PYTHON310=/path/to/python3.10 scripts/board_env.sh
#
# Prints the seconds each step took; exits non-zero on the first failure.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON310:-/root/.pyenv/versions/3.10.13/bin/python}
VENV=${1:-/tmp/sarvessel-board-env}
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
step() { echo "== $1 ($(( SECONDS - T0 )) s)"; T0=$SECONDS; }
SECONDS=0; T0=0; START=$SECONDS

"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 10), sys.version'
rm -rf "$VENV"
"$PY" -m venv "$VENV"
$PIP install -q --upgrade pip
step "venv (Python $("$VENV/bin/python" -V 2>&1 | cut -d' ' -f2))"

# the board image's own stack (pynq builds from its sdist)
$PIP install -q "numpy==1.26.4" "pynq==4.0.0" "finn-plus-driver==1.6.1"
step "numpy 1.26.4, pynq 4.0.0, finn-plus-driver 1.6.1"

# the runtime, non-editable, its base dependencies resolved with numpy held at 1.26.4
CONSTRAINTS=$(mktemp)
echo "numpy==1.26.4" > "$CONSTRAINTS"
$PIP install -q -c "$CONSTRAINTS" "$REPO"
$PIP install -q -c "$CONSTRAINTS" "pytest>=8" "pytest-timeout>=2.3"
rm -f "$CONSTRAINTS"
$PIP check
step "pip install . (runtime) + pytest; pip check"

cd "$VENV"  # not the repo: import the installed sarvessel, not src/
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import numpy, onnxruntime, scipy, tifffile
import sarvessel.runtime.board.accelerator, sarvessel.runtime.board.tools
import sarvessel.runtime.cli, sarvessel.runtime.pipeline
assert numpy.__version__.startswith("1.26"), numpy.__version__
print("  installed:", ", ".join(f"{n} {md.version(n)}" for n in (
    "sarvessel", "numpy", "scipy", "tifffile", "onnxruntime", "pillow", "rich", "pynq",
    "finn-plus-driver", "qonnx")))
print("  sarvessel from", sarvessel.runtime.__file__)
PY
"$VENV/bin/sarvessel" board --help > /dev/null
step "imports (installed package)"

cd "$REPO"
"$VENV/bin/python" -m pytest tests/runtime/board -q -p no:cacheprovider \
  -o addopts="-ra --import-mode=importlib" -o testpaths=tests -m "not slow"
step "board tests in the board environment"

"$VENV/bin/python" scripts/bench_board_io.py --repeat 20
step "bench_board_io.py"
echo "board environment OK in $(( SECONDS - START )) s: $VENV"
