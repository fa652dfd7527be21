#!/usr/bin/env bash
# Python install steps of the hardware build image, in one place: the Dockerfile runs this script
# and tests/hw/test_build_image.py runs it too (in a fresh virtual environment with the latest
# pip, without Docker), so an install step that breaks under a new pip fails a test, not an
# image build on a build host.
#
# Usage (from the repository root):
#   docker/install-python.sh [--dry-run] [--skip-torch] [--stage all|deps|project] PYTHON
# PYTHON is the interpreter of the target virtual environment. Environment (defaults in brackets):
#   PIP_VERSION      pip to install: a version, or "latest" [26.3]
#   TORCH_VERSION    CPU torch [2.13.0]
#   TORCH_INDEX_URL  index holding the CPU torch wheel ["https://download.pytorch.org/whl/cpu";
#                    empty: the configured indexes]
#   FINN_PLUS_VERSION finn-plus, installed without its dependencies [1.6.1]
#   SARVESSEL_EXTRAS extras of the project install [train,hw,dev]
#   SARVESSEL_EDITABLE 1: editable install of the project (the image's /work tree) [1]
# --dry-run passes --dry-run --no-deps to every `pip install` after the pip upgrade: pip resolves
# and parses every requirement and constraint (which is where "Constraints cannot have extras"
# is raised) without installing anything; --skip-torch leaves out the torch step. --stage deps
# runs steps 1-4 (no project sources needed: the image caches them in their own layer), --stage
# project step 5 only; the default is all.
#
# Order (as the Makefile's dev environment): CPU torch first (an unpinned torch pulls the CUDA
# build), finn-plus' requirements with exact pins (requirements/hw.txt), finn-plus without its
# dependencies (it pins brevitas==0.13.0, which clashes with this torch), then the project,
# constrained by requirements/hw.txt with the extras stripped: pip >= 23.1 rejects constraints
# with extras ("Constraints cannot have extras"), and requirements/hw.txt needs mashumaro[yaml].
set -euo pipefail

DRY_RUN=0
SKIP_TORCH=0
STAGE=all
while [ $# -gt 1 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --skip-torch) SKIP_TORCH=1 ;;
        --stage) shift; STAGE="$1" ;;
        *) echo "install-python.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ $# -ne 1 ]; then
    echo "usage: docker/install-python.sh [--dry-run] [--skip-torch] [--stage S] PYTHON" >&2
    exit 2
fi
case "$STAGE" in all|deps|project) ;; *) echo "install-python.sh: bad --stage $STAGE" >&2; exit 2 ;; esac
PY="$1"
PIP_VERSION="${PIP_VERSION:-26.3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
FINN_PLUS_VERSION="${FINN_PLUS_VERSION:-1.6.1}"
SARVESSEL_EXTRAS="${SARVESSEL_EXTRAS:-train,hw,dev}"
SARVESSEL_EDITABLE="${SARVESSEL_EDITABLE:-1}"
REQS=requirements/hw.txt

pip_install() {
    if [ "$DRY_RUN" = 1 ]; then
        "$PY" -m pip install --no-cache-dir --dry-run --no-deps "$@"
    else
        "$PY" -m pip install --no-cache-dir "$@"
    fi
}

if [ "$STAGE" != project ]; then
# 1. pip itself (a pinned version in the image; "latest" is what the test uses)
if [ "$PIP_VERSION" = latest ]; then
    "$PY" -m pip install --no-cache-dir --upgrade pip
else
    "$PY" -m pip install --no-cache-dir "pip==$PIP_VERSION"
fi
"$PY" -m pip --version

# 2. CPU torch
if [ "$SKIP_TORCH" = 0 ]; then
    if [ -n "$TORCH_INDEX_URL" ]; then
        pip_install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"
    else
        pip_install "torch==$TORCH_VERSION"
    fi
fi

# 3. finn-plus' requirements (requirements may carry extras), 4. finn-plus without its deps
pip_install -r "$REQS"
pip_install --no-deps "finn-plus==$FINN_PLUS_VERSION"
fi
[ "$STAGE" = deps ] && { echo "install-python.sh: deps done (dry run: $DRY_RUN)"; exit 0; }

# 5. the project, constrained by the same pins with every extra removed ("pkg[a,b]>=1" ->
# "pkg>=1"); comments and blank lines pass through
CONSTRAINTS="$(mktemp "${TMPDIR:-/tmp}/sarvessel-constraints.XXXXXX")"
trap 'rm -f "$CONSTRAINTS"' EXIT
sed -E 's/^([[:space:]]*[A-Za-z0-9][A-Za-z0-9._-]*)[[:space:]]*\[[^]]*\]/\1/' "$REQS" > "$CONSTRAINTS"
if grep -Eq '^[[:space:]]*[A-Za-z0-9][A-Za-z0-9._-]*[[:space:]]*\[' "$CONSTRAINTS"; then
    echo "install-python.sh: extras left in the constraints:" >&2
    grep -E '\[' "$CONSTRAINTS" >&2
    exit 1
fi
if [ "$SARVESSEL_EDITABLE" = 1 ]; then
    pip_install -c "$CONSTRAINTS" -e ".[$SARVESSEL_EXTRAS]"
else
    pip_install -c "$CONSTRAINTS" ".[$SARVESSEL_EXTRAS]"
fi
echo "install-python.sh: done (dry run: $DRY_RUN)"
