"""The detector: a FINN-friendly YOLOv8-style network (one plain chain, one output stride).

Body: [3x3 conv (no bias) -> BN -> ReLU] blocks, the first one with stride ``stem_stride``, the
first ``pools`` of them followed by MaxPool2d(2). Optional context branch: max-pool, more such
blocks at twice the stride, nearest upsampling, concatenated with the body output (both halves
leave through one shared ReLU quantizer). Head: YOLOv8's decoupled box (DFL) and class
branches, computed as one chain of dense convs whose weights are masked block-diagonal (box half /
class half), so FINN sees a plain sequence with no Split/Concat. ``forward`` always returns the
raw output
``[B, r*r*(4*reg_max + nc), H/s, W/s]`` (per anchor: DFL logits in [4, reg_max] ltrb order, then
class logits; ``r = cfg.subgrid`` anchors per cell and axis, packed in pixel-shuffle order);
:meth:`SarYolo.forward_grid` rearranges it onto the anchor grid ``[B, 4*reg_max + nc, rH/s, rW/s]``.
The input is the uint8 image as float 0..255: there is no input quantizer; BatchNorm after the
first conv absorbs the 1/255 scale.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sarvessel.model.config import ModelConfig
from sarvessel.runtime.contract import TILE_SIZE

log = logging.getLogger(__name__)

__all__ = ["OpsReport", "SarYolo", "build_model", "count_ops"]


def build_model(cfg: ModelConfig) -> SarYolo:
    """Build the (quantised or float) detector described by ``cfg``."""
    return SarYolo(cfg)


@dataclass(frozen=True)
class OpsReport:
    """Cost of one forward pass: conv MACs (masked weights counted dense, as FINN computes
    them), GOPs = 2 x MACs / 1e9, and the number of parameters."""

    params: int
    macs: int
    tile: int
    channels: int

    @property
    def gops(self) -> float:
        """Giga-operations (2 x MACs) per tile."""
        return 2.0 * self.macs / 1e9


def count_ops(model: nn.Module, tile: int = TILE_SIZE, channels: int = 2) -> OpsReport:
    """Count conv MACs of one ``[1, channels, tile, tile]`` forward pass and the parameters.

    ``channels`` overrides the model's input channels for the first conv's cost (a 1-channel
    model evaluated at 2 channels counts what its 2-channel twin would cost).
    """
    macs = 0
    first = True

    def hook(mod: nn.Conv2d, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs, first
        cin = mod.in_channels
        if first:
            cin, first = channels, False
        kh, kw = mod.kernel_size
        macs += out.shape[-2] * out.shape[-1] * mod.out_channels * (cin // mod.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    in_ch = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_ch, tile, tile))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return OpsReport(params=params, macs=int(macs), tile=tile, channels=channels)


class SarYolo(nn.Module):
    """Body + masked decoupled head; see the module docstring for the layout."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        b = cfg.bits
        layers: list[nn.Module] = []
        cin = cfg.in_channels
        n = len(cfg.widths)
        for i, (w, dil) in enumerate(zip(cfg.widths, cfg.block_dilations(), strict=True)):
            wbits = b.first_weight if i == 0 else b.weight
            stride = cfg.stem_stride if i == 0 else 1
            # this block's output feeds the next block's depthwise conv
            feeds_dw = bool(cfg.separable_from) and cfg.separable_from <= i + 1 < n
            out_act = _relu(cfg, b.act, channels=w if feeds_dw and b.dw_in_per_channel else 0)
            if cfg.separable_from and i >= cfg.separable_from:
                layers += [_conv(cfg, cin, cin, 3, b.depthwise_weight(), dilation=dil, groups=cin),
                           nn.BatchNorm2d(cin), _relu(cfg, b.depthwise_act()),
                           _conv(cfg, cin, w, 1, wbits), nn.BatchNorm2d(w), out_act]
            else:
                layers += [_conv(cfg, cin, w, 3, wbits, stride=stride, dilation=dil),
                           nn.BatchNorm2d(w), out_act]
            if i < cfg.pools:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.body = nn.Sequential(*layers)
        self.context: nn.Sequential | None = None
        if cfg.context_widths:
            ctx: list[nn.Module] = [nn.MaxPool2d(2)]
            c = cin
            for i, (w, dil) in enumerate(zip(cfg.context_widths, cfg.context_block_dilations(),
                                             strict=True)):
                last = i == len(cfg.context_widths) - 1
                # the last ReLU is the body's own module: one quantizer for both concat inputs
                ctx += [_conv(cfg, c, w, 3, b.weight, dilation=dil), nn.BatchNorm2d(w),
                        self.body[-1] if last else _relu(cfg, b.act)]
                c = w
            ctx.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.context = nn.Sequential(*ctx)
        self.skip: nn.Sequential | None = None
        if cfg.skip_width:
            # the last ReLU is the body's own module: one quantizer for both concat inputs
            c4 = cfg.widths[cfg.pools - 1]
            self.skip = nn.Sequential(
                _conv(cfg, c4, cfg.skip_width, 2, b.weight, stride=2, padding=0),
                nn.BatchNorm2d(cfg.skip_width), self.body[-1])
            # the body runs up to (not into) its last pool, the skip forks there
            self._skip_at = max(i for i, m in enumerate(self.body) if isinstance(m, nn.MaxPool2d))
        h2 = 2 * cfg.head_width
        self.head = nn.Sequential(
            _conv(cfg, cfg.head_in_channels, h2, cfg.head_kernel, b.weight), nn.BatchNorm2d(h2),
            _relu(cfg, b.act),
            _conv(cfg, h2, h2, 1, b.weight), nn.BatchNorm2d(h2), _relu(cfg, b.last_act),
            _conv(cfg, h2, cfg.out_channels, 1, b.last_weight, bias=True),
        )
        self._init_weights()
        self._register_masks()

    @property
    def stride(self) -> int:
        """Output stride in pixels."""
        return self.cfg.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: float ``[B, C, H, W]`` holding uint8 values 0..255 (H, W multiples of the
        stride). Returns raw ``[B, 4*reg_max + nc, H/s, W/s]``."""
        if self.skip is not None:
            fine = self.body[:self._skip_at](x)
            f = self.body[self._skip_at:](fine)
            return self.head(torch.cat([f, self.skip(fine)], 1))
        f = self.body(x)
        if self.context is not None:
            f = torch.cat([f, self.context(f)], 1)
        return self.head(f)

    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` rearranged onto the anchor grid: ``[B, 4*reg_max + nc, rH/s, rW/s]``
        (the map the loss, the teacher and the runtime's decoder read)."""
        raw = self(x)
        r = self.cfg.subgrid
        return raw if r == 1 else F.pixel_shuffle(raw, r)

    def head_masks(self) -> dict[str, torch.Tensor]:
        """Block-diagonal masks of the two masked head convs, by module name."""
        h, r4 = self.cfg.head_width, 4 * self.cfg.reg_max
        m1 = torch.zeros(2 * h, 2 * h, 1, 1)
        m1[:h, :h] = 1
        m1[h:, h:] = 1
        m2 = torch.zeros(self.cfg.cell_channels, 2 * h, 1, 1)
        m2[:r4, :h] = 1
        m2[r4:, h:] = 1
        # packed output channel c * r*r + k is anchor k's channel c (pixel-shuffle order)
        m2 = m2.repeat_interleave(self.cfg.subgrid ** 2, dim=0)
        return {"3": m1, "6": m2}

    def apply_masks(self) -> None:
        """Zero the masked head weights (after init, loading or an optimiser step)."""
        with torch.no_grad():
            for mod in self.head.children():
                if hasattr(mod, "weight_mask"):
                    mod.weight.mul_(mod.weight_mask)

    def _register_masks(self) -> None:
        for name, mask in self.head_masks().items():
            conv = self.head.get_submodule(name)
            conv.register_buffer("weight_mask", mask)
            conv.weight.register_hook(lambda g, c=conv: g * c.weight_mask)
        self.apply_masks()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03
        last = self.head[-1]
        n = self.cfg.subgrid ** 2
        r4 = 4 * self.cfg.reg_max * n
        cells = (self.cfg.tile_size / self.cfg.stride) ** 2 * n
        with torch.no_grad():
            last.bias[:r4] = 1.0
            last.bias[r4:] = math.log(5 / self.cfg.nc / cells)


