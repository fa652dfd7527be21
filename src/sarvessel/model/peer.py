"""The stock YOLOv8n peer: ultralytics' ``yolov8n.yaml`` network in plain PyTorch, for timing.

Benchmarks compare the CPU fallback with the network users would otherwise run. Ultralytics
cannot be imported here (no CPU torchvision for this torch), so the architecture is written
out from ultralytics 8.x ``cfg/models/v8/yolov8.yaml`` at scale ``n`` (depth 0.33, width 0.25,
max channels 1024) and ``nn/modules/{conv,block,head}.py``:

- ``Conv``: Conv2d (no bias, "same" padding) → BatchNorm2d (eps 1e-3) → SiLU;
- backbone ``Conv 16/2, Conv 32/2, C2f 32 x1, Conv 64/2, C2f 64 x2, Conv 128/2, C2f 128 x2,
  Conv 256/2, C2f 256 x1, SPPF 256 k5`` (C2f with residual bottlenecks);
- PAN neck: upsample + concat + C2f (no shortcut) down to P3, then strided Conv + concat + C2f
  back up to P4 and P5 (64, 128, 256 channels);
- ``Detect``: per level a box branch (Conv 64, Conv 64, 1x1 to ``4*reg_max``) and a class
  branch (Conv 80, Conv 80, 1x1 to ``nc``), DFL (softmax expectation over 16 bins), anchor
  decoding; the output is ultralytics' ``[B, 4 + nc, N]`` (xywh in pixels, class scores).

Weights are random (timing does not depend on them); :func:`export_peer_onnx` folds BatchNorm
into the convs as ultralytics' ONNX export does. Published reference (ultralytics YOLOv8 docs,
"Performance" table): 3.2 M parameters, 8.7 GFLOPs at 640x640 (fused: 3,151,904 parameters).
The input is the float image; the peer does no scaling of its own (ultralytics feeds 0..1).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["PeerCost", "YoloV8", "count_peer_cost", "export_peer_onnx", "fuse_batchnorm", "yolov8n"]

#: yolov8n scale: depth multiple, width multiple, max channels (ultralytics yolov8.yaml).
_DEPTH, _WIDTH, _MAX_CHANNELS = 0.33, 0.25, 1024


def yolov8n(*, nc: int = 80, channels: int = 3, reg_max: int = 16) -> YoloV8:
    """The ``yolov8n.yaml`` network, randomly initialised, in eval mode.

    nc: classes; the default is 80 (COCO). channels: input channels; the default is 3.
    reg_max: DFL bins per box side; the default is 16.
    """
    torch.manual_seed(0)
    return YoloV8(nc=nc, channels=channels, reg_max=reg_max).eval()


@dataclass(frozen=True)
class PeerCost:
    """Cost of one forward pass: parameters (BatchNorm folded, as ultralytics reports the
    fused model), conv MACs and GFLOPs = 2 x MACs / 1e9 (ultralytics' convention)."""

    params: int
    macs: int
    tile: int

    @property
    def gflops(self) -> float:
        """Giga floating-point operations (2 x MACs) per image."""
        return 2.0 * self.macs / 1e9


def count_peer_cost(model: nn.Module, *, tile: int = 640) -> PeerCost:
    """Count the conv MACs of one ``[1, C, tile, tile]`` pass (by forward hooks) and the
    parameters of the BatchNorm-folded network (a BN after a conv adds no parameters once
    folded; its conv gains a bias). tile: input side in pixels; the default is 640."""
    macs = 0

    def hook(mod: nn.Conv2d, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        kh, kw = mod.kernel_size
        macs += out.shape[-2] * out.shape[-1] * mod.out_channels * (
            mod.in_channels // mod.groups) * kh * kw

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.no_grad():
            model(torch.zeros(1, convs[0].in_channels, tile, tile))
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for n, p in model.named_parameters() if ".bn." not in f".{n}")
    params += sum(m.conv.out_channels for m in model.modules() if isinstance(m, Conv))
    return PeerCost(params=params, macs=int(macs), tile=tile)


def export_peer_onnx(
    path: Path | str, *, tile: int = 640, channels: int = 3, nc: int = 80,
    dynamic_batch: bool = True, opset: int = 17,
) -> Path:
    """Write the stock YOLOv8n (BatchNorm folded) as ONNX to ``path`` and return it.

    tile: input side T (px; a multiple of 32); the default is 640. channels, nc: as
    :func:`yolov8n`. dynamic_batch: a symbolic batch dimension ``"batch"``; the default is True.
    opset: the ONNX opset; the default is 17. Input ``x``: float ``[B, C, T, T]``; output
    ``y``: ``[B, 4 + nc, N]`` with ``N = 21 * (T / 32)**2`` anchors. Nothing is downloaded;
    the caller caches the file.
    """
    if tile % 32:
        raise ValueError(f"tile must be a multiple of 32 (the largest stride), got {tile}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = fuse_batchnorm(yolov8n(nc=nc, channels=channels))
    x = torch.zeros(1, channels, tile, tile)
    dynamic = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    log.info("wrote the YOLOv8n peer (%d px, %d channels, nc %d) to %s", tile, channels, nc,
             path)
    return path


def fuse_batchnorm(model: YoloV8) -> YoloV8:
    """Fold every ``Conv``'s BatchNorm into its conv (in place; eval mode), as ultralytics'
    ``fuse()`` does before export. Returns ``model``."""
    for m in model.modules():
        if isinstance(m, Conv) and isinstance(m.bn, nn.BatchNorm2d):
            conv, bn = m.conv, m.bn
            gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                              conv.stride, conv.padding, conv.dilation, conv.groups, bias=True)
            with torch.no_grad():
                fused.weight.copy_(conv.weight * gain.reshape(-1, 1, 1, 1))
                fused.bias.copy_(bn.bias - bn.running_mean * gain)
            m.conv, m.bn = fused, nn.Identity()
    return model.eval()


class YoloV8(nn.Module):
    """YOLOv8 detection network (backbone, PAN neck, Detect head) at the ``n`` scale."""

    def __init__(self, *, nc: int = 80, channels: int = 3, reg_max: int = 16) -> None:
        super().__init__()
        c = [_ch(x) for x in (64, 128, 256, 512, 1024)]  # 16, 32, 64, 128, 256
        self.b0 = Conv(channels, c[0], 3, 2)
        self.b1 = Conv(c[0], c[1], 3, 2)
        self.b2 = C2f(c[1], c[1], _n(3), shortcut=True)
        self.b3 = Conv(c[1], c[2], 3, 2)
        self.b4 = C2f(c[2], c[2], _n(6), shortcut=True)  # P3
        self.b5 = Conv(c[2], c[3], 3, 2)
        self.b6 = C2f(c[3], c[3], _n(6), shortcut=True)  # P4
        self.b7 = Conv(c[3], c[4], 3, 2)
        self.b8 = C2f(c[4], c[4], _n(3), shortcut=True)
        self.b9 = SPPF(c[4], c[4], 5)  # P5
        self.h12 = C2f(c[4] + c[3], c[3], _n(3))
        self.h15 = C2f(c[3] + c[2], c[2], _n(3))  # P3 out
        self.h16 = Conv(c[2], c[2], 3, 2)
        self.h18 = C2f(c[2] + c[3], c[3], _n(3))  # P4 out
        self.h19 = Conv(c[3], c[3], 3, 2)
        self.h21 = C2f(c[3] + c[4], c[4], _n(3))  # P5 out
        self.detect = Detect(nc, (c[2], c[3], c[4]), reg_max=reg_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: float ``[B, C, H, W]`` (H, W multiples of 32). Returns ``[B, 4 + nc, N]``."""
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        up = F.interpolate(p5, scale_factor=2.0, mode="nearest")
        h12 = self.h12(torch.cat([up, p4], 1))
        up = F.interpolate(h12, scale_factor=2.0, mode="nearest")
        o3 = self.h15(torch.cat([up, p3], 1))
        o4 = self.h18(torch.cat([self.h16(o3), h12], 1))
        o5 = self.h21(torch.cat([self.h19(o4), p5], 1))
        return self.detect([o3, o4, o5])


class Conv(nn.Module):
    """Conv2d (no bias, padding k//2) → BatchNorm2d → SiLU (ultralytics ``Conv``)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 ``Conv`` with an optional residual add (ultralytics ``Bottleneck``, e=1)."""

    def __init__(self, c: int, *, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = Conv(c, c, 3)
        self.cv2 = Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP bottleneck with two convs (ultralytics ``C2f``, e=0.5): split, ``n`` bottlenecks
    on the second half, every intermediate concatenated, 1x1 fuse."""

    def __init__(self, c1: int, c2: int, n: int = 1, *, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut=shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast (ultralytics ``SPPF``): three chained k x k max pools."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class Detect(nn.Module):
    """YOLOv8 ``Detect`` head at inference: DFL box decoding and sigmoid class scores."""

    def __init__(self, nc: int, ch: tuple[int, ...], *, reg_max: int = 16) -> None:
        super().__init__()
        self.nc, self.reg_max = nc, reg_max
        self.strides = (8, 16, 32)
        c2, c3 = max(16, ch[0] // 4, reg_max * 4), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3),
                                               nn.Conv2d(c2, 4 * reg_max, 1)) for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3),
                                               nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.dfl.weight.copy_(torch.arange(reg_max, dtype=torch.float32).view(1, -1, 1, 1))
        for a, b, s in zip(self.cv2, self.cv3, self.strides, strict=True):  # ultralytics bias_init
            with torch.no_grad():
                a[-1].bias.fill_(1.0)
                b[-1].bias[:nc] = math.log(5 / nc / (640 / s) ** 2)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        b = feats[0].shape[0]
        maps = [torch.cat([bx(f), cl(f)], 1).view(b, 4 * self.reg_max + self.nc, -1)
                for f, bx, cl in zip(feats, self.cv2, self.cv3, strict=True)]
        x = torch.cat(maps, 2)
        box, cls = x.split((4 * self.reg_max, self.nc), 1)
        anchors, strides = _make_anchors(feats, self.strides)
        n = box.shape[-1]
        dist = self.dfl(box.view(b, 4, self.reg_max, n).transpose(2, 1).softmax(1)).view(b, 4, n)
        lt, rb = dist.chunk(2, 1)
        x1y1, x2y2 = anchors - lt, anchors + rb
        xywh = torch.cat([(x1y1 + x2y2) / 2, x2y2 - x1y1], 1) * strides
        return torch.cat([xywh, cls.sigmoid()], 1)


def _make_anchors(feats: list[torch.Tensor], strides: tuple[int, ...]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres ``[2, N]`` (grid units, +0.5) and their strides ``[1, N]``."""
    points, stride_list = [], []
    for f, s in zip(feats, strides, strict=True):
        h, w = f.shape[-2:]
        sy = torch.arange(h, dtype=f.dtype) + 0.5
        sx = torch.arange(w, dtype=f.dtype) + 0.5
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xx, yy), 0).view(2, -1))
        stride_list.append(torch.full((1, h * w), float(s), dtype=f.dtype))
    return torch.cat(points, 1), torch.cat(stride_list, 1)


def _ch(c: int) -> int:
    """Channels at the n scale: ``ceil(min(c, max) * width / 8) * 8`` (ultralytics
    ``make_divisible``)."""
    return int(math.ceil(min(c, _MAX_CHANNELS) * _WIDTH / 8) * 8)


def _n(n: int) -> int:
    """Repeats at the n scale: ``max(round(n * depth), 1)``."""
    return max(round(n * _DEPTH), 1)
