"""A picture of where a detector goes wrong: a grid of evaluated images with their errors drawn.

Each panel shows one image with its ground truth and the detections at the report's threshold:
found objects (true positives) in green, missed objects (false negatives) in yellow, false
alarms in red. Panels are picked by the number of errors (worst first) so the picture answers
"what does it miss?" at a glance; ``order="first"`` keeps the dataset order instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sarvessel.evaluation.ap import ImageDetections, ImageTruth, threshold_matches

__all__ = ["save_gallery"]

TP_COLOUR = (60, 220, 90)
FN_COLOUR = (255, 215, 0)
FP_COLOUR = (255, 60, 60)


def save_gallery(
    paths: Sequence[Path | str], detections: Sequence[ImageDetections],
    truths: Sequence[ImageTruth], out: Path | str, *, conf_threshold: float,
    n: int = 12, columns: int = 4, panel: int = 320, order: str = "worst",
    stretch: tuple[float, float] | None = None,
) -> Path:
    """Write a PNG grid of ``n`` images with TP / FN / FP boxes (see the module docstring).

    paths, detections, truths: per image (boxes as x1, y1, x2, y2 pixels). order: ``worst``
    (most errors first) or ``first``. stretch: as for
    :func:`~sarvessel.evaluation.datasets.load_image_grey`. Returns the written path.
    """
    from PIL import Image, ImageDraw

    from sarvessel.evaluation.datasets import load_image_grey
    from sarvessel.runtime.io.drawing import default_font

    if not len(paths) == len(detections) == len(truths):
        raise ValueError("paths, detections and truths differ in length")
    if order not in ("worst", "first"):
        raise ValueError(f"order must be 'worst' or 'first', got {order!r}")
    errs = [threshold_matches(d, g, conf_threshold=conf_threshold)
            for d, g in zip(detections, truths, strict=True)]
    counts = [int((~ok).sum() + (~found).sum()) for ok, found in errs]
    idx = list(range(len(paths)))
    if order == "worst":
        idx.sort(key=lambda i: -counts[i])
    idx = idx[:n]
    rows = max(1, -(-len(idx) // columns))
    font = default_font(13)
    sheet = Image.new("RGB", (columns * panel, rows * (panel + 20)), (24, 24, 24))
    for k, i in enumerate(idx):
        grey = load_image_grey(paths[i], stretch=stretch)
        scale = panel / max(grey.shape)
        img = Image.fromarray(grey).convert("RGB").resize(
            (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale))))
        draw = ImageDraw.Draw(img)
        ok, found = errs[i]
        det, gt = detections[i], truths[i]
        kept = np.flatnonzero(det.scores >= conf_threshold)
        for b, f in zip(gt.boxes, found, strict=True):
            if not f:
                draw.rectangle(tuple((b * scale).tolist()), outline=FN_COLOUR, width=2)
        for j, good in zip(kept, ok, strict=True):
            colour = TP_COLOUR if good else FP_COLOUR
            draw.rectangle(tuple((det.boxes[j] * scale).tolist()), outline=colour, width=1)
        x0, y0 = (k % columns) * panel, (k // columns) * (panel + 20)
        sheet.paste(img, (x0, y0 + 20))
        label = (f"{Path(paths[i]).stem}: TP {int(ok.sum())}  FN {int((~found).sum())}  "
                 f"FP {int((~ok).sum())}")
        ImageDraw.Draw(sheet).text((x0 + 4, y0 + 3), label, fill=(230, 230, 230), font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    sheet.save(tmp, format="PNG")
    tmp.replace(out)
    return out
