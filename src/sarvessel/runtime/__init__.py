"""Runtime: the flight path, the light base layer that runs on the board and on the ground.

One tile flows one way::

    read → tile → preprocess → infer → post-process → merge → write
    io/    tiling  preprocess  backends/  post/        post/nms  io/outputs

- :mod:`~sarvessel.runtime.detect`: ``detect_scene``, the library entry the CLI, server jobs and
  archive tasks call; :mod:`~sarvessel.runtime.pipeline` streams a scene through it by tile rows,
  journaled so a killed run resumes; :mod:`~sarvessel.runtime.journal`: the job lock that makes
  one run own a scene's journal and outputs in a folder;
- :mod:`~sarvessel.runtime.contract`: the model sidecar and the deploy package (one reader, one
  writer, the shared defaults);
- :mod:`~sarvessel.runtime.backends`: noop, CFAR, onnxruntime (and test-time augmentation);
  :mod:`~sarvessel.runtime.detector` composes a backend with :mod:`~sarvessel.runtime.post`;
- :mod:`~sarvessel.runtime.io`: scene reading and output writing;
- :mod:`~sarvessel.runtime.cli`: ``sarvessel detect`` and ``sarvessel bench``.

Imports only numpy, scipy, tifffile, onnxruntime, Pillow and rich (board and web parts are
optional and imported where used) and nothing from :mod:`sarvessel.model`,
:mod:`sarvessel.quantize`, :mod:`sarvessel.hw`, :mod:`sarvessel.evaluation` or
:mod:`sarvessel.synth`.
"""
