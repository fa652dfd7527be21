"""sarvessel: on-satellite vessel detection in Sentinel-1 SAR scenes on a Kria KV260 (FINN).

Subpackages:

- :mod:`sarvessel.runtime` — the light base layer (numpy, scipy, tifffile, onnxruntime): scene
  I/O, tiling, preprocessing, backends, decode/NMS, scoring, outputs, CLI. Runs on the board.
- :mod:`sarvessel.model` — Brevitas network, data, training (host only, needs torch).
- :mod:`sarvessel.quantize` — QAT configuration, QONNX/ONNX export, equivalence checks.
- :mod:`sarvessel.hw` — FINN flow for the KV260, estimates, bitstream build.
"""

__version__ = "0.1.0"
