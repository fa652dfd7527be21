"""Board room: what runs on (or stands in for) the Kria KV260.

- :mod:`.packing`: fast fold/pack of uint8 tiles and unpack of the accelerator's INT24 output.
- :mod:`.tail`: the CPU tail, integer accumulators to the float head map.
- :mod:`.package`: reading a deploy package (driver_config.json v1, manifest, self-test).
- :mod:`.overlay`: finn-plus-driver's ``FINNDMAOverlay`` arguments from a deploy package.
- :mod:`.accelerator`: the ``fpga`` core (PYNQ + finn-plus-driver, imported only there) and
  the ``sim`` core (the same path with the accelerator in software), board detection.
- :mod:`.tools`, :mod:`.cli`: ``sarvessel board flash|check|info``.

Runs on the board (Python 3.10, numpy 1.x) and on the ground; imports numpy and onnxruntime,
and ``pynq``/``finn_plus_driver`` only inside the ``fpga`` core's constructor.
"""
