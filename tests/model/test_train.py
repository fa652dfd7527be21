"""Training loop end to end on a tiny YOLO folder: files, metrics, resume, export, CLI."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sarvessel.cli import build_parser, main
from sarvessel.evaluation.datasets import LabeledImage
from sarvessel.model.checkpoint import load_checkpoint, save_checkpoint
from sarvessel.model.config import ModelConfig
from sarvessel.model.curves import append_metrics, join_metrics
from sarvessel.model.network import build_model
from sarvessel.model.train import (
    DataKind,
    ModelEMA,
    TrainConfig,
    freeze_batchnorm,
    holdout_split,
    make_optimizer,
    oversample_items,
    param_groups,
    read_stems,
    train,
)
from sarvessel.model.warm_start import _split_widened, init_from_checkpoint
from sarvessel.runtime.errors import SarvesselError
from tests.model.conftest import yolo_folder as _yolo_folder


def _tiny_cfg() -> ModelConfig:
    return ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4, tile_size=64)


def test_train_resume_and_export(tmp_path: Path) -> None:
    data = _yolo_folder(tmp_path / "data")
    out = tmp_path / "run"
    tc = TrainConfig(out=out, data_dir=data, data=DataKind.YOLO, epochs=2, batch=2,
                     train_size=64, threads=1, export_dir=tmp_path / "models" / "tiny")
    best = train(tc, _tiny_cfg())
    for name in ("last.pt", "best.pt", "metrics.csv", "training_curve.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert all(0.0 <= float(r["val_ap50"]) <= 1.0 for r in rows)
    assert best["val_ap50"] == max(float(r["val_ap50"]) for r in rows)
    exported = tmp_path / "models" / "tiny" / "checkpoint.pt"
    model, state = load_checkpoint(exported)
    assert state["metrics"]["val_ap50"] == pytest.approx(best["val_ap50"])
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 65, 8, 8)
    # resume continues at epoch 2 and appends to the CSV
    tc.epochs, tc.resume = 3, True
    train(tc, _tiny_cfg())
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]


def test_sgd_trains_and_resume_refuses_another_optimizer(tmp_path: Path) -> None:
    data = _yolo_folder(tmp_path / "data")
    start = build_model(_tiny_cfg())
    before = {k: v.clone() for k, v in start.state_dict().items()}
    tc = TrainConfig(out=tmp_path / "run", data_dir=data, data=DataKind.YOLO, epochs=1, batch=2,
                     train_size=64, threads=1, max_batches=2, optimizer="sgd", lr=0.01,
                     init=save_checkpoint(tmp_path / "start.pt", start))
    train(tc, _tiny_cfg())
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    group = state["optimizer"]["param_groups"][0]
    assert group["nesterov"] and group["momentum"] == pytest.approx(0.937)
    assert state["train"]["optimizer"] == "sgd"
    moved = [k for k, v in state["raw_model"].items()
             if v.is_floating_point() and k in before and not torch.equal(v, before[k])]
    assert any(k.endswith("conv.weight") or k.endswith(".weight") for k in moved)
    with pytest.raises(SarvesselError, match="was trained with sgd, not adamw"):
        train(replace(tc, optimizer="adamw", epochs=2, resume=True), _tiny_cfg())
    with pytest.raises(SarvesselError, match="optimizer must be one of"):
        make_optimizer(param_groups(build_model(_tiny_cfg()), tc), replace(tc, optimizer="x"))


def test_sixteen_bit_training_images_need_a_stretch(tmp_path: Path, capsys) -> None:
    data = _yolo_folder(tmp_path / "data")
    for png in data.glob("*/images/*.png"):
        grey = np.asarray(Image.open(png), np.uint16)
        Image.fromarray(grey * 200 + 500).save(png)  # the same scene as 16-bit amplitude
    args = ["train", "--data", "yolo", "--data-dir", str(data), "--widths", "4,8,8",
            "--head-width", "4", "--tile", "64", "--train-size", "64", "--epochs", "1",
            "--batch", "2", "--threads", "1", "--max-batches", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "uint16 samples, not 8-bit" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--stretch", "0,100"]) == 0
    state = torch.load(tmp_path / "b" / "last.pt", map_location="cpu", weights_only=False)
    assert state["train"]["stretch"] == [0.0, 100.0]
    # the export carries it into the model contract, and eval applies it by default
    assert main(["export", str(tmp_path / "b" / "best.pt"), "--out", str(tmp_path / "x"),
                 "--qcdq", "--name", "tiny", "--check-tiles", "0"]) == 0
    sidecar = json.loads((tmp_path / "x" / "tiny.json").read_text())
    assert sidecar["stretch"] == [0.0, 100.0]
    # (the error gallery reads the images again, with the same stretch)
    assert main(["eval", str(tmp_path / "x" / "tiny.onnx"), "--data", str(data / "val"),
                 "--json", str(tmp_path / "e.json"), "--gallery", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").stat().st_size > 0
    assert json.loads((tmp_path / "e.json").read_text())["stretch_percentiles"] == [0.0, 100.0]


def test_ema_tracks_model() -> None:
    model = build_model(_tiny_cfg())
    ema = ModelEMA(model, decay=0.5, tau=1e-9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    p0 = next(model.parameters())
    e0 = next(ema.ema.parameters())
    assert torch.allclose(e0, p0 - 0.5)


def _weight_scales(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.quant_weight().scale.detach().flatten() for m in model.modules()
            if hasattr(m, "quant_weight")]


def test_ema_keeps_learned_weight_scales(tmp_path: Path) -> None:
    """With ``weight_mse=1`` the weight scales are parameters set from statistics on their
    first forward. The EMA copy must take them over as set, not redo the statistics on its
    blended value (which would square the scale), and training must keep them sane."""
    from sarvessel.model.config import BitWidths

    cfg = ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4, tile_size=64,
                      bits=BitWidths(weight_mse=1))
    torch.manual_seed(0)
    model = build_model(cfg)
    ema = ModelEMA(model, decay=0.5, tau=1e-9)
    model.train()
    model(torch.randint(0, 256, (2, 1, 64, 64)).float())
    ema.update(model)
    ema.update(model)
    model.eval()
    for a, b in zip(_weight_scales(ema.ema), _weight_scales(model), strict=True):
        assert torch.allclose(a, b, rtol=1e-5)
    # a short QAT run: the saved (EMA) scales stay at or below max|w| / levels and positive
    data = _yolo_folder(tmp_path / "data")
    tc = TrainConfig(out=tmp_path / "run", data_dir=data, data=DataKind.YOLO, epochs=1,
                     batch=2, train_size=64, threads=1)
    train(tc, cfg)
    saved, _ = load_checkpoint(tmp_path / "run" / "last.pt")
    convs = [m for m in saved.modules() if hasattr(m, "quant_weight")]
    for m in convs:
        s = m.quant_weight().scale.detach().flatten()
        levels = 2 ** (int(m.quant_weight().bit_width) - 1) - 1
        assert bool((s > 0).all())
        assert bool((s * levels <= m.weight.detach().abs().amax((1, 2, 3)) * 1.1).all())


def test_cli_registers_train(tmp_path: Path) -> None:
    args = build_parser().parse_args(["train", "--out", str(tmp_path), "--float",
                                      "--widths", "4,8,8"])
    assert args.command == "train" and args.quantized is False
    assert main(["train", "--out", str(tmp_path), "--widths", "4,x"]) == 2
    assert main(["train", "--out", str(tmp_path), "--bits", "weight=two"]) == 2
    assert main(["train", "--out", str(tmp_path), "--weight-scale-lr", "-1"]) == 2
    assert main(["train", "--out", str(tmp_path), "--teacher-tta", "4"]) == 2
    assert main(["train", "--out", str(tmp_path), "--loss-gains", "7.5,0.5"]) == 2
    assert main(["train", "--out", str(tmp_path), "--loss-gains", "7.5,-1,1.5"]) == 2
    assert build_parser().parse_args(["train", "--out", str(tmp_path), "--subgrid", "2"]
                                     ).subgrid == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", str(tmp_path), "--subgrid", "3"])
    assert not (tmp_path / "metrics.csv").exists()


def test_train_finds_ssdd_where_eval_does(tmp_path: Path, monkeypatch, capsys) -> None:
    """``train`` once ignored $SARVESSEL_SSDD (so did reproduce_ssdd.py, which calls it), and
    ``--data xview3`` without a folder defaulted to the SSDD folder."""
    monkeypatch.setenv("SARVESSEL_SSDD", str(tmp_path / "my_ssdd"))
    assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "1"]) == 2
    assert f"{tmp_path / 'my_ssdd'}" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "run"), "--data", "xview3"]) == 2
    assert "--data xview3 needs --data-dir" in capsys.readouterr().err


def test_init_grows_a_context_branch_from_a_chain_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    chain = build_model(ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4, tile_size=64,
                                    quantized=False))
    ckpt = save_checkpoint(tmp_path / "chain.pt", chain)
    grown = build_model(ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4, tile_size=64,
                                    context_widths=(8,)))
    copied, fresh = init_from_checkpoint(grown, ckpt)
    own = grown.state_dict()
    # the whole body and the head after its first conv come from the chain
    for k, v in chain.state_dict().items():
        if k.startswith("body.") or k.startswith("head.3") or k.startswith("head.6"):
            assert k in copied and torch.equal(own[k], v), k
    # the branch and the first head conv (which now reads 8 + 8 channels) start fresh
    assert "head.0.weight" in fresh and any(k.startswith("context.") for k in fresh)
    assert "head.0.weight" not in copied


def test_init_seeds_every_subgrid_anchor_from_a_one_anchor_checkpoint(tmp_path: Path) -> None:
    """Each of the r*r anchors of a cell starts as the one-anchor head's prediction for it."""
    torch.manual_seed(0)
    base = ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4, tile_size=64,
                       quantized=False)
    one = build_model(base).eval()
    ckpt = save_checkpoint(tmp_path / "one.pt", one)
    fine = build_model(ModelConfig(**{**base.to_dict(), "subgrid": 2})).eval()
    copied, fresh = init_from_checkpoint(fine, ckpt)
    assert not fresh and "head.6.weight" in copied
    x = torch.rand(1, 1, 64, 64) * 255
    with torch.no_grad():
        want = torch.nn.functional.interpolate(one(x), scale_factor=2, mode="nearest")
        assert torch.allclose(fine.forward_grid(x), want, atol=1e-5)


