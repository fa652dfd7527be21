"""Post-processing: one stage after any network backend, on the CPU.

    head map → decode (DFL, NMS) → refine small boxes → rescore → threshold → vessel length

:mod:`~sarvessel.runtime.post.stage` composes it from the model contract; the steps are
:mod:`~sarvessel.runtime.post.decode`, :mod:`~sarvessel.runtime.post.refine`,
:mod:`~sarvessel.runtime.post.rescore` (both optional tree models run by onnxruntime),
:mod:`~sarvessel.runtime.post.length`; :mod:`~sarvessel.runtime.post.nms` also merges a
scene's tiles. Runs on the board and on the ground (numpy, scipy, onnxruntime).
"""
