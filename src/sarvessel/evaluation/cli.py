"""Evaluation commands: ``score``, ``eval`` and ``eval-proxy``, and the scoring behind
``detect --labels``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``score``, ``eval`` and ``eval-proxy``; let ``detect --labels`` score its result."""
    from sarvessel.evaluation import evaluate, proxy, scoring

    scoring.register_cli(sub)
    evaluate.register_cli(sub)
    proxy.register_cli(sub)
    if "detect" in sub.choices:
        sub.choices["detect"].set_defaults(prepare_score=prepare_scene_score)


def prepare_scene_score(labels_csv: Path, scene_path: Path) -> Callable[[Path], None]:
    """Read ``labels_csv`` and the scene's shoreline now, before the scene runs, and return
    what scores its CSV afterwards: a bad labels file or a corrupt shoreline is reported before
    any work, not after the outputs were written."""
    from sarvessel.evaluation.scoring import load_shoreline
    from sarvessel.runtime.io.scene import open_scene
    from sarvessel.runtime.io.xview3_csv import read_labels_csv

    labels = read_labels_csv(Path(labels_csv))
    with open_scene(scene_path) as scene:
        scene_id = scene.scene_id
    shore = Path(scene_path).parent / "shoreline"
    if shore.is_dir() and np.any(labels["scene_id"] == scene_id):
        load_shoreline(shore, scene_id)  # the file score() will read: checked now

    def score_csv(pred_csv: Path) -> None:
        print_scene_score(pred_csv, labels, scene_path)

    return score_csv


def print_scene_score(pred_csv: Path, labels: Mapping[str, np.ndarray], scene_path: Path
                      ) -> None:
    """Score a scene's written CSV against ``labels`` (columns from ``read_labels_csv``), with
    the shorelines beside the scene when there are any, and print the table."""
    from sarvessel.evaluation.scoring import print_score, read_predictions_csv, score

    preds = read_predictions_csv(pred_csv)
    shore = Path(scene_path).parent / "shoreline"
    print_score(score(preds, labels, shoreline_root=shore if shore.is_dir() else None))