def test_init_widens_body_layers_by_copying_channels_and_keeps_the_output(tmp_path: Path
                                                                          ) -> None:
    """A network that differs only in wider body layers starts as the narrower one: old channels
    keep their weights, each new one copies an old channel of its layer (filter and batch norm,
    plus a little noise) and the next layer splits the copied channel's weights between the
    copies, so every new channel carries signal from the start."""
    torch.manual_seed(0)
    base = ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4, tile_size=64,
                       quantized=False)
    narrow = build_model(base).eval()
    for m in narrow.modules():  # batch norms with statistics of their own, not 0/1
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    ckpt = save_checkpoint(tmp_path / "narrow.pt", narrow)
    wide_cfg = ModelConfig(**{**base.to_dict(), "widths": (4, 12, 16)})
    x = torch.rand(2, 1, 64, 64) * 255
    with torch.no_grad():
        want = narrow(x)
        # without noise the function is exact
        exact = build_model(wide_cfg).eval()
        grown = _split_widened(dict(narrow.state_dict()), exact, noise=0.0)
        exact.load_state_dict({**narrow.state_dict(), **grown})
        assert torch.allclose(exact(x), want, atol=1e-4)
        old, new = narrow.state_dict(), exact.state_dict()
        assert torch.equal(new["body.4.weight"][:8], old["body.4.weight"])  # input not grown
        bn = new["body.9.weight"]  # (16,): new channels repeat old batch-norm scales
        assert all(bool((old["body.9.weight"] == v).any()) for v in bn[8:])
        head = new["head.0.weight"]  # reads 16 channels; each old channel's share sums to 1
        assert head[:, 8:].abs().min(1).values.gt(0).all()
        # through --init --grow copy (noise 0.05): close to the narrow output, copies not exact
        wide = build_model(wide_cfg)
        copied, fresh = init_from_checkpoint(wide, ckpt, grow="copy")
        assert not fresh and "body.8.weight" in copied
        assert torch.allclose(wide.eval()(x), want, rtol=0.1, atol=0.1 * want.abs().mean())
        w = wide.state_dict()["body.8.weight"]
        assert not any(torch.equal(w[j], w[k]) for j in range(8, 16) for k in range(16) if j != k)
    # narrower, or another head width: those tensors keep their fresh init, as before
    other = build_model(ModelConfig(**{**base.to_dict(), "widths": (4, 12, 16),
                                       "head_width": 6}))
    _, fresh = init_from_checkpoint(other, ckpt, grow="copy")
    assert "head.0.weight" in fresh


