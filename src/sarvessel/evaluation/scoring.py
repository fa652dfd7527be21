"""The official xView3-SAR metric, without pandas: ``sarvessel score PRED.csv LABELS.csv``.

This mirrors ``reference/metric.py`` of DIUx-xView/xview3-reference (the version with
``drop_low_confidence_preds``, ``costly_dist`` and ``MAX_OBJECT_LENGTH_M = 500``, called by
``evaluate_xview_metric``; earlier revisions, e.g. commit ac7120938ac6, lack the 500 m cap and the
LOW-confidence handling). Run as the leaderboard ran it (``--shore_tolerance 2
--distance_tolerance 200 --costly_dist --drop_low_detect``), in the same order:

1. Labels are restricted to scenes that have predictions. Predictions in scenes without labels
   are never counted (no FP), as upstream loops over the labels' scenes only.
2. With ``drop_low`` (and not ``all_confidences``): per scene, predictions are matched (step 3)
   against *all* labels of the scene; predictions matched to a LOW label are removed. Then labels
   are restricted to HIGH and MEDIUM (also without ``drop_low``, where predictions near LOW
   labels then count as false positives).
3. Per scene: cost = Euclidean pixel distance (``scipy.spatial.distance_matrix``) × 10 m; with
   ``costly_dist`` costs > tolerance become 9,999,999 × 10; Hungarian assignment
   (``scipy.optimize.linear_sum_assignment``) on the ``[n_pred, n_label]`` matrix; an assigned
   pair is a TP if its cost is strictly below the tolerance. TP/FP/FN add up over scenes, then one
   precision/recall/F1, each 0 on division by zero.
4. Close to shore: labels with ``distance_from_shore_km <= 2``; predictions with a shoreline
   point within (2 + 0.2) km = 220 px, found with ``KDTree.sparse_distance_matrix`` (``<=``). A
   shoreline point at distance exactly 0 counts as no neighbour (upstream turns the sparse matrix
   dense, where 0 means "absent"). A scene is matched only when it has near-shore labels *and*
   near-shore predictions; its near-shore labels are otherwise not FN. F1 is 0 when no near-shore
   label lies in a scene that still has predictions, and 0 without shoreline files.
5. Vessel F1 over the TP pairs of step 3: labels with NaN ``is_vessel`` are skipped; the
   positive class is ``True``.
6. Fishing F1 over the TP pairs whose label has ``is_vessel == True``; NaN ``is_fishing`` skipped.
7. Length accuracy over TP pairs with a label length:
   ``1 - min(sum(|min(p, 500) - min(g, 500)| / min(g, 500)) / n, 1)``, 0 when n = 0.
8. ``aggregate = F1_loc * (1 + length_acc + F1_vessel + F1_fishing + F1_shore) / 5``.

Upstream quirks kept on purpose: a NaN predicted length in a TP pair makes ``length_acc`` and the
aggregate NaN (a warning is logged); a prediction whose ``is_vessel``/``is_fishing`` is missing
counts as wrong whatever the label; a label length of 0 gives an infinite error (accuracy 0).
Where upstream crashes, this module decides instead: a scene whose predictions were all removed
in step 2 counts its labels as FN (upstream's ``distance_matrix`` raises on an empty array; later
forks add this same guard), and a missing shoreline file is a :class:`LabelsError` naming it.

Submission CSV columns: scene_id, detect_scene_row, detect_scene_column, is_vessel, is_fishing,
vessel_length_m; ``score`` is optional and unused (upstream scores every row it is given, so
threshold beforehand). Extra columns are ignored, as upstream's ``pd.read_csv`` does.
Labels need scene_id, detect_scene_row, detect_scene_column, is_vessel, is_fishing,
vessel_length_m, confidence and distance_from_shore_km; other columns are ignored.
Shorelines: ``<shoreline_root>/<scene_id>_shoreline.npy``, an ``np.save``'d (object) array of
contours, each ``[N, 2]`` as (row, col) scene pixels, stacked with ``np.vstack`` as upstream does.
"""

from __future__ import annotations

import argparse
import logging
import math
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import KDTree, distance_matrix

from sarvessel.runtime.errors import LabelsError, SarvesselError
from sarvessel.runtime.io.outputs import check_writable_file, write_json
from sarvessel.runtime.io.tables import FALSE_VALUES, NA_VALUES, TRUE_VALUES
from sarvessel.runtime.io.xview3_csv import (
    LABEL_COLUMNS,
    PREDICTION_COLUMNS,
    Confidence,
    read_labels_csv,
    read_predictions_csv,
)

