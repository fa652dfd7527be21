"""Synthetic Sentinel-1 scenes in the xView3 layout, with labels: the demo's input, the scene
model's training data and the held-out test scenes (seeds 900-931). Runs on the ground.

:func:`~sarvessel.synth.generate.synthesize_scene` writes one scene (``sarvessel synth``);
:mod:`~sarvessel.synth.fields` makes the backscatter fields (sea clutter, land, wind, swath),
:mod:`~sarvessel.synth.objects` the vessels, platforms and ghosts. Imports numpy, scipy and
:mod:`sarvessel.runtime` (GeoTIFF writing, nodata); nothing from model, quantize or hw.
"""