@pytest.mark.parametrize("context", [(), (8,)])
def test_init_widens_body_layers_through_zero_weights_by_default(tmp_path: Path,
                                                                 context: tuple[int, ...]) -> None:
    """By default (grow "zero", with or without a context branch) old channels keep their
    weights, new ones start fresh, old ones read them through zeros, and the output stays the
    narrow network's. grow "copy" refuses a context branch."""
    torch.manual_seed(0)
    base = ModelConfig(name="tiny", widths=(4, 8, 8), context_widths=context, head_width=4,
                       tile_size=64, quantized=False)
    narrow = build_model(base).eval()
    ckpt = save_checkpoint(tmp_path / "narrow.pt", narrow)
    wide = build_model(ModelConfig(**{**base.to_dict(), "widths": (4, 12, 8)}))
    copied, fresh = init_from_checkpoint(wide, ckpt)
    assert not fresh and "body.4.weight" in copied
    w = wide.state_dict()["body.4.weight"]  # (12, 4, 3, 3) grown from (8, 4, 3, 3)
    assert torch.equal(w[:8], narrow.state_dict()["body.4.weight"]) and w[8:].abs().sum() > 0
    assert not wide.state_dict()["body.8.weight"][:, 8:].any()
    x = torch.rand(2, 1, 64, 64) * 255
    with torch.no_grad():
        assert torch.allclose(wide.eval()(x), narrow(x), atol=1e-5)
    if context:
        with pytest.raises(SarvesselError, match="plain conv body"):
            init_from_checkpoint(wide, ckpt, grow="copy")
    with pytest.raises(SarvesselError, match="grow must be"):
        init_from_checkpoint(wide, ckpt, grow="clone")