def _conv(cfg: ModelConfig, cin: int, cout: int, k: int, wbits: int, *, bias: bool = False,
          stride: int = 1, dilation: int = 1, groups: int = 1, padding: int | None = None
          ) -> nn.Conv2d:
    pad = dilation * (k // 2) if padding is None else padding
    if not cfg.quantized:
        return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation,
                         groups=groups, bias=bias)
    from brevitas.nn import QuantConv2d

    from sarvessel.model.quant import IntWeightPerChannelMSEQuant, IntWeightPerChannelQuant

    quant = IntWeightPerChannelMSEQuant if cfg.bits.weight_mse else IntWeightPerChannelQuant
    return QuantConv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation,
                       groups=groups, bias=bias, weight_quant=quant, weight_bit_width=wbits)


def _relu(cfg: ModelConfig, bits: int, *, channels: int = 0) -> nn.Module:
    """ReLU, or a ``bits``-wide QuantReLU; ``channels`` > 0: one scale per channel."""
    if not cfg.quantized:
        return nn.ReLU(inplace=True)
    from brevitas.nn import QuantReLU

    from sarvessel.model.quant import UintActPerChannelQuant, UintActQuant

    if channels:
        return QuantReLU(act_quant=UintActPerChannelQuant, bit_width=bits,
                         per_channel_broadcastable_shape=(1, channels, 1, 1))
    return QuantReLU(act_quant=UintActQuant, bit_width=bits)
