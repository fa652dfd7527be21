"""Readers of the xView3 CSV tables: submissions (predictions) and labels.

The format of the xView3-SAR challenge (DIUx-xView/xview3-reference): one row per object with
``scene_id``, ``detect_scene_row``/``detect_scene_column`` (scene pixels), ``is_vessel``,
``is_fishing`` and ``vessel_length_m``; labels add ``confidence`` (HIGH/MEDIUM/LOW) and
``distance_from_shore_km``. The runtime writes submissions (:mod:`sarvessel.runtime.io.outputs`)
and reads labels to draw them on quicklooks; the scorer (:mod:`sarvessel.evaluation.scoring`)
reads both.
"""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path

import numpy as np

from sarvessel.runtime.errors import LabelsError
from sarvessel.runtime.io.tables import (
    CsvTable,
    bool_column,
    float_column,
    read_csv_table,
    str_column,
)

log = logging.getLogger(__name__)

#: Columns a predictions table must have (``score`` may be present and is ignored).
PREDICTION_COLUMNS: tuple[str, ...] = (
    "scene_id", "detect_scene_row", "detect_scene_column", "is_vessel", "is_fishing",
    "vessel_length_m",
)
#: Columns a labels table must have.
LABEL_COLUMNS: tuple[str, ...] = PREDICTION_COLUMNS + ("confidence", "distance_from_shore_km")
class Confidence(str, Enum):
    """Label confidence levels of xView3."""

    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"



def read_predictions_csv(path: Path) -> dict[str, np.ndarray]:
    """Read an xView3 submission CSV into columns (module docstring lists them).

    ``is_vessel``/``is_fishing`` become float 1/0/NaN, coordinates and lengths float64, missing
    lengths NaN. A header-only file gives empty columns. Raises :class:`LabelsError` naming the
    file and the problem (no file, empty, missing column, bad value).
    """
    table = read_csv_table(path)
    table.require(PREDICTION_COLUMNS, what="predictions")
    cols = _object_columns(table)
    if "score" in table.header:
        cols["score"] = float_column(table, "score", allow_missing=True, finite=True)
    if len(table) == 0:
        log.warning("%s: no predictions (header only)", table.path)
    return cols


def read_labels_csv(path: Path) -> dict[str, np.ndarray]:
    """Read an xView3 labels CSV into columns (module docstring lists the ones used).

    Raises :class:`LabelsError` naming the file and the problem: no file, empty file or no rows,
    a missing column, a bad number or boolean, an unknown confidence.
    """
    table = read_csv_table(path)
    table.require(LABEL_COLUMNS, what="labels")
    if len(table) == 0:
        raise LabelsError(f"{table.path}: no labels (the file has only a header)")
    return {
        **_object_columns(table),
        "confidence": str_column(table, "confidence", allowed=[c.value for c in Confidence]),
        "distance_from_shore_km": float_column(table, "distance_from_shore_km",
                                               allow_missing=True, finite=False),
    }


def _object_columns(table: CsvTable) -> dict[str, np.ndarray]:
    """The columns predictions and labels share: scene, position, classes, length."""
    return {
        "scene_id": str_column(table, "scene_id"),
        "detect_scene_row": float_column(table, "detect_scene_row", allow_missing=False,
                                         finite=True, nonnegative=True),
        "detect_scene_column": float_column(table, "detect_scene_column", allow_missing=False,
                                            finite=True, nonnegative=True),
        "is_vessel": bool_column(table, "is_vessel", allow_missing=True),
        "is_fishing": bool_column(table, "is_fishing", allow_missing=True),
        "vessel_length_m": float_column(table, "vessel_length_m", allow_missing=True,
                                        finite=True, nonnegative=True),
    }