def test_cli_parses_context_branch_and_mosaic(tmp_path: Path, capsys) -> None:
    args = build_parser().parse_args(["train", "--out", str(tmp_path), "--context-widths",
                                      "16,16", "--mosaic", "0.5", "--close-mosaic", "3"])
    assert args.context_widths == "16,16" and args.mosaic == 0.5 and args.close_mosaic == 3
    assert args.grow == "zero" and args.cls_target == "iou"
    assert args.cls_loss == "bce" and args.oversize == "fit"
    args = build_parser().parse_args(["train", "--out", str(tmp_path), "--cls-loss", "vfl",
                                      "--oversize", "native"])
    assert args.cls_loss == "vfl" and args.oversize == "native"
    assert build_parser().parse_args(["train", "--out", str(tmp_path), "--grow",
                                      "copy"]).grow == "copy"
    assert main(["train", "--out", str(tmp_path), "--context-widths", "8,a"]) == 2
    # scene data has its own val/ scenes, no mosaics and no image list to oversample
    for flag, value in (("--holdout", "0.1"), ("--mosaic", "0.1"),
                        ("--oversample", str(tmp_path / "hard.txt"))):
        assert main(["train", "--out", str(tmp_path), "--data", "xview3", "--data-dir",
                     str(tmp_path), flag, value]) == 2
        assert "not to xView3 scenes" in capsys.readouterr().err


def test_init_from_a_quantised_checkpoint_keeps_its_learned_scales(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4, tile_size=64)
    trained = build_model(cfg)
    trained.train()
    trained(torch.rand(2, 1, 64, 64) * 255)  # activation scales initialised from statistics
    trained.eval()
    ckpt = save_checkpoint(tmp_path / "q.pt", trained)
    fresh = build_model(cfg)
    _, missing = init_from_checkpoint(fresh, ckpt)
    assert missing == []
    x = torch.rand(1, 1, 64, 64) * 255
    assert torch.equal(fresh.eval()(x), load_checkpoint(ckpt)[0](x))


def test_holdout_split_is_seeded_disjoint_and_complete() -> None:
    items = list(range(50))
    train_a, val_a = holdout_split(items, 0.1, seed=3)
    train_b, val_b = holdout_split(items, 0.1, seed=3)
    assert (train_a, val_a) == (train_b, val_b) and len(val_a) == 5
    assert sorted(train_a + val_a) == items and not set(train_a) & set(val_a)
    assert train_a == sorted(train_a) and val_a == sorted(val_a)
    assert holdout_split(items, 0.1, seed=4)[1] != val_a
    with pytest.raises(SarvesselError, match="holdout"):
        holdout_split(items, 1.0)


