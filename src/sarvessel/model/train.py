"""Training: float pre-training, QAT fine-tuning or QAT from scratch, on SSDD or scene chips.

One loop for all modes: AdamW (or SGD) with linear warm-up then cosine decay, an EMA of the
weights (evaluated and checkpointed), per-epoch quick AP50 on the validation split, a metrics CSV
and training-curve PNG (:mod:`sarvessel.model.curves`), ``last.pt`` (full state for
``--resume``) and ``best.pt`` (small) in the run folder, and optionally the best small checkpoint
copied to an export folder (``models/<name>/``). Warm starts from other checkpoints are
:mod:`sarvessel.model.warm_start`.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from sarvessel.model.augment import AugmentConfig
from sarvessel.model.checkpoint import save_checkpoint
from sarvessel.model.config import ModelConfig
from sarvessel.model.curves import append_metrics, plot_curves
from sarvessel.model.data import ImageDataset
from sarvessel.model.distill import DihedralTeacher, DistillLoss, load_teacher
from sarvessel.model.evaluate import evaluate_ap
from sarvessel.model.loader import default_workers, epoch_loader, resolve_device
from sarvessel.model.loss import DetectionLoss
from sarvessel.model.network import SarYolo, build_model, count_ops
from sarvessel.model.warm_start import init_from_checkpoint
from sarvessel.runtime.contract import TILE_SIZE
from sarvessel.runtime.errors import SarvesselError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Default lr multiplier of learned weight scales (``--bits weight_mse=1``). They are learned
#: in the linear domain, where AdamW's ~lr step is large against a ~0.02 scale; x0.02 makes a
#: step ~0.05 % of the scale, as the log-domain activation scales take at the base lr.
WEIGHT_SCALE_LR_FACTOR = 0.02

#: Optimizers of ``TrainConfig.optimizer`` / ``--optimizer``.
OPTIMIZERS = ("adamw", "sgd")

__all__ = ["OPTIMIZERS", "DataKind", "ModelEMA", "TrainConfig", "freeze_batchnorm",
           "holdout_split", "make_optimizer", "oversample_items", "param_groups", "read_stems",
           "train"]

class DataKind(str, Enum):
    """Training data sources."""

    SSDD = "ssdd"
    YOLO = "yolo"
    XVIEW3 = "xview3"  #: xView3-format scene folders (train/ and val/), e.g. generated ones


@dataclass
class TrainConfig:
    """Everything a training run needs besides the model config."""

    #: Run folder (checkpoints, metrics.csv, training_curve.png).
    out: Path
    #: Dataset root (SSDD root, or a YOLO folder with train/ and val/ sub-folders).
    data_dir: Path
    data: DataKind = DataKind.SSDD
    epochs: int = 30
    batch: int = 16
    #: Peak learning rate.
    lr: float = 2e-3
    #: ``adamw`` (betas 0.937, 0.999) or ``sgd`` (Nesterov momentum 0.937): ultralytics'
    #: "auto" takes AdamW for short runs and SGD (lr 0.01) past 10 000 iterations, which the
    #: SSDD float stages together reach.
    optimizer: str = "adamw"
    #: Final learning rate as a fraction of ``lr``.
    lr_final: float = 0.05
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    #: Side of the training crops (pixels); evaluation uses the model's tile size.
    train_size: int = 320
    seed: int = 0
    #: CPU threads of PyTorch's own kernels.
    threads: int = 2
    #: Torch device: ``auto`` (a CUDA GPU when PyTorch sees one, else the CPU), ``cpu``,
    #: ``cuda`` or ``cuda:N`` (see :func:`~sarvessel.model.loader.resolve_device`).
    device: str = "auto"
    #: Worker processes that build the training batches (0: the training process does; None:
    #: 0 on the CPU, :func:`~sarvessel.model.loader.default_workers` on a GPU). The batches are
    #: the same for any number (:mod:`sarvessel.model.loader`); workers pay off where the
    #: accelerator outpaces one process's augmentation, i.e. on a GPU.
    workers: int | None = None
    #: Stop, with every checkpoint written, before the epoch that would end past this many
    #: minutes of the run (judged by this epoch's training time and the slowest evaluation and
    #: checkpoint times seen so far); ``--resume`` goes on. Why: a borrowed GPU or a session
    #: has a fixed time; None is no limit.
    time_limit: float | None = None
    #: With ``time_limit``: after the first epoch (training, evaluation), lower ``epochs`` to
    #: as many as fit in the limit at that pace, so the cosine schedule ends annealed instead of
    #: being cut short (warm-up must last >= 1 epoch for the schedule to be unaffected). When
    #: not even two epochs fit, the run is cut at the limit instead. A resumed run keeps the
    #: count it was fitted to.
    fit_epochs: bool = False
    #: Keep weights and activations in channels-last memory order. Why: PyTorch's CPU
    #: depthwise convs run ~1.4x faster that way (measured on a separable 112-wide body); the
    #: numbers are the same either way.
    channels_last: bool = False
    #: EMA decay (0.995: a window of ~200 steps, suited to runs of a few thousand steps).
    ema_decay: float = 0.995
    ema_tau: float = 200.0
    #: Weights to start from (e.g. a float run's best.pt for QAT fine-tuning).
    init: Path | None = None
    #: How ``init`` seeds the new channels of wider body layers: "zero" (fresh channels read
    #: through zero weights) or "copy" (Net2WiderNet copies); see
    #: :func:`~sarvessel.model.warm_start.init_from_checkpoint`.
    grow: str = "zero"
    #: Class targets scaled by each box's best IoU (ultralytics) or not; see
    #: :class:`~sarvessel.model.assigner.TaskAlignedAssigner`.
    iou_targets: bool = True
    #: (low, high) percentiles that bring 16-bit or float training images to 8 bits
    #: (:func:`~sarvessel.runtime.preprocess.percentile_stretch`); None refuses such images.
    #: ``sarvessel export`` carries it into the sidecar, where ``sarvessel eval`` finds it.
    stretch: tuple[float, float] | None = None
    #: Class loss, one of :data:`~sarvessel.model.loss.CLASS_LOSSES` (ultralytics: "bce").
    cls_loss: str = "bce"
    #: Gains of the box (CIoU), class and DFL losses (ultralytics: 7.5, 0.5, 1.5).
    loss_gains: tuple[float, float, float] = (7.5, 0.5, 1.5)
    resume: bool = False
    #: Evaluate every n epochs (and always at the last).
    eval_every: int = 1
    #: Validation split name (SSDD) — SSDD has no separate val split; its test split is used.
    val_split: str = "test"
    #: Fraction of the training images held out as the validation set instead (SSDD and YOLO
    #: folders; 0 is off). Why: SSDD's only other split is its test split, so without a
    #: hold-out every checkpoint or threshold choice would be made on the test images.
    holdout: float = 0.0
    #: Folder to copy the best small checkpoint and the curves to (e.g. models/ssdd_w4a4).
    export_dir: Path | None = None
    #: Stop each epoch after this many batches (smoke tests); None is all.
    max_batches: int | None = None
    #: Limit the number of training / validation images (smoke tests); None is all.
    max_images: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    #: Train the last n epochs without mosaics (ultralytics ``close_mosaic``).
    close_mosaic: int = 0
    #: Float checkpoint whose outputs the student also learns (output distillation, see
    #: :mod:`sarvessel.model.distill`); None is off.
    teacher: Path | None = None
    #: Weight of the distillation loss relative to the detection loss.
    distill_gain: float = 1.0
    #: Dihedral views the teacher's map is averaged over (1, 2, 4 or 8; see
    #: :class:`~sarvessel.model.distill.DihedralTeacher`); 1 is the plain teacher.
    teacher_tta: int = 1
    #: Text file of training image ids (one stem a line, ``#`` comments) drawn
    #: ``oversample_factor`` times per epoch instead of once; None is off. Why: the images a
    #: model still gets wrong (SSDD: mostly ships at quays) are a small part of each epoch;
    #: ``scripts/hard_images.py`` lists them from an evaluation on the training split.
    oversample: Path | None = None
    oversample_factor: int = 3
    #: Keep batch-norm layers on their running statistics while training (their scale and shift
    #: still learn). Why: a QAT fine-tune on crops re-estimates the statistics that the float
    #: model learned on other samples (e.g. whole images).
    freeze_bn: bool = False
    #: lr multiplier of learned weight scales (``--bits weight_mse=1``); see
    #: :data:`WEIGHT_SCALE_LR_FACTOR`.
    weight_scale_lr: float = WEIGHT_SCALE_LR_FACTOR


class ModelEMA:
    """Exponential moving average of parameters and float buffers, decay ramped as
    ``decay * (1 - exp(-updates / tau))`` (ultralytics ``ModelEMA``). Brevitas activation
    quantizers' stats counters (and learned weight scales' init flags) are copied so the EMA
    switches to learned scales with the model."""

    def __init__(self, model: torch.nn.Module, *, decay: float = 0.9995, tau: float = 300.0,
                 updates: int = 0) -> None:
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Blend ``model`` into the average."""
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        for e, m in zip(self.ema.modules(), model.modules(), strict=True):
            if hasattr(m, "counter") and isinstance(m.counter, int):
                e.counter = m.counter
            if m.__dict__.get("init_done") is True and e.__dict__.get("init_done") is False:
                # a learned weight scale (``weight_mse``) set from statistics on the model's
                # first forward: take it as set (blending it with the unset 1.0 would be wrong)
                e.value.copy_(m.value)
                e.init_done = True
        for e, m in zip(self.ema.parameters(), model.parameters(), strict=True):
            e.mul_(d).add_(m.detach(), alpha=1 - d)
        for e, m in zip(self.ema.buffers(), model.buffers(), strict=True):
            if e.dtype.is_floating_point and e.shape == m.shape:
                e.mul_(d).add_(m.detach(), alpha=1 - d)
            else:
                e.copy_(m)


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups: conv weights with weight decay; biases, batch-norm and
    activation scales without; learned weight scales (``--bits weight_mse=1``) without, at
    ``cfg.weight_scale_lr`` times the lr. The scheduler sets each group's lr to
    ``lr * group["lr_factor"]``."""
    decay, no_decay, w_scales = [], [], []
    for name, p in model.named_parameters():
        if "weight_quant" in name:
            w_scales.append(p)
        else:
            (decay if p.ndim == 4 and "act_quant" not in name else no_decay).append(p)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_factor": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_factor": 1.0}]
    if w_scales:
        groups.append({"params": w_scales, "weight_decay": 0.0,
                       "lr_factor": cfg.weight_scale_lr})
    return groups


def make_optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names, over ``groups`` (:func:`param_groups`)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.937, 0.999))
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.937, nesterov=True)
    raise SarvesselError(f"optimizer must be one of {OPTIMIZERS}, got {cfg.optimizer!r}")


def train(cfg: TrainConfig, model_cfg: ModelConfig, *,
          progress: Callable[[int, int, int, float], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a training run; returns the best metrics (``val_ap50``, ``epoch``)
    and ``completed``: False when ``cfg.time_limit`` stopped it before ``cfg.epochs``.

    ``progress(epoch, batch, n_batches, loss)`` is called after every batch (the CLI draws a
    rich progress bar with it)."""
    t_run = time.time()
    cfg = replace(cfg)  # fit_epochs may change the epoch count: the caller's config stays
    device = resolve_device(cfg.device)
    if cfg.time_limit is not None and not cfg.time_limit > 0:
        raise SarvesselError(f"time limit must be > 0 minutes, got {cfg.time_limit}")
    if cfg.fit_epochs and cfg.time_limit is None:
        raise SarvesselError("fitting the epochs to the time needs a time limit")
    torch.set_num_threads(cfg.threads)
    _seed_everything(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train_ds, val_ds = _datasets(cfg, model_cfg)

    model = build_model(model_cfg)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if cfg.init is not None and not cfg.resume:
        copied, fresh = init_from_checkpoint(model, cfg.init, grow=cfg.grow)
        log.info("initialised from %s: %d tensors copied, %d start fresh (fresh activation "
                 "scales are set from statistics)", cfg.init, len(copied), len(fresh))
    ops = count_ops(model, model_cfg.tile_size, model_cfg.in_channels)
    ops2 = count_ops(model, TILE_SIZE, 2)
    log.info("model %s: %d params, %.3f GOP per %d px %d-ch tile (%.3f GOP at 512x512x2)",
             model_cfg.name, ops.params, ops.gops, ops.tile, ops.channels, ops2.gops)
    model = model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed sample sizes: pick the fastest kernels
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    log.info("training on %s with %d data worker(s)", device, workers)

    opt = make_optimizer(param_groups(model, cfg), cfg)
    loss_fn = DetectionLoss(stride=model_cfg.stride, reg_max=model_cfg.reg_max, nc=model_cfg.nc,
                            subgrid=model_cfg.subgrid, iou_targets=cfg.iou_targets,
                            cls_loss=cfg.cls_loss, box_gain=cfg.loss_gains[0],
                            cls_gain=cfg.loss_gains[1], dfl_gain=cfg.loss_gains[2])
    kd_fn = DistillLoss(reg_max=model_cfg.reg_max, nc=model_cfg.nc, gain=cfg.distill_gain)
    teacher = None if cfg.teacher is None else load_teacher(cfg.teacher, model_cfg).to(device)
    if teacher is not None:
        if cfg.teacher_tta != 1:
            teacher = DihedralTeacher(teacher, cfg.teacher_tta)
        log.info("distilling from %s (gain %g, %d views)", cfg.teacher, cfg.distill_gain,
                 cfg.teacher_tta)
    ema = ModelEMA(model, decay=cfg.ema_decay, tau=cfg.ema_tau)
    start_epoch, best = 0, {"val_ap50": -1.0, "epoch": -1}
    last_path, best_path, csv_path = out / "last.pt", out / "best.pt", out / "metrics.csv"
    if cfg.resume:
        if not last_path.is_file():
            raise SarvesselError(f"{last_path}: nothing to resume")
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        saved = state.get("train", {})
        trained_with = saved.get("optimizer", "adamw")  # runs before the option used AdamW
        if trained_with != cfg.optimizer:
            raise SarvesselError(f"{last_path} was trained with {trained_with}, not "
                                 f"{cfg.optimizer}: resume it with that optimizer")
        model.load_state_dict(state["raw_model"])
        ema.ema.load_state_dict(state["model"])
        ema.updates = state["ema_updates"]
        _sync_counters(model, ema.ema)
        opt.load_state_dict(state["optimizer"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        if saved.get("fit_epochs") and int(saved["epochs"]) != cfg.epochs:
            log.warning("the schedule of %s was fitted to %d epochs: resuming it as such, not "
                        "with %d", last_path, int(saved["epochs"]), cfg.epochs)
            cfg.epochs = int(saved["epochs"])
        log.info("resumed %s at epoch %d", last_path, start_epoch)
    elif csv_path.exists():
        csv_path.unlink()

    loader, sampler = epoch_loader(train_ds, batch=cfg.batch, seed=cfg.seed,
                                   workers=workers, max_batches=cfg.max_batches,
                                   pin_memory=device.type == "cuda")
    n_batches = len(sampler)
    total_steps = cfg.epochs * n_batches
    warm_steps = max(1, int(cfg.warmup_epochs * n_batches))

    def lr_at(step: int) -> float:
        if step < warm_steps:
            return cfg.lr * (0.1 + 0.9 * step / warm_steps)
        t = (step - warm_steps) / max(1, total_steps - warm_steps)
        return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t)))

    completed, eval_s_max, save_s_max = True, 0.0, 0.0
    first_epoch, fit_pending = start_epoch, cfg.fit_epochs and start_epoch == 0
    for epoch in range(start_epoch, cfg.epochs):
        if epoch >= cfg.epochs:  # lowered by fit_epochs
            break
        sampler.set_epoch(epoch, mosaic=epoch < cfg.epochs - cfg.close_mosaic)
        model.train()
        if cfg.freeze_bn:
            freeze_batchnorm(model)
        t0 = time.time()
        sums = torch.zeros(3)
        kd_sum = 0.0
        lr = cfg.lr
        for bi, batch in enumerate(loader):
            step = epoch * n_batches + bi
            lr = lr_at(step)
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_factor", 1.0)
            batch = batch.to(device, non_blocking=True)
            raw = model.forward_grid(batch.images.contiguous(memory_format=fmt))
            loss, parts = loss_fn(raw, batch.boxes, batch.labels, batch.mask)
            if teacher is not None:
                with torch.no_grad():
                    t_raw = teacher.forward_grid(batch.images)
                kd = kd_fn(raw, t_raw)
                loss = loss + kd
                kd_sum += float(kd.detach()) / len(batch.images)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            model.apply_masks()
            ema.update(model)
            sums += parts.cpu()
            if progress is not None:
                progress(epoch, bi + 1, n_batches, float(parts.sum()))
            if bi % 10 == 0:
                log.debug("epoch %d batch %d/%d loss %.4f", epoch, bi, n_batches,
                          float(loss.detach()))
        train_s = time.time() - t0
        means = (sums / n_batches).tolist()
        ap = float("nan")
        periodic = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        # stop if the next epoch (training, an evaluation, checkpoints) would end past the
        # limit after this one's evaluation and checkpoints; the last epoch is then evaluated
        stop = _out_of_time(cfg, epoch, t_run, (eval_s_max if periodic else 0.0) + save_s_max
                            + train_s + eval_s_max + save_s_max)
        t1 = time.time()
        # a time-limited run evaluates its first epoch too: that cost prices the later ones
        if periodic or stop or (cfg.time_limit is not None and epoch == first_epoch):
            ap = evaluate_ap(ema.ema, val_ds)
        eval_s = time.time() - t1
        eval_s_max = max(eval_s_max, eval_s)
        if fit_pending:
            fit_pending = False
            fitted = _epochs_that_fit(cfg, epoch, t_run, train_s + eval_s_max / cfg.eval_every
                                      + save_s_max, final_s=eval_s_max)
            if cfg.epochs <= epoch + 1:
                pass  # a single epoch was asked for: nothing to fit
            elif fitted < epoch + 2:
                log.warning("the %s min limit leaves no time for a second epoch: the schedule "
                            "is cut at the limit, not fitted", cfg.time_limit)
            elif fitted < cfg.epochs:
                log.info("%d of %d epochs fit in the %s min limit at %.0f s an epoch: the lr "
                         "schedule now ends at epoch %d", fitted, cfg.epochs, cfg.time_limit,
                         train_s, fitted)
                cfg.epochs, total_steps = fitted, fitted * n_batches
        t2 = time.time()
        row = {"epoch": epoch, "lr": lr, "loss": sum(means), "loss_box": means[0],
               "loss_cls": means[1], "loss_dfl": means[2], "loss_kd": kd_sum / n_batches,
               "val_ap50": ap, "train_s": train_s, "eval_s": eval_s}
        append_metrics(csv_path, row)
        log.info("epoch %d/%d loss %.4f (box %.4f cls %.4f dfl %.4f, distill %.4f) val AP50 "
                 "%.4f [%.0f s train, %.0f s eval]", epoch + 1, cfg.epochs, row["loss"], *means,
                 row["loss_kd"], ap, train_s, eval_s)
        metrics = {"val_ap50": ap, "loss": row["loss"]}
        if not math.isnan(ap) and ap > best["val_ap50"]:
            best = {"val_ap50": ap, "epoch": epoch}
            save_checkpoint(best_path, ema.ema, epoch=epoch, metrics=metrics,
                            train=_jsonable(asdict(cfg)), run=str(out.resolve()))
            if cfg.export_dir is not None:
                _export_if_better(best_path, Path(cfg.export_dir), ap)
        save_checkpoint(last_path, ema.ema, epoch=epoch, metrics=metrics,
                        raw_model=model.state_dict(), optimizer=opt.state_dict(),
                        ema_updates=ema.updates, best=best, train=_jsonable(asdict(cfg)),
                        run=str(out.resolve()))
        plot_curves(csv_path, out / "training_curve.png")
        if cfg.export_dir is not None and _exported_run(Path(cfg.export_dir)) == str(
                out.resolve()):
            shutil.copyfile(csv_path, Path(cfg.export_dir) / "metrics.csv")
            shutil.copyfile(out / "training_curve.png",
                            Path(cfg.export_dir) / "training_curve.png")
        save_s_max = max(save_s_max, time.time() - t2)
        if stop:
            completed = False
            log.warning("stopped after epoch %d of %d: the next one would end past the %s min "
                        "time limit; every checkpoint is written, --resume goes on", epoch + 1,
                        cfg.epochs, cfg.time_limit)
            break
    log.info("best val AP50 %.4f at epoch %d; checkpoints in %s", best["val_ap50"],
             best["epoch"] + 1, out)
    return {**best, "completed": completed}


