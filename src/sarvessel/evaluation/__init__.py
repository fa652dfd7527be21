"""Evaluation: the ground tools that judge detections. Runs on the ground, not on the board.

- :mod:`~sarvessel.evaluation.scoring`: the official xView3 metric (``sarvessel score``);
- :mod:`~sarvessel.evaluation.ap`: COCO/VOC-style AP, precision/recall/F1;
- :mod:`~sarvessel.evaluation.datasets`: labelled image sets (SSDD, VOC and YOLO folders);
- :mod:`~sarvessel.evaluation.evaluate`: a model over a labelled set (``sarvessel eval``);
- :mod:`~sarvessel.evaluation.gallery`: pictures of the errors.

Imports numpy, scipy, Pillow and :mod:`sarvessel.runtime` (whose detectors it runs); nothing
from model, quantize or hw, and the runtime imports nothing from here.
"""
