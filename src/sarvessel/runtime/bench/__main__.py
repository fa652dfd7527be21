"""``python -m sarvessel.runtime.bench``: one measured scene run, the benchmark's child process
(:func:`sarvessel.runtime.bench.measure.main`)."""

from __future__ import annotations

import sys

from sarvessel.runtime.bench.measure import main

if __name__ == "__main__":  # pragma: no cover - run by measure_in_child
    sys.exit(main())
