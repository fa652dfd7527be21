"""``sarvessel train``: train the detector (torch and brevitas are imported only when it runs)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sarvessel.evaluation.evaluate import parse_stretch
from sarvessel.runtime.contract import SUBGRIDS, TILE_SIZE
from sarvessel.runtime.errors import SarvesselError

if TYPE_CHECKING:
    from sarvessel.model.config import ModelConfig
    from sarvessel.model.train import TrainConfig

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``fit-second-stage`` commands."""
    p = subparsers.add_parser(
        "train", help="train the quantised (or float) detector",
        description="Train the detector, quantised (Brevitas) or as its float twin, on SSDD, a "
        "YOLO folder or xView3-format scene folders; writes checkpoints, metrics and curves to "
        "--out. Needs the host tools (torch, Brevitas).")
    p.add_argument("--data", choices=["ssdd", "yolo", "xview3"], default="ssdd",
                   help="dataset kind (default ssdd); xview3: scene folders in "
                   "DATA_DIR/train and DATA_DIR/val with labels.csv")
    p.add_argument("--data-dir", type=Path,
                   help="dataset root; needed for yolo and xview3 (ssdd default: "
                   "$SARVESSEL_SSDD, else ../shared/data/ssdd)")
    p.add_argument("--synth-scenes", type=int, default=0, metavar="N",
                   help="with --data xview3: first generate N training scenes (seeds 0..N-1) "
                   "and 2 validation scenes into DATA_DIR if missing")
    p.add_argument("--synth-size", type=int, default=4096, help="side of generated scenes")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, metrics)")
    p.add_argument("--name", default="ssdd_w4a4", help="model name (default ssdd_w4a4)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--batch", type=int, default=16, help="samples per batch (default 16)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 0.002)")
    p.add_argument("--warmup-epochs", type=float, default=1.0,
                   help="epochs of linear learning-rate warm-up (default 1)")
    p.add_argument("--train-size", type=int, default=320, help="training crop side (px)")
    p.add_argument("--input-scale", type=float, default=1.0,
                   help="resample every image by this factor before tiling, in training and "
                   "(through the model's sidecar) in the runtime; default 1: native pixels")
    p.add_argument("--tile", type=int, default=TILE_SIZE,
                   help=f"model tile size (px, default {TILE_SIZE})")
    p.add_argument("--channels", type=int, default=1, help="input channels (1 grey, 2 VV/VH)")
    p.add_argument("--float", dest="quantized", action="store_false",
                   help="train the float twin instead of the quantised model")
    p.add_argument("--widths", default="16,32,48,64,64", help="body widths, comma separated")
    p.add_argument("--dilations", default="",
                   help="dilation of each body block's conv, comma separated (default all 1)")
    p.add_argument("--separable-from", type=int, default=0, metavar="I",
                   help="build body blocks I.. depthwise-separable (default 0: none)")
    p.add_argument("--context-widths", default="",
                   help="widths of the context branch at twice the stride, comma separated "
                   "(default: no branch)")
    p.add_argument("--context-dilations", default="",
                   help="dilation of each context block, comma separated (default all 1)")
    p.add_argument("--skip-width", type=int, default=0,
                   help="channels of the fine-feature skip from the last pooled block to the "
                   "head (default 0: none)")
    p.add_argument("--stem-stride", type=int, default=2, choices=[1, 2],
                   help="stride of the first conv (default 2)")
    p.add_argument("--pools", type=int, default=2,
                   help="max-pools (stride = stem_stride * 2**pools; default 2)")
    p.add_argument("--mosaic", type=float, default=0.0, metavar="P",
                   help="probability of a 4-image mosaic sample (default 0: off)")
    p.add_argument("--copy-paste", type=float, default=0.0, metavar="P",
                   help="probability of pasting 1-4 ships cut from other training images into a "
                        "sample (default 0: off)")
    p.add_argument("--close-mosaic", type=int, default=0, metavar="N",
                   help="train the last N epochs without mosaics (default 0)")
    p.add_argument("--ema-decay", type=float, default=0.995,
                   help="decay of the weights' exponential moving average (default 0.995: a "
                   "window of ~200 steps)")
    p.add_argument("--lr-final", type=float, default=0.05, help="final lr as a fraction of --lr")
    p.add_argument("--head-width", type=int, default=32,
                   help="width of each head branch, box and class (default 32)")
    p.add_argument("--head-kernel", type=int, default=1, choices=[1, 3],
                   help="kernel size of the first head conv (default 1)")
    p.add_argument("--reg-max", type=int, default=16, help="DFL bins per box side (default 16)")
    p.add_argument("--subgrid", type=int, default=1, choices=SUBGRIDS,
                   help="anchors per output cell and axis (default 1; see ModelConfig.subgrid)")
    p.add_argument("--bits", default="",
                   help="bit widths, e.g. 'first_weight=8,weight=4,act=4,last_act=8,"
                        "last_weight=8,dw_weight=0,dw_act=0' (defaults as shown; the dw_ widths "
                        "of separable blocks' depthwise convs and their outputs, 0: follow "
                        "weight / act); also dw_in_per_channel=1 (one activation scale per "
                        "channel into depthwise convs) and weight_mse=1 (weight scales start at "
                        "the rounding-MSE optimum, then learned)")
    p.add_argument("--init", type=Path, default=None, help="start from this checkpoint")
    p.add_argument("--cls-target", choices=("iou", "one"), default="iou",
                   help="class target of each box's best anchor: its best IoU (iou, "
                        "ultralytics, default) or 1 (one)")
    p.add_argument("--stretch", type=parse_stretch, metavar="LO,HI",
                   help="16-bit or float training images: map each image's LO..HI percentiles "
                        "onto 0..255 (as sarvessel eval --stretch; the export records it)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                   help="adamw (default) or sgd (Nesterov, momentum 0.937; ultralytics' choice "
                        "for long runs, at lr 0.01)")
    p.add_argument("--cls-loss", choices=("bce", "qfl", "vfl", "bce+qfl"), default="bce",
                   help="class loss: BCE (ultralytics, default), quality focal (qfl), "
                        "varifocal (vfl) or the mean of BCE and QFL (bce+qfl)")
    p.add_argument("--loss-gains", default="7.5,0.5,1.5", metavar="BOX,CLS,DFL",
                   help="gains of the CIoU box, class and DFL losses (default ultralytics' "
                        "7.5,0.5,1.5)")
    p.add_argument("--grow", choices=("zero", "copy"), default="zero",
                   help="with --init into wider body layers: new channels start fresh and are "
                        "read through zero weights (zero, default) or copy old channels "
                        "(copy, Net2WiderNet; plain bodies only)")
    p.add_argument("--oversize", choices=("fit", "native"), default="fit",
                   help="training images larger than the tile: shrunk to fit it (fit, "
                        "default) or cropped at native pixels, as the runtime tiles them "
                        "(native)")
    p.add_argument("--resume", action="store_true", help="resume <out>/last.pt")
    p.add_argument("--export-dir", type=Path, default=None,
                   help="copy the best checkpoint, metrics.csv and curve here (models/<name>)")
    run = p.add_argument_group("where and for how long it runs")
    run.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads (default 2)")
    run.add_argument("--device", default="auto",
                     help="auto (a CUDA GPU when PyTorch sees one, else the CPU; default), cpu, "
                     "cuda or cuda:N")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="processes that build the training batches (default: 0 on the CPU, "
                     "cores - 1 up to 8 on a GPU). The batches are the same for any N")
    run.add_argument("--time-limit", type=float, default=None, metavar="MIN",
                     help="stop, checkpoints written, before an epoch that would end past MIN "
                     "minutes; --resume goes on (default: none)")
    run.add_argument("--fit-epochs", action="store_true",
                     help="with --time-limit: after the first epoch, lower --epochs to what fits "
                     "in the limit, so the lr schedule ends annealed rather than cut")
    run.add_argument("--channels-last", action="store_true",
                     help="channels-last memory order (faster for depthwise-separable bodies)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--eval-every", type=int, default=1,
                   help="evaluate every N epochs, and always after the last (default 1)")
    p.add_argument("--val-split", default="test", metavar="SPLIT",
                   help="SSDD split of the per-epoch quick AP50 (default test: SSDD has no "
                   "validation split; 'train' measures the fit, e.g. where only the training "
                   "images were copied)")
    p.add_argument("--holdout", type=float, default=0.0, metavar="F",
                   help="validate on this fraction of the training images, held out from "
                   "training (default 0: SSDD validates on its test split)")
    p.add_argument("--oversample", type=Path, default=None, metavar="LIST",
                   help="text file of training image ids (one a line, e.g. from "
                   "scripts/hard_images.py) to draw --oversample-factor times per epoch")
    p.add_argument("--oversample-factor", type=int, default=3, metavar="K",
                   help="draws per epoch of each --oversample image (default 3)")
    p.add_argument("--freeze-bn", action="store_true",
                   help="keep batch-norm running statistics fixed (e.g. QAT from a float model "
                   "trained on other sample sizes)")
    p.add_argument("--teacher", type=Path, default=None, metavar="CKPT",
                   help="float checkpoint to distil from during QAT (its outputs become extra "
                   "targets; default: none)")
    p.add_argument("--teacher-tta", type=int, default=1, choices=(1, 2, 4, 8), metavar="N",
                   help="average the teacher's map over N dihedral views of each sample "
                   "(1, 2, 4 or 8; default 1: one view)")
    p.add_argument("--distill-gain", type=float, default=1.0,
                   help="weight of the distillation loss (default 1)")
    p.add_argument("--weight-scale-lr", type=float, default=None, metavar="F",
                   help="lr multiplier of learned weight scales (--bits weight_mse=1; default "
                   "0.02, train.WEIGHT_SCALE_LR_FACTOR)")
    p.add_argument("--max-batches", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-images", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run_train)
    p = subparsers.add_parser(
        "fit-second-stage",
        help="fit an exported model's box refiner and rescorer on a labelled split",
        description="Fit the CPU second stage of an exported model (box refiner, then rescorer; "
        "gradient-boosted trees exported to ONNX-ML), cross-fitted over folds of images, report "
        "the training-split AP50 and name both in the model's sidecar.")
    from sarvessel.model import second_stage

    second_stage.add_arguments(p)
    p.set_defaults(func=second_stage.run)


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``sarvessel train``."""
    from sarvessel.model.augment import AugmentConfig
    from sarvessel.model.config import BitWidths, ModelConfig
    from sarvessel.model.train import WEIGHT_SCALE_LR_FACTOR, DataKind, TrainConfig

    bits = BitWidths.parse(args.bits)
    widths, dilations, context_widths, context_dilations = (
        _int_list(getattr(args, n), "--" + n.replace("_", "-"))
        for n in ("widths", "dilations", "context_widths", "context_dilations"))
    if args.channels == 1:
        names, bands = ("ship",), ("grey",)
    else:
        names, bands = ("non_vessel", "vessel", "fishing"), ("VV_dB", "VH_dB")[:args.channels]
    mc = ModelConfig(name=args.name, in_channels=args.channels, class_names=names,
                     widths=widths, dilations=dilations, separable_from=args.separable_from,
                     context_widths=context_widths,
                     context_dilations=context_dilations, skip_width=args.skip_width,
                     stem_stride=args.stem_stride,
                     pools=args.pools, head_width=args.head_width,
                     head_kernel=args.head_kernel, reg_max=args.reg_max, tile_size=args.tile,
                     subgrid=args.subgrid,
                     quantized=args.quantized, bits=bits, bands=bands,
                     input_scale=args.input_scale)
    weight_scale_lr = (WEIGHT_SCALE_LR_FACTOR if args.weight_scale_lr is None
                       else args.weight_scale_lr)
    if not weight_scale_lr >= 0:
        raise SarvesselError(f"--weight-scale-lr must be >= 0, got {weight_scale_lr}")
    if args.teacher_tta != 1 and args.teacher is None:
        raise SarvesselError("--teacher-tta needs --teacher (the float checkpoint to average)")
    if args.data_dir is None:
        if args.data != "ssdd":
            raise SarvesselError(f"--data {args.data} needs --data-dir (the dataset's folder)")
        from sarvessel.evaluation.evaluate import ssdd_root

        args.data_dir = ssdd_root()
    if args.synth_scenes:
        if args.data != "xview3":
            raise SarvesselError("--synth-scenes needs --data xview3")
        from sarvessel.model.scene_data import ensure_synthetic_scenes

        ensure_synthetic_scenes(args.data_dir, n_train=args.synth_scenes, size=args.synth_size)
    last = args.out / "last.pt"
    if args.resume and last.is_file():
        import torch

        mc = ModelConfig.from_dict(dict(torch.load(last, map_location="cpu",
                                                   weights_only=False)["config"]))
    tc = TrainConfig(out=args.out, data_dir=args.data_dir, data=DataKind(args.data),
                     epochs=args.epochs, batch=args.batch, lr=args.lr,
                     warmup_epochs=args.warmup_epochs, lr_final=args.lr_final,
                     ema_decay=args.ema_decay, train_size=args.train_size,
                     seed=args.seed, threads=args.threads, device=args.device,
                     workers=args.workers, time_limit=args.time_limit,
                     fit_epochs=args.fit_epochs,
                     channels_last=args.channels_last,
                     init=args.init, grow=args.grow,
                     iou_targets=args.cls_target == "iou", cls_loss=args.cls_loss,
                     optimizer=args.optimizer, stretch=args.stretch,
                     loss_gains=_loss_gains(args.loss_gains),
                     resume=args.resume,
                     eval_every=args.eval_every, val_split=args.val_split,
                     holdout=args.holdout,
                     export_dir=args.export_dir,
                     max_batches=args.max_batches, max_images=args.max_images,
                     augment=AugmentConfig(mosaic=args.mosaic, copy_paste=args.copy_paste,
                                           shrink_oversize=args.oversize == "fit"),
                     close_mosaic=args.close_mosaic,
                     teacher=args.teacher, distill_gain=args.distill_gain,
                     teacher_tta=args.teacher_tta,
                     oversample=args.oversample, oversample_factor=args.oversample_factor,
                     freeze_bn=args.freeze_bn, weight_scale_lr=weight_scale_lr)
    best = _train_with_progress(tc, mc)
    if not best["completed"]:
        log.info("stopped at the time limit: best val AP50 %.4f so far (epoch %d); continue "
                 "with the same command plus --resume", best["val_ap50"], best["epoch"] + 1)
        return 0
    log.info("done: best val AP50 %.4f (epoch %d)", best["val_ap50"], best["epoch"] + 1)
    return 0


def _loss_gains(text: str) -> tuple[float, float, float]:
    """``--loss-gains``: three non-negative numbers."""
    try:
        box, cls, dfl = (float(v) for v in text.split(","))
    except ValueError:
        raise SarvesselError(f"--loss-gains: expected BOX,CLS,DFL numbers, got {text!r}") from None
    if min(box, cls, dfl) < 0:
        raise SarvesselError(f"--loss-gains must be >= 0, got {text!r}")
    return box, cls, dfl


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    """Comma-separated integers (empty text: empty tuple)."""
    try:
        return tuple(int(v) for v in text.split(",")) if text.strip() else ()
    except ValueError as exc:
        raise SarvesselError(f"{flag}: not integers: {text!r}") from exc


def _train_with_progress(tc: TrainConfig, mc: ModelConfig) -> dict[str, Any]:
    """Run :func:`train` with a rich progress bar on an interactive terminal (plain log lines
    otherwise, e.g. under nohup)."""
    import sys

    from sarvessel.model.train import train

    if not sys.stderr.isatty():
        return train(tc, mc)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), "{task.fields[loss]}", transient=True) as bar:
        task = bar.add_task("epoch", total=1, loss="")

        def update(epoch: int, done: int, total: int, loss: float) -> None:
            bar.update(task, description=f"epoch {epoch + 1}/{tc.epochs}", completed=done,
                       total=total, loss=f"loss {loss:.3f}")

        return train(tc, mc, progress=update)