def test_train_validates_on_a_holdout_of_the_training_folder(tmp_path: Path, caplog) -> None:
    data = _yolo_folder(tmp_path / "data", n=6)
    tc = TrainConfig(out=tmp_path / "run", data_dir=data, data=DataKind.YOLO, epochs=1, batch=2,
                     train_size=64, threads=1, holdout=0.34, max_batches=1)
    with caplog.at_level("INFO", logger="sarvessel.model.train"):
        train(tc, _tiny_cfg())
    # 6 training images: 2 held out for validation (the val/ folder is not used)
    assert "data: 4 training images (4 boxes), 2 validation images (2 boxes)" in caplog.text
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert state["train"]["holdout"] == 0.34


def test_oversample_repeats_listed_images_and_rejects_bad_lists(tmp_path: Path) -> None:
    items = [LabeledImage(tmp_path / f"{i:06d}.jpg", 8, 8) for i in range(5)]
    lst = tmp_path / "hard.txt"
    lst.write_text("# from an eval\n000001  # 1 missed\n\n000003\n999999\n")
    assert read_stems(lst) == {"000001", "000003", "999999"}
    out = oversample_items(items, read_stems(lst), 3)
    assert out[:5] == items and len(out) == 9
    assert sorted(it.stem for it in out[5:]) == ["000001", "000001", "000003", "000003"]
    assert oversample_items(items, {"000001"}, 1) == items
    with pytest.raises(SarvesselError, match="none of the 1 listed"):
        oversample_items(items, {"nope"}, 3)
    with pytest.raises(SarvesselError, match="factor"):
        oversample_items(items, {"000001"}, 0)
    with pytest.raises(SarvesselError, match="not found"):
        read_stems(tmp_path / "missing.txt")


def test_train_draws_oversampled_images_each_epoch(tmp_path: Path, caplog) -> None:
    data = _yolo_folder(tmp_path / "data", n=4)
    (tmp_path / "hard.txt").write_text("2\n")
    with caplog.at_level("INFO", logger="sarvessel.model.train"):
        assert main(["train", "--out", str(tmp_path / "run"), "--data", "yolo", "--data-dir",
                     str(data), "--widths", "4,8,8", "--head-width", "4", "--tile", "64",
                     "--train-size", "64", "--epochs", "1", "--batch", "2", "--threads", "1",
                     "--max-batches", "1", "--oversample", str(tmp_path / "hard.txt"),
                     "--oversample-factor", "4", "--input-scale", "1.25"]) == 0
    # image 2 of 4 is drawn four times: 3 extra samples per epoch
    assert "oversampling 1 images x4" in caplog.text
    assert "data: 7 training images (7 boxes)" in caplog.text
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert state["train"]["oversample"] == str(tmp_path / "hard.txt")
    assert state["train"]["oversample_factor"] == 4
    assert state["config"]["input_scale"] == 1.25  # the model's contract, for the sidecar


def test_freeze_bn_keeps_running_statistics_while_weights_learn(tmp_path: Path) -> None:
    model = build_model(_tiny_cfg()).train()
    n = freeze_batchnorm(model)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert n == len(bns) > 0 and not any(m.training for m in bns)
    before = [m.running_mean.clone() for m in bns]
    model(torch.rand(2, 1, 64, 64) * 255)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns, strict=True))
    # in a run: the statistics of the init checkpoint survive an epoch, the weights move
    data = _yolo_folder(tmp_path / "data")
    init = save_checkpoint(tmp_path / "init.pt", build_model(_tiny_cfg()))
    tc = TrainConfig(out=tmp_path / "run", data_dir=data, data=DataKind.YOLO, epochs=1, batch=2,
                     train_size=64, threads=1, init=init, freeze_bn=True)
    train(tc, _tiny_cfg())
    start = torch.load(init, map_location="cpu", weights_only=False)["model"]
    end = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    stats = [k for k in start if k.endswith("running_mean") or k.endswith("running_var")]
    assert stats and all(torch.equal(start[k], end["raw_model"][k]) for k in stats)
    convs = [k for k, v in start.items() if k.endswith("weight") and v.ndim == 4]
    assert convs and not torch.equal(start[convs[0]], end["raw_model"][convs[0]])


