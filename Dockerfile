# sarvessel hardware build host: finn-plus 1.6.1 flow for the Kria KV260.
#
# The image holds Python, torch (CPU), Brevitas, finn-plus and sarvessel, pinned. The Xilinx tools
# (Vivado + Vitis HLS, e.g. 2024.2) are NOT in the image: mount the host install read-only at
# run time; the entrypoint sources their settings64.sh when present. Without them the image still
# runs everything the CI runs (tests, `sarvessel hw estimate`); `sarvessel hw build` then fails fast
# naming what is missing.
#
# Build:
#   docker build -t sarvessel-hw .
# CI-side flow (no Xilinx tools):
#   docker run --rm sarvessel-hw pytest -m "not vivado and not board" tests/hw
#   docker run --rm -v "$PWD/build:/work/build" sarvessel-hw \
#       sarvessel hw estimate models/xview3_w4a4/xview3_w4a4_qonnx.onnx --out build/hw
# Bitstream build (Xilinx tools installed on the host under /tools/Xilinx):
#   docker run --rm -v /tools/Xilinx:/tools/Xilinx:ro -e XILINX_VERSION=2024.2 \
#       -v "$PWD/build:/work/build" sarvessel-hw \
#       sarvessel hw build models/xview3_w4a4/xview3_w4a4_qonnx.onnx --out build/hw
#   (a model of your own: add -v "$PWD/models:/work/models:ro" and name it)
#   -> build/hw/deploy/ (accelerator.bit, accelerator.hwh, driver_config.json); check it with
#      `sarvessel hw check-deploy build/hw/deploy`.
# `sarvessel hw build` runs finn-plus' own `finn build` CLI, which on first use fetches finn-plus'
# HLS/RTL dependencies (git, needs network) into $FINN_DEPS and builds its XSI bridge against the
# mounted Vivado: keep them in a volume (`-v finn-deps:/opt/finn_deps`) to do that once.
# Vivado needs a few GB of RAM per job; pass `--memory 32g` or more for a full KV260 build.

# Ubuntu 22.04: a host OS that Vivado/Vitis HLS 2022.2-2024.2 support (as FINN's own image).
FROM ubuntu:22.04

ARG DEBIAN_FRONTEND=noninteractive
ARG PYTHON=python3.11
ARG TORCH_VERSION=2.13.0
ARG FINN_PLUS_VERSION=1.6.1

# Python 3.11 (deadsnakes) + what Vivado/Vitis HLS need at run time (ncurses 5, X libs for the
# batch-mode GUI libraries, a C++ toolchain for HLS csim and finn-plus' C++ parts, zip/git).
RUN apt-get update && apt-get install -y --no-install-recommends \
        software-properties-common ca-certificates gnupg \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update && apt-get install -y --no-install-recommends \
        ${PYTHON} ${PYTHON}-venv ${PYTHON}-dev \
        build-essential git make zip unzip locales \
        libtinfo5 libncurses5 libx11-6 libxext6 libxrender1 libxtst6 libxi6 libfreetype6 \
        libglib2.0-0 libsm6 libgtk2.0-0 graphviz \
    && locale-gen en_US.UTF-8 \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8

WORKDIR /work
RUN ${PYTHON} -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv

# Same pins and order as the Makefile's dev environment: CPU torch first (an unpinned torch pulls
# the CUDA build), finn-plus' exact requirements, finn-plus itself without deps (it pins
# brevitas==0.13.0, which clashes with this torch), then sarvessel.
COPY requirements/hw.txt requirements/hw.txt
RUN pip install --no-cache-dir --upgrade pip \
    && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        torch==${TORCH_VERSION} \
    && pip install --no-cache-dir -r requirements/hw.txt \
    && pip install --no-cache-dir --no-deps finn-plus==${FINN_PLUS_VERSION}

COPY pyproject.toml README.md ./
COPY src src
COPY tests tests
# the shipped models (14 MB): the CI commands above and tests/hw/test_shipped_model.py use them
COPY models models
RUN pip install --no-cache-dir -c requirements/hw.txt -e ".[train,hw,dev]"

# Where the host's Xilinx install is mounted, and which version to source; finn-plus' dependency
# and scratch folders (read by its settings from the environment).
ENV XILINX_ROOT=/tools/Xilinx XILINX_VERSION=2024.2 \
    FINN_DEPS=/opt/finn_deps FINN_BUILD_DIR=/tmp/finn_build
RUN printf '%s\n' \
    '#!/bin/bash' \
    'set -e' \
    'for tool in Vivado Vitis_HLS Vitis; do' \
    '  s="$XILINX_ROOT/$tool/$XILINX_VERSION/settings64.sh"' \
    '  if [ -f "$s" ]; then source "$s"; fi' \
    'done' \
    'exec "$@"' > /usr/local/bin/sarvessel-entrypoint \
    && chmod +x /usr/local/bin/sarvessel-entrypoint

ENTRYPOINT ["/usr/local/bin/sarvessel-entrypoint"]
CMD ["sarvessel", "hw", "--help"]
