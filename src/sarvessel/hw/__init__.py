"""Host tool subpackage: the FINN (finn-plus 1.6.1) flow for the Kria KV260.

May import :mod:`sarvessel.runtime`; never imported by it. Modules: :mod:`~sarvessel.hw.config`
(one validated ``HWConfig``), :mod:`~sarvessel.hw.steps` (``step_x(model, cfg) -> model``
functions), :mod:`~sarvessel.hw.flow` (runner with checkpoints and resuming),
:mod:`~sarvessel.hw.estimate` (cycles/resources/throughput reports),
:mod:`~sarvessel.hw.verify` (Python execution of the HW graphs vs QONNX),
:mod:`~sarvessel.hw.build` (full build with Vivado), :mod:`~sarvessel.hw.deploy` (deploy package
schema), :mod:`~sarvessel.hw.cli` (``sarvessel hw ...``). finn, qonnx and torch are imported
only where needed.
"""
