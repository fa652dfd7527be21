#!/usr/bin/env bash
# Train on a borrowed CUDA host for a fixed number of minutes: the workplace's device machine
# (PyTorch there, no network, a 64 MiB working-tree limit) or any GPU box.
#
# 1. Here, with ../shared/data/ssdd and PyPI reachable:
#      scripts/device_train.sh stage
#    copies SSDD's *training* split (images, XML, train.txt; 42 MiB: the test split does not fit
#    beside the repo under the 64 MiB limit, so the run validates on the training split and the
#    test split is scored back here) to .device/ssdd, and the pure-Python wheels that PyTorch
#    images lack (brevitas and its two small needs) to .device/whl. .device/ is git-ignored.
# 2. There, from the repo root, with .device carried:
#      MINUTES=7 scripts/device_train.sh run --float --init models/ssdd_float/checkpoint.pt ...
#    installs the wheels, then runs `sarvessel train <args> --device $DEVICE --workers $WORKERS
#    --time-limit $MINUTES --fit-epochs --val-split train` on .device/ssdd (--fit-epochs: the
#    lr schedule is shortened to end annealed within MINUTES). The run folder is $OUT/run
#    (last.pt, best.pt, metrics.csv, training_curve.png, written each epoch), beside
#    $OUT/train.log and $OUT/gpu.txt (GPU, /dev/shm, package versions); OUT defaults to
#    runs/device. Pass --eval-every 5 or more: each quick evaluation scores all 928 images.
#    Stopped at the limit, the same command plus --resume goes on from last.pt (carry
#    runs/device/run back first).
#    `scripts/device_train.sh check` first runs the training tests there (~1 min), CUDA included.
# 3. Here: `sarvessel export runs/device/run/last.pt --out DIR --qcdq`, then
#    `sarvessel eval DIR/<name>.onnx --data ssdd --split test` (and --split train).
#
# Environment: MINUTES (default 7); FIT (default 1; 0 cuts the schedule at the limit instead);
# DEVICE (default cuda; cpu for a dry run); WORKERS (default 8); OUT (default runs/device);
# RUN (the run folder, default $OUT/run); DATA (default .device/ssdd); PYTHON (default
# python3). Without staged wheels, the packages already installed serve.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
shift || true

use_staged_wheels() {  # python: brevitas & co from .device/whl (if staged), sarvessel from src
    if compgen -G ".device/whl/*.whl" >/dev/null; then
        "$1" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/sarvessel-site .device/whl/*.whl
        export PYTHONPATH=/tmp/sarvessel-site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
    export PYTHONUNBUFFERED=1
}

case "$mode" in
check)
    # the training tests on this host's device (CUDA where PyTorch sees it: the CUDA-only test
    # runs, the others train on the GPU by default), ~1 min
    py=${PYTHON:-python3}
    use_staged_wheels "$py"
    exec "$py" -m pytest -q -p no:cacheprovider tests/model/test_train.py \
        tests/model/test_loader.py "$@"
    ;;
stage)
    src=${SARVESSEL_SSDD:-../shared/data/ssdd}
    [ -f "$src/ImageSets/Main/train.txt" ] || { echo "no SSDD at $src" >&2; exit 2; }
    dst=.device/ssdd
    rm -rf "$dst" && mkdir -p "$dst/ImageSets/Main" "$dst/JPEGImages" "$dst/Annotations"
    cp "$src/ImageSets/Main/train.txt" "$dst/ImageSets/Main/"
    while read -r id || [ -n "$id" ]; do  # a last line without a line end counts too
        id=${id%$'\r'}  # the official split files have Windows line ends
        [ -n "$id" ] || continue
        cp "$src/JPEGImages/$id.jpg" "$dst/JPEGImages/"
        cp "$src/Annotations/$id.xml" "$dst/Annotations/"
    done < "$src/ImageSets/Main/train.txt"
    rm -rf .device/whl
    "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        -d .device/whl brevitas==0.13.4 dependencies==2.0.1 unfoldNd==0.2.3
    du -sh .device/ssdd .device/whl
    ;;
run)
    data=${DATA:-.device/ssdd}
    py=${PYTHON:-python3}
    out=${OUT:-runs/device}
    run=${RUN:-$out/run}  # inside OUT: a run killed at the host's limit still returns last.pt
    [ -f "$data/ImageSets/Main/train.txt" ] \
        || { echo "no SSDD training split at $data: run 'scripts/device_train.sh stage' first" \
                  "and carry .device" >&2; exit 2; }
    mkdir -p "$out" "$run"
    use_staged_wheels "$py"
    FIT=${FIT-1}; [ "$FIT" = 0 ] && FIT=
    { nvidia-smi 2>&1 || true; df -h /dev/shm 2>&1 || true; } > "$out/gpu.txt"
    # every package training imports, checked before the run, not half-way through it
    "$py" -c "import brevitas, matplotlib, numpy, PIL, rich, scipy, tifffile, torch
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__,
      'brevitas', brevitas.__version__)" >> "$out/gpu.txt"
    set +e
    "$py" -m sarvessel train --data ssdd --data-dir "$data" --val-split train \
        --out "$run" --device "${DEVICE:-cuda}" --workers "${WORKERS:-8}" \
        --time-limit "${MINUTES:-7}" ${FIT:+--fit-epochs} "$@" 2>&1 | tee "$out/train.log"
    rc=${PIPESTATUS[0]}
    set -e
    exit "$rc"
    ;;
*)
    sed -n "2,28p" "$0" >&2
    exit 2
    ;;
esac
