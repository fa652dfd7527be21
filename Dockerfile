# sarvessel hardware build host: finn-plus 1.6.1 flow for the Kria KV260.
#
# The image holds Python, torch (CPU), Brevitas, finn-plus, sarvessel and every external
# dependency finn-plus fetches on first use (HLS libraries, KV260 board files, nlohmann-json),
# pinned, so a build runs with no network (AUTOMATIC_DEPENDENCY_UPDATES=false). The Xilinx tools
# (Vivado + Vitis HLS 2022.2 or 2024.2, the versions finn-plus 1.6.1 supports) are NOT in the
# image: mount the host install read-only at run time; the entrypoint sources their
# settings64.sh. Without them the image still runs everything CI runs (tests,
# `sarvessel hw estimate`); `sarvessel hw build` then fails fast naming what is missing.
# docs/hardware.md describes the build host, the checks and where each runs.
#
# Build (USER_UID/GID: your own, so files the container writes into a mounted build/ are yours):
#   docker build --build-arg USER_UID=$(id -u) --build-arg USER_GID=$(id -g) -t sarvessel-hw .
# Pin the base image by digest (not pinned here: no registry to resolve it from where this was
# written): docker buildx imagetools inspect ubuntu:22.04, then
#   docker build --build-arg BASE_IMAGE=ubuntu:22.04@sha256:<digest> ...
# CI-side flow (no Xilinx tools):
#   docker run --rm sarvessel-hw pytest -m "not vivado and not board" tests/hw
#   docker run --rm -v "$PWD/build:/work/build" sarvessel-hw \
#       sarvessel hw estimate models/xview3_w4a4/xview3_w4a4_qonnx.onnx --out build/hw
# Bitstream build (Xilinx tools installed on the host under /tools/Xilinx):
#   docker run --rm --memory 32g -v /tools/Xilinx:/tools/Xilinx:ro -e XILINX_VERSION=2024.2 \
#       -v finn-deps:/opt/finn_deps -v "$PWD/build:/work/build" sarvessel-hw \
#       sarvessel hw build models/xview3_w4a4/xview3_w4a4_qonnx.onnx --out build/hw
#   -> build/hw/deploy/ (accelerator.bit, accelerator.hwh, driver_config.json); check it with
#      `sarvessel hw check-deploy build/hw/deploy`.
# The named volume finn-deps starts as a copy of the image's /opt/finn_deps (the pre-fetched
# dependencies and finn_xsi's sources); finn_xsi, the RTL-simulation bridge FIFO sizing and
# rtlsim need, is compiled there against the mounted Vivado on first use and kept.
ARG BASE_IMAGE=ubuntu:22.04
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
ARG PYTHON=python3.11
ARG USER_UID=1000
ARG USER_GID=1000

# Python 3.11 (deadsnakes) + what Vivado/Vitis HLS need at run time (ncurses 5, X libs for the
# batch-mode GUI libraries, a C++ toolchain for HLS csim and finn-plus' C++ parts, zip/git),
# wget (finn-plus checks and fetches its downloads with it), Boost program_options, zlib and
# the i386 libc headers (finn_xsi's CMake build for FIFO sizing / rtlsim; finn-plus' own install
# script adds the same). apt packages are not version-pinned: a digest-pinned base (above) fixes
# the release, and Ubuntu's archive keeps only the newest build of each package.
RUN apt-get update && apt-get install -y --no-install-recommends \
        software-properties-common ca-certificates gnupg \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update && apt-get install -y --no-install-recommends \
        ${PYTHON} ${PYTHON}-venv ${PYTHON}-dev \
        build-essential git make zip unzip locales wget xz-utils \
        libboost-program-options-dev zlib1g-dev libc6-dev-i386 \
        libtinfo5 libncurses5 libx11-6 libxext6 libxrender1 libxtst6 libxi6 libfreetype6 \
        libglib2.0-0 libsm6 libgtk2.0-0 graphviz \
    && locale-gen en_US.UTF-8 \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8

WORKDIR /work
RUN ${PYTHON} -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv

# Python packages: docker/install-python.sh holds every pip step (tests/hw/test_build_image.py
# runs the same script with the latest pip). Dependencies first, in their own cached layer.
COPY requirements/hw.txt requirements/hw.txt
COPY docker/install-python.sh docker/install-python.sh
RUN docker/install-python.sh --stage deps /opt/venv/bin/python

COPY pyproject.toml README.md ./
COPY src src
COPY tests tests
COPY docs docs
# the shipped models (14 MB): the CI commands above and tests/hw/test_shipped_model.py use them
COPY models models
RUN docker/install-python.sh --stage project /opt/venv/bin/python

# finn-plus' settings, read from the environment (finn/interface/settings.py): the pinned
# dependency list and where the dependencies live, no automatic updates (no network at build
# time), finn_xsi built inside the dependency folder, a scratch folder.
ENV XILINX_ROOT=/tools/Xilinx XILINX_VERSION=2024.2 \
    FINN_DEPS=/opt/finn_deps \
    FINN_DEPS_DEFINITIONS=/work/src/sarvessel/hw/finn_deps.yaml \
    FINN_XSI=/opt/finn_deps/finn_xsi \
    AUTOMATIC_DEPENDENCY_UPDATES=false \
    FINN_BUILD_DIR=/tmp/finn_build
# Fetch every pinned dependency now (the only step of a build that needs the network) with
# finn-plus' own DependencyUpdater, check commits and hashes, and put finn_xsi's sources there.
RUN python -m sarvessel.hw.deps fetch "$FINN_DEPS" \
    && cp -r "$(python -c 'import finn_xsi, os; print(os.path.dirname(finn_xsi.__file__))')" \
        "$FINN_XSI" \
    && python -m sarvessel.hw.deps check "$FINN_DEPS"

RUN printf '%s\n' \
    '#!/bin/bash' \
    'set -e' \
    'for tool in Vivado Vitis_HLS Vitis; do' \
    '  s="$XILINX_ROOT/$tool/$XILINX_VERSION/settings64.sh"' \
    '  if [ -f "$s" ]; then source "$s"; fi' \
    'done' \
    'exec "$@"' > /usr/local/bin/sarvessel-entrypoint \
    && chmod +x /usr/local/bin/sarvessel-entrypoint

# Run as an unprivileged user whose uid/gid match the host user's (build arguments), so a
# mounted build/ is not left root-owned; it owns the dependency folder (finn_xsi builds there).
RUN groupadd --gid ${USER_GID} builder \
    && useradd --uid ${USER_UID} --gid ${USER_GID} --create-home --shell /bin/bash builder \
    && mkdir -p /work/build /tmp/finn_build \
    && chown -R builder:builder /opt/finn_deps /work/build /tmp/finn_build
USER builder

ENTRYPOINT ["/usr/local/bin/sarvessel-entrypoint"]
CMD ["sarvessel", "hw", "--help"]