log = logging.getLogger(__name__)

#: Upstream's cap on object lengths in the length error (metres).
MAX_OBJECT_LENGTH_M = 500.0
#: Upstream's cost for pairs beyond the tolerance with ``costly_dist``, in pixels (× pixel size).
COSTLY_DISTANCE_PX = 9999999

#: Column tables: column name → 1-D array, all of one length.
Columns = Mapping[str, Any]


def score(
    predictions: Columns,
    labels: Columns,
    *,
    shoreline_root: Path | None = None,
    distance_tolerance_m: float = 200.0,
    shore_tolerance_km: float = 2.0,
    drop_low: bool = True,
    all_confidences: bool = False,
    costly_dist: bool = True,
    pixel_size_m: float = 10.0,
) -> XView3Score:
    """Score predictions against labels with the official xView3 metric (module docstring).

    Args:
        predictions: column table with :data:`PREDICTION_COLUMNS`; rows and columns in scene
            pixels, ``is_vessel``/``is_fishing`` booleans (or 1/0; NaN counts as wrong),
            ``vessel_length_m`` in metres.
        labels: column table with :data:`LABEL_COLUMNS` (``is_vessel``, ``is_fishing``,
            ``vessel_length_m`` and ``distance_from_shore_km`` may be NaN).
        shoreline_root: folder of ``<scene_id>_shoreline.npy`` files. Without it the
            close-to-shore F1 is 0 (upstream's rule) and ``shore_available`` is False. The
            default is None.
        distance_tolerance_m: a match must be strictly closer than this (metres). The default
            is 200.
        shore_tolerance_km: labels at most this far from shore are "close to shore"; 0 turns
            the shore metric off as upstream does. The default is 2.
        drop_low: remove predictions matched to LOW-confidence labels (``--drop_low_detect``).
            The default is True.
        all_confidences: score against every label, LOW included (``--score_all``); then
            ``drop_low`` has no effect. The default is False.
        costly_dist: give pairs beyond the tolerance a prohibitive cost before the assignment
            (``--costly_dist``). The default is True.
        pixel_size_m: metres per pixel (upstream's ``PIX_TO_M``). The default is 10.
    """
    check_options(distance_tolerance_m=distance_tolerance_m,
                  shore_tolerance_km=shore_tolerance_km, pixel_size_m=pixel_size_m)
    pred = _Table.predictions(predictions)
    gt = _Table.labels(labels, need_confidence=not all_confidences)
    opts = _MatchOptions(float(distance_tolerance_m), bool(costly_dist), float(pixel_size_m))
    n_pred_in, n_gt_in = len(pred), len(gt)

    # 1. labels only where there are predictions
    gt = gt.take(_isin(gt.scene_id, set(pred.scene_id.tolist())))
    scenes = _ordered_unique(gt.scene_id)
    n_low_dropped: dict[str, int] = {}

    # 2. LOW-confidence handling
    if not all_confidences:
        if drop_low:
            drop = np.zeros(len(pred), bool)
            for scene_id in scenes:
                pi = np.flatnonzero(pred.scene_id == scene_id)
                gi = np.flatnonzero(gt.scene_id == scene_id)
                r, c = _match(pred.points[pi], gt.points[gi], opts)
                low = gt.confidence[gi[c]] == Confidence.LOW.value
                drop[pi[r[low]]] = True
                n_low_dropped[scene_id] = int(low.sum())
            pred = pred.take(~drop)
        gt = gt.take(_isin(gt.confidence, {Confidence.HIGH.value, Confidence.MEDIUM.value}))
        scenes = _ordered_unique(gt.scene_id)

    # 3. detection
    per_scene: dict[str, SceneScore] = {}
    tp_pred: list[np.ndarray] = []
    tp_gt: list[np.ndarray] = []
    for scene_id in scenes:
        pi = np.flatnonzero(pred.scene_id == scene_id)
        gi = np.flatnonzero(gt.scene_id == scene_id)
        if len(pi) == 0:
            log.info("scene %s: every prediction matched a LOW label; its %d labels are FN",
                     scene_id, len(gi))
        r, c = _match(pred.points[pi], gt.points[gi], opts)
        tp_pred.append(pi[r])
        tp_gt.append(gi[c])
        per_scene[scene_id] = SceneScore(
            scene_id=scene_id, n_predictions=len(pi), n_labels=len(gi), tp=len(r),
            fp=len(pi) - len(r), fn=len(gi) - len(r),
            n_low_dropped=n_low_dropped.get(scene_id, 0),
        )
    tp_p = np.concatenate(tp_pred) if tp_pred else np.zeros(0, np.int64)
    tp_g = np.concatenate(tp_gt) if tp_gt else np.zeros(0, np.int64)
    tp = sum(s.tp for s in per_scene.values())
    fp = sum(s.fp for s in per_scene.values())
    fn = sum(s.fn for s in per_scene.values())
    loc = _prf(tp, fp, fn)

    # 4. close to shore
    shore_available = bool(shoreline_root) and bool(shore_tolerance_km)
    shore_counts = (0, 0, 0)
    shore = (0.0, 0.0, 0.0)
    if not shoreline_root:
        log.warning("no shoreline folder given: the close-to-shore F1 is unavailable and counts "
                    "as 0 in the aggregate (official rule)")
    elif shore_available:
        root = Path(shoreline_root)
        near_gt = gt.distance_from_shore_km <= shore_tolerance_km  # NaN: not near
        # upstream: shore_tolerance + distance_tolerance / 1000 km, then * 1000 / PIX_TO_M px
        radius_px = (shore_tolerance_km + distance_tolerance_m / 1000) * 1000 / pixel_size_m
        stp = sfp = sfn = 0
        for scene_id in scenes:
            pi = np.flatnonzero(pred.scene_id == scene_id)
            gi = np.flatnonzero((gt.scene_id == scene_id) & near_gt)
            contour = load_shoreline(root, scene_id)
            pi = pi[_near_shore(pred.points[pi], contour, radius_px)]
            s = per_scene[scene_id]
            s.shore_n_predictions, s.shore_n_labels = len(pi), len(gi)
            if len(gi) > 0 and len(pi) > 0:
                r, _ = _match(pred.points[pi], gt.points[gi], opts)
                s.shore_scored = True
                s.shore_tp, s.shore_fp, s.shore_fn = len(r), len(pi) - len(r), len(gi) - len(r)
                stp, sfp, sfn = stp + s.shore_tp, sfp + s.shore_fp, sfn + s.shore_fn
        shore_counts = (stp, sfp, sfn)
        if np.any(near_gt & _isin(gt.scene_id, set(pred.scene_id.tolist()))):
            shore = _prf(stp, sfp, sfn)

    # 5.-6. classification over the TP pairs
    vessel_counts = _class_counts(pred.is_vessel[tp_p], gt.is_vessel[tp_g])
    is_vessel_gt = gt.is_vessel[tp_g] == 1.0
    fishing_counts = _class_counts(pred.is_fishing[tp_p][is_vessel_gt],
                                   gt.is_fishing[tp_g][is_vessel_gt])
    vessel, fishing = _prf(*vessel_counts), _prf(*fishing_counts)

    # 7. length
    length_acc, n_length = _length_accuracy(pred.length[tp_p], gt.length[tp_g])

    # 8. aggregate, in upstream's order of operations
    aggregate = loc[2] * (1 + length_acc + vessel[2] + fishing[2] + shore[2]) / 5

    n_ignored = int(np.count_nonzero(~_isin(pred.scene_id, set(scenes))))
    if n_ignored:
        log.warning("%d predictions lie in scenes without (scored) labels and are not counted",
                    n_ignored)
    return XView3Score(
        aggregate=aggregate, loc_fscore=loc[2], loc_fscore_shore=shore[2],
        vessel_fscore=vessel[2], fishing_fscore=fishing[2], length_acc=length_acc,
        loc_precision=loc[0], loc_recall=loc[1],
        loc_precision_shore=shore[0], loc_recall_shore=shore[1],
        vessel_precision=vessel[0], vessel_recall=vessel[1],
        fishing_precision=fishing[0], fishing_recall=fishing[1],
        tp=tp, fp=fp, fn=fn, shore_tp=shore_counts[0], shore_fp=shore_counts[1],
        shore_fn=shore_counts[2], vessel_counts=vessel_counts, fishing_counts=fishing_counts,
        n_length_pairs=n_length, shore_available=shore_available,
        n_predictions=n_pred_in, n_labels=n_gt_in,
        n_low_dropped=sum(n_low_dropped.values()), n_predictions_ignored=n_ignored,
        scenes=tuple(per_scene.values()),
    )