@pytest.mark.parametrize("views", [1, 4])
def test_qat_run_distils_from_a_float_teacher(tmp_path: Path, views: int) -> None:
    data = _yolo_folder(tmp_path / "data")
    torch.manual_seed(0)
    fcfg = ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4, tile_size=64, quantized=False)
    ckpt = save_checkpoint(tmp_path / "teacher.pt", build_model(fcfg))
    tc = TrainConfig(out=tmp_path / "run", data_dir=data, data=DataKind.YOLO, epochs=1, batch=2,
                     train_size=64, threads=1, teacher=ckpt, distill_gain=0.5,
                     teacher_tta=views)
    train(tc, _tiny_cfg())
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 1 and float(rows[0]["loss_kd"]) > 0.0
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert state["train"]["teacher"] == str(ckpt) and state["train"]["distill_gain"] == 0.5
    assert state["train"]["teacher_tta"] == views


def test_metrics_csv_of_an_older_run_keeps_its_columns_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,lr,loss,val_ap50\n0,0.001,3.0,0.5\n")  # written before loss_kd existed
    append_metrics(path, {"epoch": 1, "lr": 0.002, "loss": 2.5, "loss_kd": 0.1, "val_ap50": 0.6,
                       "train_s": 1.0})
    rows = list(csv.DictReader(path.open()))
    assert list(rows[1]) == ["epoch", "lr", "loss", "val_ap50"]
    assert rows[1] == {"epoch": "1", "lr": "0.002", "loss": "2.5", "val_ap50": "0.6"}


def test_join_metrics_numbers_stages_as_one_history(tmp_path: Path) -> None:
    a, b, out = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "joined.csv"
    a.write_text("epoch,lr,loss,val_ap50\n0,0.003,3.0,0.5\n1,0.002,2.8,0.6\n")
    # stage b resumed after a crash: epoch 1 is written twice, the later row counts
    b.write_text("epoch,lr,loss,loss_kd,val_ap50\n0,0.001,2.7,0.2,nan\n1,0.001,2.9,0.3,nan\n"
                 "1,0.001,2.6,0.1,0.7\n")
    assert join_metrics([a, b], out) == 4
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["epoch", "lr", "loss", "val_ap50", "loss_kd"]
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["loss"] for r in rows] == ["3.0", "2.8", "2.7", "2.6"]
    assert rows[0]["loss_kd"] == "" and rows[3]["loss_kd"] == "0.1"
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,lr\n")
    with pytest.raises(SarvesselError, match="empty.csv: no epochs"):
        join_metrics([a, empty], out)
    other = tmp_path / "other.csv"
    other.write_text("step,loss\n0,1.0\n")
    with pytest.raises(SarvesselError, match="other.csv: not a metrics CSV"):
        join_metrics([a, other], out)
    cut = tmp_path / "cut.csv"
    cut.write_text("epoch,lr\n0,0.001\nx,0.001\n")  # a damaged row
    with pytest.raises(SarvesselError, match="cut.csv: line 3: epoch is not an integer"):
        join_metrics([a, cut], out)


def test_channels_last_trains_a_separable_body_to_the_same_numbers(tmp_path: Path) -> None:
    """``--channels-last`` only changes the memory order: same seed, same losses and weights."""
    data = _yolo_folder(tmp_path / "data")
    mc = ModelConfig(name="sep", widths=(4, 8, 8), head_width=4, tile_size=64, separable_from=1,
                     quantized=False)
    losses, weights = [], []
    for cl in (False, True):
        out = tmp_path / f"run_{cl}"
        tc = TrainConfig(out=out, data_dir=data, data=DataKind.YOLO, epochs=1, batch=2,
                         train_size=64, threads=1, max_batches=2, channels_last=cl,
                         device="cpu")
        train(tc, mc)
        losses.append(float(next(csv.DictReader((out / "metrics.csv").open()))["loss"]))
        model, _ = load_checkpoint(out / "last.pt")
        weights.append(model.body[4].weight.detach())  # the first depthwise conv
    assert weights[0].shape == (4, 1, 3, 3)
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-5)
    args = build_parser().parse_args(["train", "--out", str(tmp_path), "--separable-from", "2",
                                      "--channels-last"])
    assert args.separable_from == 2 and args.channels_last


