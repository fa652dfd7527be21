"""Evaluation commands: ``score``, ``eval`` and ``eval-proxy``, and the scoring behind
``detect --labels``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``score``, ``eval`` and ``eval-proxy``; let ``detect --labels`` score its result."""
    from sarvessel.evaluation import evaluate, proxy, scoring

    scoring.register_cli(sub)
    evaluate.register_cli(sub)
    proxy.register_cli(sub)
    if "detect" in sub.choices:
        sub.choices["detect"].set_defaults(score_fn=print_scene_score)


def print_scene_score(pred_csv: Path, labels: Mapping[str, np.ndarray], scene_path: Path
                      ) -> None:
    """Score a scene's written CSV against ``labels`` (columns from ``read_labels_csv``), with
    the shorelines beside the scene when there are any, and print the table."""
    from sarvessel.evaluation.scoring import print_score, read_predictions_csv, score

    preds = read_predictions_csv(pred_csv)
    shore = Path(scene_path).parent / "shoreline"
    print_score(score(preds, labels, shoreline_root=shore if shore.is_dir() else None))