def score_csv(
    pred_csv: Path,
    labels_csv: Path,
    *,
    shoreline_root: Path | None = None,
    distance_tolerance_m: float = 200.0,
    shore_tolerance_km: float = 2.0,
    drop_low: bool = True,
    all_confidences: bool = False,
    costly_dist: bool = True,
    pixel_size_m: float = 10.0,
) -> XView3Score:
    """:func:`score` of two CSV files; options as there."""
    if shoreline_root is not None and not Path(shoreline_root).is_dir():
        raise LabelsError(f"{shoreline_root}: shoreline folder not found")
    return score(
        read_predictions_csv(Path(pred_csv)), read_labels_csv(Path(labels_csv)),
        shoreline_root=shoreline_root, distance_tolerance_m=distance_tolerance_m,
        shore_tolerance_km=shore_tolerance_km, drop_low=drop_low,
        all_confidences=all_confidences, costly_dist=costly_dist, pixel_size_m=pixel_size_m,
    )


def check_options(*, distance_tolerance_m: float = 200.0, shore_tolerance_km: float = 2.0,
                  pixel_size_m: float = 10.0) -> None:
    """Refuse scoring options that mean nothing (negative or NaN distances), in one line."""
    for name, value, low_ok in (("distance tolerance (m)", distance_tolerance_m, False),
                                ("shore tolerance (km)", shore_tolerance_km, True),
                                ("pixel size (m)", pixel_size_m, False)):
        v = float(value)
        if not math.isfinite(v) or v < 0 or (v == 0 and not low_ok):
            need = ">= 0" if low_ok else "> 0"
            raise SarvesselError(f"{name} must be a finite number {need}, got {value}")