def test_param_groups_give_weight_scales_their_own_lr_and_no_decay() -> None:
    """Learned weight scales (``weight_mse=1``) get ``weight_scale_lr`` x the lr and no weight
    decay; conv weights decay; nothing is left out or counted twice."""
    from sarvessel.model.config import BitWidths
    from sarvessel.model.train import WEIGHT_SCALE_LR_FACTOR, param_groups

    model = build_model(ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4, tile_size=64,
                                    bits=BitWidths(weight_mse=1)))
    tc = TrainConfig(out=Path("unused"), data_dir=Path("unused"), weight_decay=5e-4)
    assert tc.weight_scale_lr == WEIGHT_SCALE_LR_FACTOR
    tc.weight_scale_lr = 0.3
    groups = param_groups(model, tc)
    assert len(groups) == 3
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    decay, no_decay, scales = groups
    assert decay["weight_decay"] == 5e-4 and all(p.ndim == 4 for p in decay["params"])
    assert scales["lr_factor"] == 0.3 and scales["weight_decay"] == 0.0
    n_convs = sum(1 for m in model.modules() if hasattr(m, "quant_weight"))
    assert len(scales["params"]) == n_convs
    # without learned weight scales there is no third group
    plain = build_model(ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4, tile_size=64))
    assert len(param_groups(plain, tc)) == 2


def _raw_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=False)["raw_model"]


