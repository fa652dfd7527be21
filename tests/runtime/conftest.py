"""Shared helpers of the runtime tests: toy ONNX networks, toy detections and a toy rescorer.

The toy graphs mimic the exported network's interface: float input carrying 0..255, raw output
``[B, 4*reg_max + nc, T/s, T/s]``. An average pool over each stride cell followed by a 1x1 conv
gives a class logit ``0.1 * mean - 10`` (a bright cell is a detection) and constant DFL logits
peaked at bin 2 (every box reaches 2 strides from its anchor on each side).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarvessel.runtime.contract import ModelMetadata
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.post.rescore import FEATURE_NAMES

#: Rescorer feature columns by name.
COL = {n: i for i, n in enumerate(FEATURE_NAMES)}

TILE, STRIDE, REG_MAX, NC, CHANNELS = 64, 8, 4, 2, 2


def toy_meta(**kw: object) -> ModelMetadata:
    args: dict = dict(name="toy", tile_size=TILE, channels=CHANNELS, stride=STRIDE,
                      reg_max=REG_MAX, nc=NC, bands=["VV_dB", "VH_dB"],
                      class_names=["a", "b"], conf_threshold=0.5, iou_threshold=0.5)
    args.update(kw)
    return ModelMetadata(**args)


def write_toy_model(path: Path, *, batch: int | str = "batch", channels: int = CHANNELS,
                 props: dict[str, str] | None = None, pool: int = STRIDE,
                 symbolic_size: bool = False) -> Path:
    """The toy network; ``pool`` (the default is the stride) sets its output map's side
    ``TILE // pool``. symbolic_size: declare the input's and output's height and width as
    symbolic names, which onnxruntime cannot resolve, so the load-time shape check passes
    whatever map the graph makes (the default False declares them)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nout = 4 * REG_MAX + NC
    w = np.zeros((nout, channels, 1, 1), np.float32)
    b = np.zeros(nout, np.float32)
    dfl = np.full(REG_MAX, -20.0, np.float32)
    dfl[2] = 20.0
    b[:4 * REG_MAX] = np.tile(dfl, 4)
    w[4 * REG_MAX, 0] = 0.1  # class 0 from channel 0
    b[4 * REG_MAX] = -10.0
    w[4 * REG_MAX + 1, channels - 1] = 0.1  # class 1 from the last channel
    b[4 * REG_MAX + 1] = -10.0
    out = TILE // pool
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[pool, pool],
                          strides=[pool, pool]),
         helper.make_node("Conv", ["p", "w", "b"], ["y"])],
        "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                       [batch, channels, *(["h", "w"] if symbolic_size
                                                           else [TILE, TILE])])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       [batch, nout, *(["oh", "ow"] if symbolic_size
                                                       else [out, out])])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (props or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = write_toy_model(tmp_path / "toy.onnx")
    toy_meta().write_sidecar(path)
    return path


def toy_batch(n: int) -> np.ndarray:
    x = np.zeros((n, CHANNELS, TILE, TILE), np.uint8)
    x[0, 0, 16:24, 40:48] = 255  # cell (y=2, x=5), channel 0 -> class 0, logit 15.5
    if n > 1:
        x[1, 1, 56:64, 0:8] = 200  # cell (y=7, x=0), channel 1 -> class 1, logit 10
    return x



def toy_dets(boxes: list[list[float]], scores: list[float]) -> Detections:
    b = np.asarray(boxes, np.float32)
    return Detections((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, scores,
                      np.zeros(len(b)), b, np.ones(len(b)))



def toy_scene() -> np.ndarray:
    """A 120 x 160 px image: sea at 20, a 6 x 10 px ship at 200 at rows 50-56, cols 70-80."""
    g = np.full((120, 160), 20, np.uint8)
    g[50:56, 70:80] = 200
    return g



def fit_toy_rescorer(tmp_path: Path) -> tuple[Path, object, np.ndarray]:
    """A tree model that calls boxes with a bright peak ships, exported as the runtime loads
    it."""
    sklearn = pytest.importorskip("sklearn.ensemble")
    skl2onnx = pytest.importorskip("skl2onnx")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, len(FEATURE_NAMES))).astype(np.float32)
    x[:, COL["in_max"]] = rng.uniform(0, 255, 600)
    x[::9, COL["ring_std"]] = np.nan  # as features of empty rings may be
    y = x[:, COL["in_max"]] > 120
    fit = sklearn.HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    onx = skl2onnx.to_onnx(fit, x[:1], options={id(fit): {"zipmap": False}},
                           target_opset={"": 17, "ai.onnx.ml": 3})
    path = tmp_path / "toy_rescorer.onnx"
    path.write_bytes(onx.SerializeToString())
    return path, fit, x




def bright_pixel_detections(batch: np.ndarray) -> list[Detections]:
    """A stand-in detector's output: every 255 pixel of channel 0 of each tile is a point
    target with a 16 px box (tile coordinates), score 0.9, class 1, length 3 px."""
    out = []
    for t in batch:
        r, c = np.nonzero(t[0] == 255)
        boxes = np.stack([r - 8, c - 8, r + 8, c + 8], 1)
        out.append(Detections(r + 0.5, c + 0.5, np.full(len(r), 0.9), np.ones(len(r)),
                              boxes, np.full(len(r), 3.0)))
    return out