def load_shoreline(root: Path, scene_id: str) -> np.ndarray:
    """Shoreline points of a scene as float64 ``[K, 2]`` (row, col) pixels (``K`` may be 0).

    Reads ``<root>/<scene_id>_shoreline.npy`` (object array of ``[N, 2]`` contours) and stacks
    the contours. The object array is a pickle; it is unpickled with only numpy's array
    classes allowed (:class:`_ArrayUnpickler`), so a hostile file cannot run code. Raises
    :class:`LabelsError` naming the file if it is missing or malformed.
    """
    path = Path(root) / f"{scene_id}_shoreline.npy"
    if not path.is_file():
        raise LabelsError(f"{path}: shoreline file not found (needed for every scored scene)")
    try:
        contours = _load_npy(path)
        if contours.ndim == 0:
            raise ValueError(f"a 0-d array of {contours.dtype}, not a list of contours")
        if len(contours) == 0:
            return np.zeros((0, 2), np.float64)
        points = np.vstack(contours).astype(np.float64)
    except (OSError, ValueError, TypeError, EOFError, pickle.UnpicklingError) as exc:
        raise LabelsError(f"{path}: cannot read shoreline contours ({exc})") from exc
    if points.ndim != 2 or points.shape[1] != 2:
        raise LabelsError(f"{path}: shoreline points have shape {points.shape}, expected [N, 2]")
    return points


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sarvessel score PRED.csv LABELS.csv`` to a sub-command parser."""
    p = subparsers.add_parser(
        "score",
        help="score an xView3 predictions CSV with the official metric",
        description="Official xView3 metric (leaderboard settings by default).",
    )
    p.add_argument("predictions", type=Path, metavar="PRED.csv", help="submission CSV")
    p.add_argument("labels", type=Path, metavar="LABELS.csv", help="xView3 labels CSV")
    p.add_argument("--shoreline-dir", type=Path, default=None, metavar="DIR",
                   help="folder of <scene_id>_shoreline.npy (without it shore F1 counts as 0)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="also write the scores (with the per-scene breakdown) as JSON")
    p.add_argument("--all-confidences", action="store_true",
                   help="score against LOW-confidence labels too (official --score_all)")
    p.add_argument("--keep-low-matches", action="store_true",
                   help="keep predictions matched to LOW labels (they become FP)")
    p.add_argument("--distance-tolerance-m", type=float, default=200.0, metavar="M",
                   help="match distance in metres (default 200)")
    p.add_argument("--shore-tolerance-km", type=float, default=2.0, metavar="KM",
                   help="close-to-shore distance in km (default 2)")
    p.set_defaults(func=_cmd_score)


@dataclass
class SceneScore:
    """Detection counts of one scored scene (after the LOW-confidence step)."""

    scene_id: str
    n_predictions: int
    n_labels: int
    tp: int
    fp: int
    fn: int
    #: predictions removed because they matched a LOW-confidence label
    n_low_dropped: int = 0
    shore_n_predictions: int = 0
    shore_n_labels: int = 0
    #: whether the scene had near-shore labels and predictions and so entered the shore F1
    shore_scored: bool = False
    shore_tp: int = 0
    shore_fp: int = 0
    shore_fn: int = 0


@dataclass
class XView3Score:
    """The xView3 metrics; the first six are upstream's ``score()`` dictionary."""

    aggregate: float
    loc_fscore: float
    loc_fscore_shore: float
    vessel_fscore: float
    fishing_fscore: float
    length_acc: float
    loc_precision: float = 0.0
    loc_recall: float = 0.0
    loc_precision_shore: float = 0.0
    loc_recall_shore: float = 0.0
    vessel_precision: float = 0.0
    vessel_recall: float = 0.0
    fishing_precision: float = 0.0
    fishing_recall: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    shore_tp: int = 0
    shore_fp: int = 0
    shore_fn: int = 0
    #: (tp, fp, fn) of the vessel and fishing classification
    vessel_counts: tuple[int, int, int] = (0, 0, 0)
    fishing_counts: tuple[int, int, int] = (0, 0, 0)
    #: TP pairs with a label length (the length accuracy's n)
    n_length_pairs: int = 0
    #: False when no shoreline folder was given: loc_fscore_shore is then 0 by rule, not measured
    shore_available: bool = False
    n_predictions: int = 0
    n_labels: int = 0
    n_low_dropped: int = 0
    #: predictions in scenes without scored labels (never counted, as upstream)
    n_predictions_ignored: int = 0
    scenes: tuple[SceneScore, ...] = field(default_factory=tuple)

    def as_dict(self, *, scenes: bool = True) -> dict[str, Any]:
        """Plain dict (:func:`~sarvessel.runtime.io.outputs.write_json` writes its NaN as
        null); ``scenes=False`` leaves out the breakdown."""
        out = asdict(self)
        out["vessel_counts"] = list(self.vessel_counts)
        out["fishing_counts"] = list(self.fishing_counts)
        out["scenes"] = [asdict(s) for s in self.scenes] if scenes else None
        if not scenes:
            del out["scenes"]
        return out


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else (what ``np.save`` writes for object arrays)."""

    _ALLOWED = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a shoreline file")
        return super().find_class(module, name)


def _load_npy(path: Path) -> np.ndarray:
    """An ``.npy`` file's array; object arrays through :class:`_ArrayUnpickler`."""
    fmt = np.lib.format
    with open(path, "rb") as fh:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        if not dtype.hasobject:
            fh.seek(0)
            return fmt.read_array(fh, allow_pickle=False)
        try:
            data = _ArrayUnpickler(fh).load()
        except (AttributeError, ImportError, IndexError, KeyError) as exc:  # a broken pickle
            raise pickle.UnpicklingError(str(exc)) from exc
    if not isinstance(data, np.ndarray):
        raise ValueError(f"holds a {type(data).__name__}, not an array")
    return data