def test_worker_processes_train_to_the_same_weights(tmp_path: Path) -> None:
    """``--workers`` only moves sample building to other processes: same batches, same run."""
    data = _yolo_folder(tmp_path / "data")
    for w in (0, 2):
        tc = TrainConfig(out=tmp_path / f"w{w}", data_dir=data, data=DataKind.YOLO, epochs=2,
                         batch=2, train_size=64, threads=1, workers=w, device="cpu")
        train(tc, _tiny_cfg())
    a, b = _raw_weights(tmp_path / "w0"), _raw_weights(tmp_path / "w2")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_time_limit_stops_with_checkpoints_and_resume_finishes_the_same_run(
        tmp_path: Path) -> None:
    """Bit for bit on a float model; a resumed QAT run differs from an uninterrupted one by
    float rounding only (measured on this tiny model: < 3e-4 in the activation scales, < 3e-8
    in the weights, one epoch after the resume)."""
    data = _yolo_folder(tmp_path / "data")
    mc = replace(_tiny_cfg(), quantized=False)

    def cfg(out: str, **kw) -> TrainConfig:
        return TrainConfig(out=tmp_path / out, data_dir=data, data=DataKind.YOLO, epochs=3,
                           batch=2, train_size=64, threads=1, eval_every=5, device="cpu", **kw)

    whole = train(cfg("whole"), mc)
    assert whole["completed"]
    # a limit no epoch fits in: one epoch runs, is evaluated (though eval_every is 5) and
    # checkpointed, and the run says it did not complete
    cut = train(cfg("cut", time_limit=1e-6), mc)
    assert not cut["completed"]
    rows = list(csv.DictReader((tmp_path / "cut" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0"] and rows[0]["val_ap50"] not in ("", "nan")
    state = torch.load(tmp_path / "cut" / "last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 0
    # resuming without the limit ends where the uninterrupted run ended, bit for bit
    done = train(cfg("cut", resume=True), mc)
    assert done["completed"]
    a, b = _raw_weights(tmp_path / "whole"), _raw_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SarvesselError, match="time limit"):
        train(cfg("bad", time_limit=0), mc)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cli_refuses_cuda_without_a_gpu(tmp_path: Path, capsys) -> None:
    data = _yolo_folder(tmp_path / "data")
    rc = main(["train", "--out", str(tmp_path / "run"), "--data", "yolo", "--data-dir",
               str(data), "--widths", "4,8,8", "--head-width", "4", "--tile", "64",
               "--train-size", "64", "--epochs", "1", "--device", "cuda"])
    assert rc != 0
    assert "sees no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
def test_training_on_a_gpu_writes_checkpoints_that_load_on_the_cpu(tmp_path: Path) -> None:
    data = _yolo_folder(tmp_path / "data")
    teacher = save_checkpoint(tmp_path / "teacher.pt",
                              build_model(replace(_tiny_cfg(), quantized=False)))
    tc = TrainConfig(out=tmp_path / "run", data_dir=data, data=DataKind.YOLO, epochs=2,
                     batch=2, train_size=64, threads=1, device="cuda", workers=2,
                     teacher=teacher, teacher_tta=2)
    best = train(tc, _tiny_cfg())
    assert best["completed"] and 0.0 <= best["val_ap50"] <= 1.0
    tc.epochs, tc.resume = 3, True  # the optimizer state goes back onto the GPU
    assert train(tc, _tiny_cfg())["completed"]
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    tensors = [v for v in state["raw_model"].values() if isinstance(v, torch.Tensor)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    model, _ = load_checkpoint(tmp_path / "run" / "best.pt")
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 65, 8, 8)
    # batches come page-locked, so their copies to the GPU overlap with compute
    from sarvessel.evaluation.datasets import load_yolo_folder
    from sarvessel.model.data import ImageDataset
    from sarvessel.model.loader import epoch_loader

    ds = ImageDataset(load_yolo_folder(data / "train"), tile_size=64)
    loader, sampler = epoch_loader(ds, batch=2, seed=0, workers=1, pin_memory=True)
    batch = next(iter(loader))
    assert batch.images.is_pinned() and batch.to(torch.device("cuda")).images.is_cuda


def test_fit_epochs_anneals_the_schedule_within_the_time_limit(tmp_path: Path,
                                                               monkeypatch) -> None:
    """``fit_epochs``: the epoch count is lowered after epoch 1 to what fits, and the cosine
    then ends low at that epoch instead of being cut at the peak; a resume keeps the count."""
    import sarvessel.model.train as tr

    data = _yolo_folder(tmp_path / "data")
    mc = replace(_tiny_cfg(), quantized=False)

    def cfg(out: str, **kw) -> TrainConfig:
        return TrainConfig(out=tmp_path / out, data_dir=data, data=DataKind.YOLO, epochs=6,
                           batch=2, train_size=64, threads=1, eval_every=5, lr=1e-3,
                           warmup_epochs=1.0, device="cpu", **kw)

    def lrs(out: str) -> list[float]:
        return [float(r["lr"]) for r in csv.DictReader((tmp_path / out / "metrics.csv").open())]

    train(cfg("plain"), mc)
    monkeypatch.setattr(tr, "_epochs_that_fit", lambda *a, **k: 3)
    fitted = train(cfg("fit", time_limit=60.0, fit_epochs=True), mc)
    assert fitted["completed"]
    assert len(lrs("fit")) == 3 and len(lrs("plain")) == 6
    assert lrs("fit")[-1] < 0.2e-3 < lrs("plain")[2]  # annealed by epoch 3, not cut at 3
    state = torch.load(tmp_path / "fit" / "last.pt", map_location="cpu", weights_only=False)
    assert state["train"]["epochs"] == 3 and state["train"]["fit_epochs"]
    # resuming keeps the fitted count, with or without --fit-epochs: nothing is left to train
    again = train(cfg("fit", time_limit=60.0, fit_epochs=True, resume=True), mc)
    assert again["completed"] and len(lrs("fit")) == 3
    assert train(cfg("fit", resume=True), mc)["completed"] and len(lrs("fit")) == 3
    # a limit that leaves no room for a second epoch cuts the run instead of fitting it
    monkeypatch.setattr(tr, "_epochs_that_fit", lambda *a, **k: 1)
    cut = train(cfg("short", time_limit=1e-6, fit_epochs=True), mc)
    assert not cut["completed"] and len(lrs("short")) == 1
    with pytest.raises(SarvesselError, match="needs a time limit"):
        train(cfg("bad", fit_epochs=True), mc)


def test_fit_epochs_for_a_single_epoch_warns_of_nothing(tmp_path: Path, monkeypatch,
                                                        caplog) -> None:
    """A one-epoch run once warned that the limit "leaves no time for a second epoch"."""
    import sarvessel.model.train as tr

    monkeypatch.setattr(tr, "_epochs_that_fit", lambda *a, **k: 1)
    data = _yolo_folder(tmp_path / "data")
    cfg = TrainConfig(out=tmp_path / "one", data_dir=data, data=DataKind.YOLO, epochs=1,
                      batch=2, train_size=64, threads=1, device="cpu", time_limit=60.0,
                      fit_epochs=True)
    assert train(cfg, replace(_tiny_cfg(), quantized=False))["completed"]
    assert "second epoch" not in caplog.text


def test_epochs_that_fit_count_the_time_already_spent() -> None:
    import time as _time

    from sarvessel.model.train import _epochs_that_fit

    c = TrainConfig(out=Path("x"), data_dir=Path("x"), epochs=100, time_limit=10.0)
    now = _time.time()
    # 10 min limit, 2 min spent, 60 s epochs (+5 %): 7 more after epoch 0
    assert _epochs_that_fit(c, 0, now - 120, 60.0) == 1 + 7
    # ... and 6 when the last one also needs a 60 s final evaluation
    assert _epochs_that_fit(c, 0, now - 120, 60.0, final_s=60.0) == 1 + 6
    assert _epochs_that_fit(c, 4, now - 700, 60.0) == 5  # past the limit: no more