def _epochs_that_fit(cfg: TrainConfig, epoch: int, t_run: float, epoch_s: float, *,
                     final_s: float = 0.0) -> int:
    """Epoch count (at least ``epoch + 1``) that ends within ``cfg.time_limit`` if each
    further epoch takes ``epoch_s`` seconds plus 5 % and the last one ``final_s`` more (its
    evaluation)."""
    assert cfg.time_limit is not None
    left = cfg.time_limit * 60 - (time.time() - t_run) - final_s
    return epoch + 1 + max(0, int(left // (epoch_s * 1.05)))


def _out_of_time(cfg: TrainConfig, epoch: int, t_run: float, ahead_s: float) -> bool:
    """Whether the run would pass ``cfg.time_limit`` within ``ahead_s`` more seconds (the
    rest of this epoch and all of the next); never after the last epoch."""
    if cfg.time_limit is None or epoch + 1 >= cfg.epochs:
        return False
    return time.time() - t_run + ahead_s > cfg.time_limit * 60


def holdout_split(items: Sequence[T], fraction: float, *, seed: int = 0
                  ) -> tuple[list[T], list[T]]:
    """Split ``items`` into (train, held-out) with ``round(fraction * n)`` held-out items chosen
    by a seeded permutation; both keep the original order."""
    if not 0.0 < fraction < 1.0:
        raise SarvesselError(f"holdout fraction must be in (0, 1), got {fraction}")
    n_out = max(1, round(fraction * len(items)))
    out = set(np.random.default_rng([seed, 7]).permutation(len(items))[:n_out].tolist())
    return ([it for i, it in enumerate(items) if i not in out],
            [it for i, it in enumerate(items) if i in out])


def freeze_batchnorm(model: torch.nn.Module) -> int:
    """Put every batch-norm layer of ``model`` in eval mode (running statistics used, not
    updated); returns how many."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.eval()
    return len(bns)


def read_stems(path: Path | str) -> set[str]:
    """Image ids listed in a text file, one a line; blank lines and ``#`` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise SarvesselError(f"{path}: image list not found")
    lines = (ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines())
    return {ln for ln in lines if ln}


def oversample_items(items: Sequence[T], stems: set[str], factor: int) -> list[T]:
    """``items`` with each one whose ``stem`` is in ``stems`` repeated ``factor`` times in all
    (the repeats appended after the originals; the epoch permutation mixes them)."""
    if factor < 1:
        raise SarvesselError(f"oversample factor must be >= 1, got {factor}")
    hard = [it for it in items if it.stem in stems]
    if not hard:
        raise SarvesselError(f"none of the {len(stems)} listed images is a training image")
    if len(hard) < len(stems):
        log.warning("%d listed images are not training images (ignored)", len(stems) - len(hard))
    log.info("oversampling %d images x%d", len(hard), factor)
    return list(items) + hard * (factor - 1)


def _datasets(cfg: TrainConfig, mc: ModelConfig) -> tuple[ImageDataset, ImageDataset]:
    from sarvessel.evaluation.datasets import load_ssdd, load_yolo_folder

    if cfg.data == DataKind.XVIEW3:
        from sarvessel.model.scene_data import scene_datasets

        if cfg.holdout > 0 or cfg.augment.mosaic > 0 or cfg.oversample is not None:
            raise SarvesselError("holdout, mosaic and oversample apply to image folders (SSDD, "
                                 "YOLO), not to xView3 scenes (their val/ scenes are the "
                                 "hold-out)")

        return scene_datasets(Path(cfg.data_dir), train_size=cfg.train_size,
                              tile_size=mc.tile_size, augment=cfg.augment, seed=cfg.seed)
    if cfg.data == DataKind.SSDD:
        train_items = load_ssdd(cfg.data_dir, "train")
        val_items = load_ssdd(cfg.data_dir, cfg.val_split)
    else:
        train_items = load_yolo_folder(Path(cfg.data_dir) / "train")
        val_items = load_yolo_folder(Path(cfg.data_dir) / "val")
    if cfg.holdout > 0:
        train_items, val_items = holdout_split(train_items, cfg.holdout, seed=cfg.seed)
    if cfg.max_images:
        train_items, val_items = train_items[:cfg.max_images], val_items[:cfg.max_images]
    if cfg.oversample is not None:
        train_items = oversample_items(train_items, read_stems(cfg.oversample),
                                       cfg.oversample_factor)
    if not train_items or not val_items:
        raise SarvesselError(f"{cfg.data_dir}: no training or validation images found")
    train_ds = ImageDataset(train_items, tile_size=mc.tile_size, train_size=cfg.train_size,
                            augment=cfg.augment, seed=cfg.seed, channels=mc.in_channels,
                            input_scale=mc.input_scale, stretch=cfg.stretch)
    val_ds = ImageDataset(val_items, tile_size=mc.tile_size, channels=mc.in_channels,
                          input_scale=mc.input_scale, stretch=cfg.stretch)
    log.info("data: %d training images (%d boxes), %d validation images (%d boxes)",
             len(train_items), sum(len(i.boxes) for i in train_items), len(val_items),
             sum(len(i.boxes) for i in val_items))
    return train_ds, val_ds


def _export_if_better(best_path: Path, export_dir: Path, ap: float) -> None:
    """Copy ``best_path`` to ``export_dir/checkpoint.pt`` unless the checkpoint already there
    (from any run) has a higher validation AP50: a new run never replaces a better model."""
    export_dir.mkdir(parents=True, exist_ok=True)
    target = export_dir / "checkpoint.pt"
    if target.is_file():
        old = torch.load(target, map_location="cpu", weights_only=False)
        old_ap = float(old.get("metrics", {}).get("val_ap50", -1.0))
        if old_ap >= ap and old.get("run") != str(best_path.parent.resolve()):
            log.info("kept %s (val AP50 %.4f >= %.4f)", target, old_ap, ap)
            return
    shutil.copyfile(best_path, target)
    log.info("exported %s (val AP50 %.4f)", target, ap)


def _exported_run(export_dir: Path) -> str | None:
    target = export_dir / "checkpoint.pt"
    if not target.is_file():
        return None
    return torch.load(target, map_location="cpu", weights_only=False).get("run")


def _sync_counters(model: SarYolo, ema: torch.nn.Module) -> None:
    for e, m in zip(ema.modules(), model.modules(), strict=True):
        if hasattr(m, "counter") and isinstance(m.counter, int):
            e.counter = m.counter


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _jsonable(v)
        elif isinstance(v, Enum):
            out[k] = v.value
        elif isinstance(v, Path):
            out[k] = str(v)
        elif isinstance(v, tuple):
            out[k] = list(v)
        else:
            out[k] = v
    return out


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