@dataclass(frozen=True)
class _MatchOptions:
    tolerance_m: float
    costly_dist: bool
    pixel_size_m: float


@dataclass
class _Table:
    """Validated columns, one row per point; booleans as float 1/0/NaN."""

    scene_id: np.ndarray
    points: np.ndarray  # [N, 2] float64 (row, col)
    is_vessel: np.ndarray
    is_fishing: np.ndarray
    length: np.ndarray
    confidence: np.ndarray
    distance_from_shore_km: np.ndarray

    def __len__(self) -> int:
        return len(self.scene_id)

    def take(self, index: np.ndarray) -> _Table:
        return _Table(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    @classmethod
    def predictions(cls, cols: Columns) -> _Table:
        return cls._build(cols, "predictions", PREDICTION_COLUMNS)

    @classmethod
    def labels(cls, cols: Columns, *, need_confidence: bool) -> _Table:
        names = LABEL_COLUMNS if need_confidence else tuple(
            c for c in LABEL_COLUMNS if c != "confidence")
        table = cls._build(cols, "labels", names)
        if need_confidence:
            allowed = {c.value for c in Confidence}
            bad = [v for v in table.confidence.tolist() if v not in allowed]
            if bad:
                raise LabelsError(f"labels column confidence has {bad[0]!r}, expected one of "
                                  f"{', '.join(sorted(allowed))}")
        return table

    @classmethod
    def _build(cls, cols: Columns, what: str, names: tuple[str, ...]) -> _Table:
        missing = [n for n in names if n not in cols]
        if missing:
            raise LabelsError(f"{what} lack column(s) {', '.join(missing)}")
        arrays = {n: np.asarray(cols[n]).reshape(-1) for n in names}
        n = len(arrays["scene_id"])
        for name, a in arrays.items():
            if len(a) != n:
                raise LabelsError(f"{what} column {name} has {len(a)} rows, scene_id has {n}")
        points = np.stack([_floats(arrays[c], what, c) for c in
                           ("detect_scene_row", "detect_scene_column")], axis=1)
        if not np.all(np.isfinite(points)):
            raise LabelsError(f"{what} have non-finite detect_scene_row/column values")
        if np.any(points < 0):
            raise LabelsError(f"{what} have negative detect_scene_row/column values (scene "
                              "pixels start at 0)")
        length = _floats(arrays["vessel_length_m"], what, "vessel_length_m")
        if np.any(length < 0):  # NaN (unknown) compares False: allowed
            raise LabelsError(f"{what} have negative vessel_length_m values")
        nan = np.full(n, np.nan)
        return cls(
            scene_id=arrays["scene_id"].astype(str).astype(object),
            points=points.reshape(n, 2),
            is_vessel=_tristate(arrays["is_vessel"], what, "is_vessel"),
            is_fishing=_tristate(arrays["is_fishing"], what, "is_fishing"),
            length=length,
            confidence=(arrays["confidence"].astype(str).astype(object)
                        if "confidence" in arrays else np.full(n, "", object)),
            distance_from_shore_km=(_floats(arrays["distance_from_shore_km"], what,
                                            "distance_from_shore_km")
                                    if "distance_from_shore_km" in arrays else nan),
        )


def _floats(a: np.ndarray, what: str, name: str) -> np.ndarray:
    try:
        return np.array([math.nan if v is None else v for v in a.tolist()], np.float64) \
            if a.dtype == object else a.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise LabelsError(f"{what} column {name} is not numeric ({exc})") from exc


def _tristate(a: np.ndarray, what: str, name: str) -> np.ndarray:
    """Booleans (bool, 1/0, 'True'/'False' strings, None/NaN) as float 1/0/NaN."""
    out = np.empty(len(a), np.float64)
    for i, v in enumerate(a.tolist()):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[i] = math.nan
        elif isinstance(v, str):
            s = v.strip()
            if s in TRUE_VALUES:
                out[i] = 1.0
            elif s in FALSE_VALUES:
                out[i] = 0.0
            elif s in NA_VALUES:
                out[i] = math.nan
            else:
                raise LabelsError(f"{what} column {name} row {i} has {v!r}, expected a boolean")
        elif isinstance(v, (bool, int, float)) and v in (0, 1):
            out[i] = float(v)
        else:
            raise LabelsError(f"{what} column {name} row {i} has {v!r}, expected a boolean")
    return out


def _match(pred_pts: np.ndarray, gt_pts: np.ndarray, opts: _MatchOptions
           ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into the inputs) of the TP pairs of one scene, in upstream's order."""
    empty = np.zeros(0, np.int64)
    if len(pred_pts) == 0 or len(gt_pts) == 0:
        return empty, empty
    cost = distance_matrix(pred_pts, gt_pts, p=2) * opts.pixel_size_m
    if opts.costly_dist:
        cost[cost > opts.tolerance_m] = COSTLY_DISTANCE_PX * opts.pixel_size_m
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] < opts.tolerance_m
    return rows[ok].astype(np.int64), cols[ok].astype(np.int64)


