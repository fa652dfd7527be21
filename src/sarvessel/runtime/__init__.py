"""Runtime: the light base layer that runs on the board and on the ground.

Imports only numpy, scipy, tifffile, onnxruntime, pillow and rich (web and board parts are
optional extras) and nothing from :mod:`sarvessel.model`, :mod:`sarvessel.quantize` or
:mod:`sarvessel.hw`.

Data flows one way: read → tile → preprocess → infer → decode → merge → write.
"""
