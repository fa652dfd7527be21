"""Benchmark suite (ground and host): ``sarvessel bench --quick`` / ``--full``.

It makes what the runtime harness (:mod:`sarvessel.runtime.bench`) measures: generated scenes
for the scaling runs and the backend comparison (:mod:`.scenes`, with :mod:`sarvessel.synth`),
the stock YOLOv8n peer exported to ONNX (:mod:`.peers`, with :mod:`sarvessel.model.peer` and
torch, cached so later runs need neither), and accuracy beside speed (:mod:`.accuracy`: the
xView3 aggregate on held-out generated scenes and SSDD AP50, with :mod:`sarvessel.evaluation`).
:mod:`.suite` runs it all and writes one report; :mod:`.cli` adds the suite's options to the
runtime's ``bench`` command.

Where it sits: it imports the runtime, the ground tools and (lazily) one host tool, the peer
network; nothing imports it but the command line (tests/test_layering.py). See
``docs/benchmarks.md``.
"""