def _near_shore(points: np.ndarray, contour: np.ndarray, radius_px: float) -> np.ndarray:
    """Mask of points with a shoreline point at distance in (0, radius_px] (upstream's quirk)."""
    near = np.zeros(len(points), bool)
    if len(points) == 0 or len(contour) == 0:
        return near
    pairs = KDTree(contour).sparse_distance_matrix(KDTree(points), radius_px, p=2,
                                                   output_type="ndarray")
    near[pairs["j"][pairs["v"] != 0]] = True
    return near


def _class_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    """(tp, fp, fn) of a binary task over TP pairs; NaN labels skipped, NaN predictions wrong."""
    valid = ~np.isnan(gt)
    same = pred == gt
    tp = int(np.count_nonzero(valid & same & (gt == 1.0)))
    fp = int(np.count_nonzero(valid & ~same & (gt == 0.0)))
    fn = int(np.count_nonzero(valid & ~same & (gt == 1.0)))
    return tp, fp, fn


def _length_accuracy(pred: np.ndarray, gt: np.ndarray) -> tuple[float, int]:
    """Upstream's length accuracy and its n, summed in pair order as upstream does."""
    valid = ~np.isnan(gt)
    g = np.minimum(gt[valid], MAX_OBJECT_LENGTH_M)
    p = np.minimum(pred[valid], MAX_OBJECT_LENGTH_M)  # NaN stays NaN, as Python's min(nan, 500)
    if np.isnan(p).any():
        log.warning("%d matched predictions have no vessel_length_m: the official length "
                    "accuracy and aggregate are then NaN", int(np.isnan(p).sum()))
    with np.errstate(divide="ignore", invalid="ignore"):
        errors = np.abs(p - g) / g
    total = 0.0
    for e in errors.tolist():
        total += e
    n = len(errors)
    if n == 0:
        return 0.0, 0
    return 1.0 - min(total / float(n), 1.0), n


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1; each 0 where its denominator is 0 (as upstream)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = (2 * precision * recall) / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _isin(values: np.ndarray, allowed: set[str]) -> np.ndarray:
    return np.fromiter((v in allowed for v in values.tolist()), bool, len(values))


