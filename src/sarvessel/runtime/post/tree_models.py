"""Loading the small ONNX-ML tree models of the second stage (refiner, rescorer).

Both are scikit-learn models exported with skl2onnx and run by onnxruntime on the CPU, one
thread by default: they see a few hundred boxes per tile, and the network's session has the
cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sarvessel.runtime.errors import ModelError


def load_tree_model(path: Path, what: str, *, threads: int | None = 1) -> Any:
    """An onnxruntime session of the ONNX-ML model at ``path``; :class:`ModelError` naming
    ``what`` (e.g. "rescorer") when the file is missing or unreadable."""
    import onnxruntime as ort

    if not Path(path).is_file():
        raise ModelError(f"{path}: {what} model not found (named by the sidecar)")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several types for a bad file
        raise ModelError(f"{path}: cannot load the {what} ({exc})") from exc
