#!/usr/bin/env python
"""Reproduce the shipped SSDD models in one resumable command: the five float stages of
``models/ssdd_float``, the W4A4 QAT stage of ``models/ssdd_w4a4`` (v12), export, evaluation.

    python scripts/reproduce_ssdd.py --runs runs/repro              # ~5 h on 2 CPU cores
    python scripts/reproduce_ssdd.py --runs runs/repro --dry-run    # print the commands only
    python scripts/reproduce_ssdd.py --runs runs/repro --device cuda --threads 8   # a GPU host
    python scripts/reproduce_ssdd.py --runs runs/repro_qat \
        --from-float models/ssdd_float/checkpoint.pt    # the QAT stage only (~15 min)

The stages are the model cards' commands, each starting from the one before (``--init``; the
QAT stage also distils from the last float stage). Stage ``s`` trains into ``<runs>/<s>/`` and
writes ``<runs>/<s>/done.json`` when it has finished. After an interruption (power, crash,
Ctrl-C, a session's end) run the same command again: finished stages are skipped and the
interrupted one resumes from its ``last.pt`` (``--resume``), so no finished epoch is lost.

At the end the QAT model is exported to ``<runs>/export`` (QONNX + QCDQ, NMS IoU 0.6), its
second stage (box refiner and rescorer) is fitted on the training split
(``sarvessel fit-second-stage``; not with ``--smoke``), and it is scored on SSDD test and train
with ``sarvessel eval``; the figures are printed beside the shipped model's
(``models/ssdd_w4a4/eval_ssdd_*.json``, ``rescorer_fit.json``). Seeds are fixed, but PyTorch CPU
kernels are not bit-identical across machines and thread counts: expect the scores within
the seed noise the model card reports (about +-1 AP50 point on test), not equal to them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WIDTHS, DILATIONS = "16,32,40,40,40,40,40,40", "1,1,1,2,4,8,2,1"
BODY = ["--widths", WIDTHS, "--dilations", DILATIONS, "--batch", "16"]
FLOAT = ["--float", "--name", "ssdd_float", *BODY]
WHOLE = [*FLOAT, "--warmup-epochs", "1", "--train-size", "512", "--lr", "5e-4"]


@dataclass(frozen=True)
class Stage:
    """One ``sarvessel train`` run; ``init``/``teacher`` name earlier stages."""

    name: str
    args: tuple[str, ...]
    init: str | None = None
    teacher: str | None = None


#: models/ssdd_float/model_card.md stages 1-5, then models/ssdd_w4a4/model_card.md stage 6.
STAGES: tuple[Stage, ...] = (
    Stage("float1", (*FLOAT, "--epochs", "130", "--lr", "3e-3", "--train-size", "384",
                     "--eval-every", "2")),
    Stage("float2", (*FLOAT, "--epochs", "60", "--lr", "1.5e-3", "--warmup-epochs", "1",
                     "--train-size", "384", "--eval-every", "5"), init="float1"),
    Stage("float3", (*FLOAT, "--epochs", "75", "--lr", "1e-3", "--warmup-epochs", "1",
                     "--train-size", "384", "--eval-every", "5", "--seed", "1"), init="float2"),
    Stage("float4", (*WHOLE, "--epochs", "40", "--eval-every", "10", "--seed", "4"),
          init="float3"),
    Stage("float5", (*WHOLE, "--epochs", "25", "--eval-every", "5", "--seed", "5"),
          init="float4"),
    Stage("qat", (*BODY, "--warmup-epochs", "0.3", "--train-size", "384", "--lr", "5e-4",
                  "--epochs", "16", "--seed", "1", "--freeze-bn", "--bits", "weight_mse=1"),
          init="float5", teacher="float5"),
)

#: Appended to every stage by --smoke (a minutes-long check of the chain, not a model).
SMOKE = ("--epochs", "1", "--max-batches", "1", "--max-images", "4", "--eval-every", "1",
         "--train-size", "64")


def stage_command(stage: Stage, runs: Path, extra: list[str],
                  checkpoints: dict[str, Path] | None = None) -> list[str]:
    """The ``sarvessel train`` arguments of ``stage`` (``--resume`` when it was interrupted).
    ``checkpoints`` replaces the ``last.pt`` of named earlier stages (``--from-float``)."""
    out = runs / stage.name
    ckpt = {s.name: runs / s.name / "last.pt" for s in STAGES} | (checkpoints or {})
    cmd = ["train", "--out", str(out), *stage.args]
    if stage.init:
        cmd += ["--init", str(ckpt[stage.init])]
    if stage.teacher:
        cmd += ["--teacher", str(ckpt[stage.teacher])]
    cmd += extra
    if (out / "last.pt").is_file():
        cmd.append("--resume")
    return cmd


def sarvessel(args: list[str], *, dry_run: bool) -> None:
    print("sarvessel " + " ".join(args), flush=True)
    if not dry_run:
        subprocess.run([sys.executable, "-m", "sarvessel", *args], check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/repro"),
                   help="folder of the stage runs and the export (default runs/repro)")
    p.add_argument("--data-dir", type=Path, help="SSDD root (default: sarvessel's)")
    p.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads (default 2)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--from-float", type=Path, metavar="CKPT",
                   help="skip the float stages and run QAT from this float checkpoint (e.g. "
                   "models/ssdd_float/checkpoint.pt, the shipped float twin)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--smoke", action="store_true",
                   help="one batch per stage on 4 images: checks the chain in minutes")
    args = p.parse_args(argv)
    extra = ["--threads", str(args.threads), "--device", args.device]
    if args.data_dir:
        extra += ["--data-dir", str(args.data_dir)]
    if args.smoke:
        extra += list(SMOKE)
    checkpoints: dict[str, Path] = {}
    if args.from_float:
        if not args.from_float.is_file():
            p.error(f"--from-float: {args.from_float} is not a file")
        checkpoints[STAGES[-2].name] = args.from_float
    for stage in STAGES:
        done = args.runs / stage.name / "done.json"
        if stage.name in checkpoints:
            print(f"# {stage.name}: taken from {checkpoints[stage.name]}", flush=True)
            continue
        if args.from_float and stage is not STAGES[-1]:
            continue
        if done.is_file():
            print(f"# {stage.name}: done ({done}), skipped", flush=True)
            continue
        t0 = time.time()
        command = stage_command(stage, args.runs, extra, checkpoints)
        sarvessel(command, dry_run=args.dry_run)
        if not args.dry_run:
            done.write_text(json.dumps({"stage": stage.name, "minutes": (time.time() - t0) / 60,
                                        "args": command}, indent=2, allow_nan=False) + "\n")
    export = args.runs / "export"
    sarvessel(["export", str(args.runs / STAGES[-1].name / "last.pt"), "--out", str(export),
               "--qonnx", "--qcdq", "--iou", "0.6"], dry_run=args.dry_run)
    data = str(args.data_dir) if args.data_dir else "ssdd"
    fit = [sys.executable, "-m", "sarvessel", "fit-second-stage",
           str(export / "ssdd_w4a4.onnx"), "--data", data, "--json",
           str(export / "rescorer_fit.json")]
    if args.smoke:  # one batch of training on 4 images leaves the second stage nothing to learn
        print("# smoke: no second stage (refiner, rescorer)", flush=True)
    else:
        print("sarvessel " + " ".join(fit[3:]), flush=True)
        if not args.dry_run:
            subprocess.run(fit, check=True)
    # test as users run it (refined and rescored); train without the second stage, which was
    # fitted on it (its fair training-split figure is the cross-fitted one in rescorer_fit.json)
    for split, flags in (("test", []), ("train", ["--no-rescore"])):
        sarvessel(["eval", str(export / "ssdd_w4a4.onnx"), "--data", data, "--split", split,
                   *flags, "--json", str(export / f"eval_ssdd_{split}.json")],
                  dry_run=args.dry_run)
    if args.dry_run:
        return 0
    nan = float("nan")
    for split in ("test", "train"):
        got = json.loads((export / f"eval_ssdd_{split}.json").read_text())
        shipped = _json(ROOT / "models" / "ssdd_w4a4" / f"eval_ssdd_{split}.json")
        print(f"{split}: AP50 {got['ap50']:.4f} AP50-95 {got['ap50_95']:.4f}; shipped v12 "
              f"{shipped.get('ap50', nan):.4f} / {shipped.get('ap50_95', nan):.4f}")
    if not args.smoke:
        got = _json(export / "rescorer_fit.json")
        shipped = _json(ROOT / "models" / "ssdd_w4a4" / "rescorer_fit.json")
        print("train, refined and rescored (cross-fitted): AP50 "
              f"{got['ap50_rescored_crossfit']:.4f}; shipped v12 "
              f"{shipped.get('ap50_rescored_crossfit', nan):.4f}")
    return 0


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


if __name__ == "__main__":
    sys.exit(main())