def _ordered_unique(values: np.ndarray) -> list[str]:
    """Unique values in order of first appearance (as ``pandas.unique``)."""
    return list(dict.fromkeys(values.tolist()))


def print_score(result: XView3Score, *, title: str = "xView3 score") -> None:
    """Print the metrics as a readable table on the terminal."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title), highlight=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("detail")
    shore_note = (f"TP {result.shore_tp}  FP {result.shore_fp}  FN {result.shore_fn}"
                  if result.shore_available else "unavailable (no --shoreline-dir): 0 by rule")
    rows = [
        ("aggregate", result.aggregate, "F1_loc × (1 + length + vessel + fishing + shore) / 5"),
        ("loc F1", result.loc_fscore,
         f"P {result.loc_precision:.4f}  R {result.loc_recall:.4f}  "
         f"TP {result.tp}  FP {result.fp}  FN {result.fn}"),
        ("shore F1", result.loc_fscore_shore, shore_note),
        ("vessel F1", result.vessel_fscore, "TP/FP/FN {}/{}/{}".format(*result.vessel_counts)),
        ("fishing F1", result.fishing_fscore,
         "TP/FP/FN {}/{}/{}".format(*result.fishing_counts)),
        ("length acc", result.length_acc, f"{result.n_length_pairs} pairs with a length"),
    ]
    for name, value, detail in rows:
        table.add_row(name, f"{value:.4f}", detail)
    console = Console(highlight=False)  # no colouring of "0x8000" inside scene ids
    console.print(table)
    console.print(
        f"{result.n_predictions} predictions ({result.n_low_dropped} matched LOW labels, "
        f"{result.n_predictions_ignored} in unlabelled scenes), {result.n_labels} labels, "
        f"{len(result.scenes)} scenes scored"
    )


def _cmd_score(args: argparse.Namespace) -> int:
    check_options(distance_tolerance_m=args.distance_tolerance_m,
                  shore_tolerance_km=args.shore_tolerance_km)
    if args.json is not None:  # before any work: a folder or a path under a file is refused
        check_writable_file(args.json, option="--json")
    result = score_csv(
        args.predictions, args.labels, shoreline_root=args.shoreline_dir,
        distance_tolerance_m=args.distance_tolerance_m,
        shore_tolerance_km=args.shore_tolerance_km, drop_low=not args.keep_low_matches,
        all_confidences=args.all_confidences,
    )
    print_score(result, title=f"xView3 score of {args.predictions.name}")
    if args.json is not None:
        write_json(args.json, result.as_dict())  # NaN (e.g. length accuracy) as null
        log.info("wrote %s", args.json)
    return 0
