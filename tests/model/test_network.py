"""Network: output shape, cost budget, masked head, float/quant twins, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sarvessel.model.checkpoint import load_checkpoint, save_checkpoint
from sarvessel.model.config import BitWidths, ConfigError, ModelConfig, scene_config, ssdd_config
from sarvessel.model.network import build_model, count_ops
from sarvessel.runtime.errors import ModelError


def _tiny(**kw) -> ModelConfig:
    return ModelConfig(**{"widths": (4, 8, 8), "head_width": 4, "tile_size": 64, **kw})


@pytest.mark.parametrize("quantized", [True, False])
def test_output_shape_is_raw_contract(quantized: bool) -> None:
    cfg = scene_config(quantized=quantized)
    model = build_model(cfg).eval()
    x = torch.randint(0, 256, (2, 2, 64, 96)).float()
    out = model(x)
    assert cfg.stride == 8
    assert out.shape == (2, 4 * 16 + 3, 8, 12)


def test_default_cost_within_budget() -> None:
    rep = count_ops(build_model(scene_config()), 512, 2)
    assert 0.5 < rep.gops <= 1.0
    assert rep.params < 200_000
    # the SSDD (1-channel) model costs the same at 2 channels by construction
    assert count_ops(build_model(ssdd_config()), 512, 2).macs == rep.macs - _cls_macs(3, 1)


def _cls_macs(nc_a: int, nc_b: int) -> int:
    cfg = scene_config()
    return (nc_a - nc_b) * 2 * cfg.head_width * (512 // cfg.stride) ** 2


def test_count_ops_by_hand() -> None:
    cfg = _tiny(quantized=False)
    rep = count_ops(build_model(cfg), 64, 1)
    # stem 3x3 s2 1->4 at 32x32, pool; 4->8 at 16x16, pool; 8->8 at 8x8; head 8->8, 8->8, 8->65
    hand = (32 * 32 * 4 * 9 + 16 * 16 * 8 * 4 * 9 + 8 * 8 * 8 * 8 * 9
            + 8 * 8 * (8 * 8 + 8 * 8 + 65 * 8))
    assert rep.macs == hand
    assert rep.gops == pytest.approx(2 * hand / 1e9)


def test_head_branches_are_independent() -> None:
    """Box outputs must not depend on class-branch weights and vice versa (block-diagonal)."""
    torch.manual_seed(0)
    model = build_model(_tiny(quantized=False)).eval()
    x = torch.rand(1, 1, 64, 64) * 255
    out = model(x)
    h = model.cfg.head_width
    with torch.no_grad():
        model.head[3].weight[h:, h:] += 1.0  # class half of the masked conv
    out2 = model(x)
    r4 = 4 * model.cfg.reg_max
    assert torch.equal(out[:, :r4], out2[:, :r4])
    assert not torch.equal(out[:, r4:], out2[:, r4:])
    # masked entries stay zero through training steps
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(x).sum().backward()
    opt.step()
    model.apply_masks()
    for name, mask in model.head_masks().items():
        w = model.head.get_submodule(name).weight
        assert float((w.detach() * (1 - mask)).abs().sum()) == 0.0


def test_quantized_layers_state_their_widths() -> None:
    from brevitas.nn import QuantConv2d, QuantReLU

    model = build_model(_tiny())
    convs = [m for m in model.modules() if isinstance(m, QuantConv2d)]
    widths = [int(c.quant_weight().bit_width) for c in convs]
    assert widths == [8, 4, 4, 4, 4, 8]
    acts = [int(m.act_quant.bit_width()) for m in model.modules() if isinstance(m, QuantReLU)]
    assert acts == [4, 4, 4, 4, 8]
    qw = convs[1].quant_weight()
    ints = (qw.value / qw.scale).round()
    assert ints.abs().max() <= 7  # narrow-range signed 4-bit


def test_config_validation_and_round_trip() -> None:
    cfg = ssdd_config()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    side = cfg.sidecar()
    assert side["stride"] == 8 and side["bands"] == ["grey"] and side["nc"] == 1
    assert side["bit_widths"]["weight"] == 4
    with pytest.raises(ConfigError, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "colour": 1})
    with pytest.raises(ConfigError, match="bit width"):
        ssdd_config(bits={"weight": 12})
    with pytest.raises(ConfigError, match="bands"):
        ModelConfig(in_channels=2)
    assert side["input_scale"] == 1.0
    old = {k: v for k, v in cfg.to_dict().items() if k != "input_scale"}  # an older checkpoint
    assert ModelConfig.from_dict(old).input_scale == 1.0
    assert ssdd_config(input_scale=1.5).sidecar()["input_scale"] == 1.5
    with pytest.raises(ConfigError, match="input_scale"):
        ssdd_config(input_scale=0.0)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = build_model(_tiny()).eval()
    x = torch.rand(1, 1, 64, 64) * 255
    path = save_checkpoint(tmp_path / "m.pt", model, epoch=3, metrics={"val_ap50": 0.5})
    loaded, state = load_checkpoint(path)
    assert state["epoch"] == 3 and loaded.cfg == model.cfg
    assert torch.allclose(loaded(x), model(x))
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"nope")
    with pytest.raises(ModelError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_dilations_grow_the_receptive_field_at_equal_cost() -> None:
    plain = ssdd_config(widths=(16, 32, 40, 40, 40, 40, 40, 40))
    dilated = ssdd_config(widths=plain.widths, dilations=(1, 1, 1, 2, 4, 8, 2, 1))
    # stem 3 px; pool -> 5; conv at stride 4 -> 13; pool -> 17; six 3x3 convs at stride 8
    assert ssdd_config().receptive_field() == 17 + 3 * 16
    assert plain.receptive_field() == 17 + 6 * 16
    assert dilated.receptive_field() == 17 + 16 * (1 + 2 + 4 + 8 + 2 + 1) == 305
    assert count_ops(build_model(dilated)).macs == count_ops(build_model(plain)).macs
    x = torch.rand(1, 1, 128, 128) * 255
    assert build_model(dilated).eval()(x).shape == (1, 65, 16, 16)
    assert ModelConfig.from_dict(dilated.to_dict()) == dilated
    # checkpoints written before dilations existed load as all-1
    old = {k: v for k, v in plain.to_dict().items() if k != "dilations"}
    assert ModelConfig.from_dict(old).block_dilations() == (1,) * 8
    with pytest.raises(ConfigError, match="one positive integer per body block"):
        ssdd_config(dilations=(1, 2))
    with pytest.raises(ConfigError, match="up to the last pooled block"):
        ssdd_config(dilations=(1, 2, 1, 1, 1))


def test_context_branch_costs_a_quarter_and_shares_the_concat_quantizer() -> None:
    cfg = _tiny(context_widths=(16, 16), context_dilations=(1, 2), quantized=False)
    model = build_model(cfg).eval()
    assert model(torch.rand(1, 1, 64, 64) * 255).shape == (1, 65, 8, 8)
    # chain as in test_count_ops_by_hand, plus the branch at 4x4 (8->16, 16->16) and the first
    # head conv reading 8 + 16 channels
    hand = (32 * 32 * 4 * 9 + 16 * 16 * 8 * 4 * 9 + 8 * 8 * 8 * 8 * 9
            + 4 * 4 * (16 * 8 * 9 + 16 * 16 * 9)
            + 8 * 8 * (8 * 24 + 8 * 8 + 65 * 8))
    assert count_ops(model, 64, 1).macs == hand
    q = build_model(_tiny(context_widths=(16, 16), context_dilations=(1, 2)))
    assert q.context[-2] is q.body[-1]  # one quantizer for both inputs of the concatenation
    # the branch matters: changing its weights changes the output
    x = torch.rand(1, 1, 64, 64) * 255
    before = model(x)
    with torch.no_grad():
        model.context[1].weight.mul_(-1)
    assert not torch.allclose(before, model(x))


def test_context_branch_config() -> None:
    v6 = ssdd_config(widths=(16, 32, 40, 40, 40), dilations=(1, 1, 1, 2, 4),
                     context_widths=(80, 80, 80), context_dilations=(1, 2, 4))
    # body 129 px; pool to stride 16 (+8); 3x3 convs at stride 16 dilated 1, 2, 4
    assert v6.receptive_field() == 129 + 8 + 2 * 16 * (1 + 2 + 4) == 361
    rep = count_ops(build_model(v6), 512, 2)
    assert rep.gops <= 1.0 and rep.params > 2 * 100_000 - 1_000
    assert ModelConfig.from_dict(v6.to_dict()) == v6
    assert v6.head_in_channels == 120
    old = {k: v for k, v in v6.to_dict().items() if not k.startswith("context")}
    assert ModelConfig.from_dict(old).context_widths == ()
    with pytest.raises(ConfigError, match="context_dilations"):
        ssdd_config(context_widths=(8, 8), context_dilations=(1,))
    with pytest.raises(ConfigError, match="ends in a ReLU"):
        ssdd_config(widths=(8, 8), pools=2, context_widths=(8,))
    with pytest.raises(ConfigError, match="twice the stride"):
        ssdd_config(tile_size=72, context_widths=(8,))


def test_skip_costs_by_hand_shares_the_quantizer_and_grows_from_a_plain_body(
        tmp_path: Path) -> None:
    from sarvessel.model.warm_start import init_from_checkpoint

    cfg = _tiny(skip_width=6, quantized=False)
    model = build_model(cfg).eval()
    assert model(torch.rand(1, 1, 64, 64) * 255).shape == (1, 65, 8, 8)
    # chain as in test_count_ops_by_hand, plus the 2x2 stride-2 skip conv from the 16x16
    # block (8 -> 6 channels at 8x8) and the first head conv reading 8 + 6 channels
    hand = (32 * 32 * 4 * 9 + 16 * 16 * 8 * 4 * 9 + 8 * 8 * 8 * 8 * 9
            + 8 * 8 * 6 * 8 * 4
            + 8 * 8 * (8 * 14 + 8 * 8 + 65 * 8))
    assert count_ops(model, 64, 1).macs == hand
    assert cfg.head_in_channels == 14 and ModelConfig.from_dict(cfg.to_dict()) == cfg
    q = build_model(_tiny(skip_width=6))
    assert q.skip[-1] is q.body[-1]  # one quantizer for both inputs of the concatenation
    # the skip reads the stride-4 features: changing its weights changes the output
    x = torch.rand(1, 1, 64, 64) * 255
    before = model(x)
    with torch.no_grad():
        model.skip[0].weight.mul_(-1)
    assert not torch.allclose(before, model(x))
    # grown from a body without a skip, it starts with that body's output exactly
    plain = build_model(_tiny(quantized=False)).eval()
    save_checkpoint(tmp_path / "plain.pt", plain)
    grown = build_model(cfg)
    _, fresh = init_from_checkpoint(grown, tmp_path / "plain.pt")
    assert all(k.startswith("skip.") for k in fresh)
    assert torch.equal(grown.eval()(x), plain(x))
    with pytest.raises(ConfigError, match="skip_width"):
        _tiny(skip_width=4, context_widths=(8,))
    with pytest.raises(ConfigError, match="skip_width"):
        _tiny(skip_width=4, pools=0)


def test_separable_blocks_cost_by_hand_and_validate() -> None:
    cfg = _tiny(widths=(4, 8, 16, 16), separable_from=1, quantized=False)
    model = build_model(cfg).eval()
    assert model(torch.rand(1, 1, 64, 64) * 255).shape == (1, 65, 8, 8)
    # stem 3x3 s2 1->4 at 32x32, pool; depthwise 3x3 on 4 + 1x1 4->8 at 16x16, pool;
    # depthwise 3x3 on 8 + 1x1 8->16, then on 16 + 16->16 at 8x8; head 16->8, 8->8, 8->65
    hand = (32 * 32 * 4 * 9 + 16 * 16 * (4 * 9 + 4 * 8) + 8 * 8 * (8 * 9 + 8 * 16)
            + 8 * 8 * (16 * 9 + 16 * 16) + 8 * 8 * (16 * 8 + 8 * 8 + 65 * 8))
    assert count_ops(model, 64, 1).macs == hand
    assert [m.groups for m in model.body if isinstance(m, torch.nn.Conv2d)] == [1, 4, 1, 8, 1,
                                                                               16, 1]
    # the receptive field is the plain chain's: a 1x1 conv adds nothing
    assert cfg.receptive_field() == _tiny(widths=(4, 8, 16, 16)).receptive_field()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k != "separable_from"}
    assert ModelConfig.from_dict(old).separable_from == 0
    q = build_model(_tiny(widths=(4, 8, 16, 16), separable_from=2))
    assert [m.groups for m in q.body if isinstance(m, torch.nn.Conv2d)] == [1, 1, 8, 1, 16, 1]
    for bad in (-1, 4):
        with pytest.raises(ConfigError, match="separable_from"):
            _tiny(widths=(4, 8, 16, 16), separable_from=bad)


def test_depthwise_weight_width_applies_to_depthwise_convs_only() -> None:
    from brevitas.nn import QuantConv2d

    def widths(**bits: int) -> list[tuple[int, int]]:
        model = build_model(_tiny(widths=(4, 8, 16), separable_from=1, bits=bits))
        return [(c.groups, int(c.quant_weight().bit_width)) for c in model.modules()
                if isinstance(c, QuantConv2d)]

    # stem, (dw, pw) x 2, head x 3: dw_weight 0 follows ``weight``
    assert widths() == [(1, 8), (4, 4), (1, 4), (8, 4), (1, 4), (1, 4), (1, 4), (1, 8)]
    assert widths(weight=3) == [(1, 8), (4, 3), (1, 3), (8, 3), (1, 3), (1, 3), (1, 3), (1, 8)]
    assert widths(dw_weight=8) == [(1, 8), (4, 8), (1, 4), (8, 8), (1, 4), (1, 4), (1, 4),
                                   (1, 8)]
    # a checkpoint written before the field existed loads with it off
    cfg = _tiny(bits={"dw_weight": 6})
    old = cfg.to_dict()
    del old["bits"]["dw_weight"]
    assert ModelConfig.from_dict(old).bits.dw_weight == 0
    with pytest.raises(ConfigError, match="dw_weight"):
        _tiny(bits={"dw_weight": 1})


def test_depthwise_act_width_applies_to_depthwise_outputs_only() -> None:
    from brevitas.nn import QuantReLU

    def acts(**bits: int) -> list[int]:
        model = build_model(_tiny(widths=(4, 8, 16), separable_from=1, bits=bits))
        return [int(m.act_quant.bit_width()) for m in model.modules() if isinstance(m, QuantReLU)]

    # stem, (dw, pw) x 2, head x 2
    assert acts() == [4, 4, 4, 4, 4, 4, 8]
    assert acts(dw_act=8) == [4, 8, 4, 8, 4, 4, 8]
    assert acts(act=3) == [3, 3, 3, 3, 3, 3, 8]
    with pytest.raises(ConfigError, match="dw_act"):
        _tiny(bits={"dw_act": 9})


def test_per_channel_scales_only_on_depthwise_inputs() -> None:
    """``dw_in_per_channel`` gives the activations that feed a depthwise conv (the stem's and
    every 1x1 conv's output but the last block's) one scale per channel; the rest stay
    per-tensor, and a dense body ignores the flag."""
    from brevitas.nn import QuantReLU

    def scales(**kw) -> list[tuple[int, ...]]:
        model = build_model(_tiny(**kw))
        return [tuple(m.act_quant.scale().shape) for m in model.modules()
                if isinstance(m, QuantReLU)]

    sep = {"widths": (4, 8, 16), "separable_from": 1}
    # stem, (dw, pw) x 2, head x 2
    assert scales(**sep) == [()] * 7
    assert scales(**sep, bits={"dw_in_per_channel": 1}) == [
        (1, 4, 1, 1), (), (1, 8, 1, 1), (), (), (), ()]
    assert scales(bits={"dw_in_per_channel": 1}) == [()] * 5
    assert BitWidths.parse("dw_in_per_channel=1").dw_in_per_channel == 1
    with pytest.raises(ConfigError, match="dw_in_per_channel"):
        BitWidths.parse("dw_in_per_channel=2")
    old = _tiny(**sep).to_dict()
    del old["bits"]["dw_in_per_channel"]
    assert ModelConfig.from_dict(old).bits.dw_in_per_channel == 0


def test_subgrid_head_packs_anchors_and_costs_only_the_last_conv() -> None:
    torch.manual_seed(0)
    one = build_model(_tiny(quantized=False)).eval()
    cfg = _tiny(quantized=False, subgrid=2)
    model = build_model(cfg).eval()
    x = torch.rand(1, 1, 64, 64) * 255
    assert model(x).shape == (1, 4 * 65, 8, 8)
    grid = model.forward_grid(x)
    assert grid.shape == (1, 65, 16, 16)
    # forward_grid is pixel shuffle: anchor (i, j) of cell (y, x) is packed channel c*4 + i*2 + j
    assert torch.equal(grid[0, 7, 2 * 3 + 1, 2 * 5], model(x)[0, 7 * 4 + 2, 3, 5])
    # only the last 1x1 conv grows: 3 more anchors' 65 outputs from 2*head_width inputs, per cell
    extra = count_ops(model, 64, 1).macs - count_ops(one, 64, 1).macs
    assert extra == 8 * 8 * 3 * 65 * 2 * cfg.head_width
    # every anchor's box outputs still read the box half only (the masks follow the packing)
    h, r4 = cfg.head_width, 4 * cfg.reg_max
    with torch.no_grad():
        model.head[3].weight[h:, h:] += 1.0
    grid2 = model.forward_grid(x)
    assert torch.equal(grid[:, :r4], grid2[:, :r4]) and not torch.equal(grid[:, r4:], grid2[:, r4:])
    assert cfg.sidecar()["subgrid"] == 2 and cfg.out_channels == 4 * cfg.cell_channels
    assert ModelConfig.from_dict(cfg.to_dict()).subgrid == 2
    with pytest.raises(ConfigError, match="subgrid"):
        _tiny(subgrid=3)
    with pytest.raises(ConfigError, match="subgrid"):
        _tiny(subgrid=4, stem_stride=1, pools=1)  # stride 2
