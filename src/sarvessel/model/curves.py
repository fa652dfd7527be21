"""Training logs: the per-epoch metrics CSV of a run, its training-curve PNG, and joining the
CSVs of consecutive stages into one curve for a model card."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sarvessel.runtime.errors import SarvesselError

__all__ = ["METRIC_FIELDS", "append_metrics", "join_metrics", "plot_curves"]

#: Columns of a run's ``metrics.csv``, in order.
METRIC_FIELDS = ("epoch", "lr", "loss", "loss_box", "loss_cls", "loss_dfl", "loss_kd",
                 "val_ap50", "train_s", "eval_s")


def plot_curves(csv_path: Path, png: Path) -> None:
    """Plot losses and validation AP50 per epoch from the metrics CSV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Path(csv_path).open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    ep = [int(r["epoch"]) + 1 for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for k in ("loss_box", "loss_cls", "loss_dfl", "loss", "loss_kd"):
        vals = [float(r.get(k) or 0.0) for r in rows]
        if k != "loss_kd" or any(vals):  # metrics of runs without a teacher have no kd
            a1.plot(ep, vals, label=k)
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss")
    a1.legend()
    a1.grid(alpha=0.3)
    pts = [(e, float(r["val_ap50"])) for e, r in zip(ep, rows, strict=True)
           if r["val_ap50"] not in ("", "nan")]
    if pts:
        a2.plot(*zip(*pts, strict=True), marker="o")
    a2.set_xlabel("epoch")
    a2.set_ylabel("val AP50 (EMA)")
    a2.set_ylim(0, 1)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def join_metrics(stages: Sequence[Path | str], out: Path | str) -> int:
    """Join the ``metrics.csv`` of consecutive training stages (e.g. a float run and the warm
    restarts that ``--init`` from it) into one CSV with one epoch count; returns its rows.

    Why: a shipped model's curve spans several runs, each numbering its epochs from 0. Stage
    k's epochs are shifted past the last epoch of the stages before it; a row repeated by a
    resume keeps its last copy; columns are the union in order of first appearance (a column a
    stage lacks is left empty)."""
    fields: list[str] = []
    rows: list[dict[str, str]] = []
    offset = 0
    for stage in stages:
        with Path(stage).open(newline="") as f:
            reader = csv.DictReader(f)
            names = reader.fieldnames or []
            if "epoch" not in names:
                raise SarvesselError(f"{stage}: not a metrics CSV (no 'epoch' column)")
            fields += [k for k in names if k not in fields]
            try:
                by_epoch = {int(r["epoch"]): r for r in reader}
            except (TypeError, ValueError) as e:
                raise SarvesselError(f"{stage}: line {reader.line_num}: epoch is not an "
                                     f"integer ({e})") from None
        if not by_epoch:
            raise SarvesselError(f"{stage}: no epochs in this metrics CSV")
        for ep in sorted(by_epoch):
            rows.append({**by_epoch[ep], "epoch": str(ep + offset)})
        offset += max(by_epoch) + 1
    with Path(out).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Append ``row``; a resumed run keeps the columns its CSV was started with."""
    fields: Sequence[str] = METRIC_FIELDS
    new = not path.exists()
    if not new:
        with path.open(newline="") as f:
            fields = next(csv.reader(f), None) or METRIC_FIELDS
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
