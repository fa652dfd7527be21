"""Configuration of the detector: one dataclass, every field documented, derived values as methods.

The same config builds the quantised network and its float twin (``quantized=False``), is stored
inside every checkpoint, and gives the JSON sidecar fields of the network contract.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sarvessel.runtime.contract import (
    CONF_THRESHOLD,
    INPUT_SCALE_RANGE,
    IOU_THRESHOLD,
    SUBGRIDS,
    TILE_SIZE,
)
from sarvessel.runtime.errors import SarvesselError


class ConfigError(SarvesselError):
    """A model configuration is inconsistent or has unknown keys."""


#: BitWidths fields that are 0/1 switches, not bit widths.
_FLAGS = ("dw_in_per_channel", "weight_mse")


@dataclass
class BitWidths:
    """Integer bit widths of the quantised network (3..8 each)."""

    #: Weights of the first conv (its input is the raw uint8 image).
    first_weight: int = 8
    #: Weights of every body and head conv except the first and last.
    weight: int = 4
    #: Activations (QuantReLU outputs) of the body and head.
    act: int = 4
    #: Activation feeding the last conv (the last layer's input).
    last_act: int = 8
    #: Weights of the last conv (the raw output layer).
    last_weight: int = 8
    #: Weights of the depthwise 3x3 convs of separable blocks; 0: same as ``weight``. Why a
    #: width of its own: a depthwise filter has only 9 weights per channel and no sum over
    #: input channels to average its rounding out, so 4 bits cost it far more than a dense
    #: conv; it is ~8 % of a separable block's MACs, so 8 bits there are cheap in a VVAU.
    dw_weight: int = 0
    #: Activations after the depthwise convs (the 1x1 convs' inputs); 0: same as ``act``.
    #: Wider ones widen the 1x1 convs' multipliers, the bulk of a separable body's LUTs.
    dw_act: int = 0
    #: 1: one learned activation scale per channel (not one per tensor) on the activations
    #: that feed depthwise convs. Why: a depthwise conv sums no input channels, so a channel
    #: whose range is far below the tensor's maximum keeps only one or two of its 4-bit levels
    #: and nothing averages that rounding out. FINN takes the per-channel scales exactly
    #: (MultiThreshold holds per-channel thresholds; the output Mul moves past MaxPool and the
    #: depthwise conv and is absorbed into the next thresholds), so the hardware cost is nil.
    dw_in_per_channel: int = 0
    #: 1: every conv's per-channel weight scale starts at the value that minimises the
    #: weights' rounding error (not at max|w|) and is then learned with the weights. Why: at
    #: 4 bits (levels -7..7) a max|w| scale spends most levels on a few outlier weights; a
    #: clipped, learned scale (as in LSQ) keeps more resolution where the weights are. FINN
    #: sees only a different float scale per channel, so the hardware cost is nil.
    weight_mse: int = 0

    @classmethod
    def parse(cls, spec: str) -> BitWidths:
        """``'weight=4,dw_weight=8'`` -> BitWidths (unnamed fields keep their defaults)."""
        bits = cls()
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, _, val = item.partition("=")
            key = key.strip()
            if key not in {f.name for f in fields(cls)} or not val.strip().isdigit():
                raise ConfigError(f"bit widths: bad entry {item!r} (want name=int with a name "
                                  f"in {', '.join(f.name for f in fields(cls))})")
            setattr(bits, key, int(val))
        bits.validate()
        return bits

    def depthwise_weight(self) -> int:
        """Bit width of depthwise conv weights (``dw_weight``, or ``weight`` when 0)."""
        return self.dw_weight or self.weight

    def depthwise_act(self) -> int:
        """Bit width of the activations after depthwise convs (``dw_act``, or ``act`` when 0)."""
        return self.dw_act or self.act

    def validate(self) -> None:
        """Raise :class:`ConfigError` when a width is outside 2..8 (the ``dw_`` ones may be 0)."""
        for flag in _FLAGS:
            if getattr(self, flag) not in (0, 1):
                raise ConfigError(f"{flag}={getattr(self, flag)!r} must be 0 or 1")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _FLAGS or (f.name.startswith("dw_") and v == 0):
                continue
            if not isinstance(v, int) or not 2 <= v <= 8:
                raise ConfigError(f"bit width {f.name}={v!r} must be an integer in 2..8")


@dataclass
class ModelConfig:
    """Shape of the detector: a plain conv chain (FINN-friendly, docs/references.md §5), one stride,
    DFL head."""

    #: Short model name (also the exported file stem).
    name: str = "ssdd_w4a4"
    #: Input channels (1 grey for SSDD, 2 for VV/VH scenes).
    in_channels: int = 1
    #: Class names; nc is their count.
    class_names: tuple[str, ...] = ("ship",)
    #: Output channels of each body block (3x3 conv + BN + ReLU).
    widths: tuple[int, ...] = (16, 32, 48, 64, 64)
    #: Stride of the first conv (1 or 2): a stride-2 stem keeps the costly full-resolution
    #: activations out of the network.
    stem_stride: int = 2
    #: Number of leading body blocks followed by MaxPool2d(2).
    pools: int = 2
    #: Dilation of each body block's 3x3 conv (empty: all 1). Dilated convs after the last
    #: pool grow the receptive field at no extra cost: SSDD's large inshore ships (100-380 px)
    #: outgrow the ~65 px field of a plain 3-conv stride-8 chain. FINN's sliding-window
    #: generator implements dilation (``ConvolutionInputGenerator`` ``Dilation``).
    dilations: tuple[int, ...] = ()
    #: Index of the first body block built depthwise-separable (a depthwise 3x3 conv -> BN ->
    #: ReLU, then a 1x1 conv -> BN -> ReLU); 0: none, every block a full 3x3 conv. The
    #: stem (block 0) is always a full conv. Why: a full 3x3 conv costs 9*C*C MACs a pixel, a
    #: separable one 9*C + C*C, so at the same budget the stride-8 features can be ~2.5x wider
    #: (MobileNet-v1; FINN builds the depthwise half as a VectorVectorActivation).
    separable_from: int = 0
    #: Widths of the context branch's blocks (empty: no branch). The body output is
    #: max-pooled to twice the output stride, run through these [3x3 conv -> BN -> ReLU] blocks,
    #: upsampled (nearest) back and concatenated with the body output before the head. Why: a
    #: conv at twice the stride costs a quarter of the MACs, so the same budget buys four times
    #: the weights and a wider view (quays, moored rows of ships). The branch ends in the
    #: body's last ReLU module, so both halves of the concatenation share one quantizer, as
    #: FINN's StreamingConcat needs.
    context_widths: tuple[int, ...] = ()
    #: Dilation of each context block (empty: all 1).
    context_dilations: tuple[int, ...] = ()
    #: Channels of the fine-feature skip (0: none). The last pooled block's output (stride
    #: ``stride / 2``, before its pool) goes through a 2x2 stride-2 conv -> BN and the body's
    #: last ReLU module, and is concatenated with the body output before the head. Why: ships
    #: narrower than a cell and ships moored side by side are told apart by detail that the
    #: pools drop; a 2x2 stride-2 conv keeps each cell's four stride-4 positions in its
    #: channels, for a few MACs. One shared quantizer, as for the context branch.
    skip_width: int = 0
    #: Width of each head branch (box and class); head convs have 2*head_width channels.
    head_width: int = 32
    #: Kernel size of the first head conv (1 or 3).
    head_kernel: int = 1
    #: DFL bins per box side.
    reg_max: int = 16
    #: Anchor points per output cell along each axis (1: one per cell, YOLOv8's head). With
    #: ``subgrid`` r the head's last conv emits r*r predictions per cell, which the CPU
    #: rearranges (pixel shuffle) into a grid of stride ``stride / r``; box distances stay in
    #: units of ``stride``. Why: two ships moored closer than two cells, and boats narrower
    #: than one cell, compete for the same anchors at stride 8; a finer anchor grid separates
    #: them for the cost of the last 1x1 conv alone (the body and its context are unchanged).
    subgrid: int = 1
    #: Tile size (pixels) the model is trained and run on.
    tile_size: int = TILE_SIZE
    #: Factor every image is resampled by before tiling, in training and in the runtime
    #: (sidecar ``input_scale``; 1 is native pixels). Why: a finer effective grid separates
    #: ships moored side by side, at the cost of more tiles and less context per tile.
    input_scale: float = 1.0
    #: Build Brevitas quantised layers (False: the plain float twin).
    quantized: bool = True
    #: Bit widths of the quantised layers.
    bits: BitWidths = field(default_factory=BitWidths)
    #: Bands of the input channels, in order (JSON sidecar ``bands``).
    bands: tuple[str, ...] = ("grey",)

    def __post_init__(self) -> None:
        if isinstance(self.bits, dict):
            self.bits = BitWidths(**self.bits)
        self.widths = tuple(int(w) for w in self.widths)
        self.dilations = tuple(int(d) for d in self.dilations)
        self.context_widths = tuple(int(w) for w in self.context_widths)
        self.context_dilations = tuple(int(d) for d in self.context_dilations)
        self.class_names = tuple(self.class_names)
        self.bands = tuple(self.bands)
        self.validate()

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def stride(self) -> int:
        """Output stride in pixels: stem_stride * 2**pools."""
        return self.stem_stride * 2 ** self.pools

    def block_dilations(self) -> tuple[int, ...]:
        """Dilation of every body block (1 where ``dilations`` is empty)."""
        return self.dilations or (1,) * len(self.widths)

    def context_block_dilations(self) -> tuple[int, ...]:
        """Dilation of every context block (1 where ``context_dilations`` is empty)."""
        return self.context_dilations or (1,) * len(self.context_widths)

    @property
    def head_in_channels(self) -> int:
        """Channels into the head: the body's last width, plus the context branch's."""
        return (self.widths[-1] + (self.context_widths[-1] if self.context_widths else 0)
                + self.skip_width)

    def receptive_field(self) -> int:
        """Receptive field of one output cell in input pixels (body, context branch, head)."""
        rf, jump = 1, 1
        for i, d in enumerate(self.block_dilations()):
            stride = self.stem_stride if i == 0 else 1
            rf += 2 * d * jump
            jump *= stride
            if i < self.pools:
                rf += jump
                jump *= 2
        if self.context_widths:
            rf += jump  # the branch's max-pool
            rf += sum(2 * d * 2 * jump for d in self.context_block_dilations())
        return rf + (self.head_kernel - 1) * jump

    @property
    def cell_channels(self) -> int:
        """Channels of one anchor's prediction: 4*reg_max DFL logits then nc class logits."""
        return 4 * self.reg_max + self.nc

    @property
    def out_channels(self) -> int:
        """Channels of the raw (packed) output: ``subgrid**2`` anchors' predictions per cell,
        in ``torch.nn.functional.pixel_shuffle`` order."""
        return self.subgrid ** 2 * self.cell_channels

    def validate(self) -> None:
        """Raise :class:`ConfigError` on an inconsistent configuration."""
        if not self.widths or any(w < 1 for w in self.widths):
            raise ConfigError(f"widths must be positive, got {self.widths}")
        if not 0 <= self.pools <= len(self.widths):
            raise ConfigError(f"pools={self.pools} must be in 0..{len(self.widths)}")
        if self.in_channels < 1 or self.nc < 1 or self.reg_max < 2 or self.head_width < 1:
            raise ConfigError("in_channels, class_names, reg_max>=2 and head_width must be set")
        if self.dilations and (len(self.dilations) != len(self.widths)
                               or any(d < 1 for d in self.dilations)):
            raise ConfigError(f"dilations {self.dilations} must be one positive integer per body "
                              f"block ({len(self.widths)})")
        if self.separable_from < 0 or self.separable_from >= len(self.widths):
            raise ConfigError(f"separable_from={self.separable_from} must be 0 (none) or a body "
                              f"block index in 1..{len(self.widths) - 1}")
        if self.dilations and any(d != 1 for d in self.dilations[:self.pools + 1]):
            raise ConfigError("dilations must be 1 up to the last pooled block and the stem")
        if any(w < 1 for w in self.context_widths) or (
                self.context_dilations and (len(self.context_dilations) != len(self.context_widths)
                                            or any(d < 1 for d in self.context_dilations))):
            raise ConfigError(f"context_widths {self.context_widths} must be positive, with one "
                              f"positive context_dilations entry each ({self.context_dilations})")
        if self.context_widths and self.pools >= len(self.widths):
            raise ConfigError("a context branch needs a body that ends in a ReLU block, not a pool")
        if self.context_widths and (self.tile_size // self.stride) % 2:
            raise ConfigError(f"a context branch needs tile_size {self.tile_size} to be a "
                              f"multiple of twice the stride {self.stride}")
        if self.skip_width < 0 or (self.skip_width and (
                self.context_widths or self.pools < 1 or self.pools >= len(self.widths)
                or self.separable_from)):
            raise ConfigError(f"skip_width={self.skip_width} needs a plain body with at least one "
                              "pool and a block after the last pool, and no context branch")
        if self.stem_stride not in (1, 2):
            raise ConfigError(f"stem_stride must be 1 or 2, got {self.stem_stride}")
        if self.subgrid not in SUBGRIDS or self.stride % self.subgrid:
            raise ConfigError(f"subgrid must be one of {SUBGRIDS} and divide the stride "
                              f"{self.stride}, got {self.subgrid}")
        if self.head_kernel not in (1, 3):
            raise ConfigError(f"head_kernel must be 1 or 3, got {self.head_kernel}")
        if self.tile_size % self.stride:
            raise ConfigError(f"tile_size {self.tile_size} is not a multiple of the stride")
        if len(self.bands) != self.in_channels:
            raise ConfigError(f"{len(self.bands)} bands named for {self.in_channels} channels")
        lo, hi = INPUT_SCALE_RANGE
        if not lo <= self.input_scale <= hi:
            raise ConfigError(f"input_scale must be in [{lo:g}, {hi:g}], got {self.input_scale}")
        self.bits.validate()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (inverse of :meth:`from_dict`)."""
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["dilations"] = list(self.dilations)
        d["context_widths"] = list(self.context_widths)
        d["context_dilations"] = list(self.context_dilations)
        d["class_names"] = list(self.class_names)
        d["bands"] = list(self.bands)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        extra = set(d) - known
        if extra:
            raise ConfigError(f"unknown model config keys: {sorted(extra)}")
        return cls(**d)

    def sidecar(self, *, conf_threshold: float = CONF_THRESHOLD,
                iou_threshold: float = IOU_THRESHOLD) -> dict[str, Any]:
        """The JSON sidecar fields of the network contract."""
        return {
            "name": self.name, "tile_size": self.tile_size, "channels": self.in_channels,
            "bands": list(self.bands), "stride": self.stride, "reg_max": self.reg_max,
            "nc": self.nc, "class_names": list(self.class_names),
            "conf_threshold": conf_threshold, "iou_threshold": iou_threshold,
            "input_scale": self.input_scale, "subgrid": self.subgrid,
            "bit_widths": asdict(self.bits) if self.quantized else None,
        }


def ssdd_config(**overrides: Any) -> ModelConfig:
    """The SSDD model: 1 grey channel, class ``ship``."""
    return ModelConfig(**{"name": "ssdd_w4a4", "in_channels": 1, "class_names": ("ship",),
                          "bands": ("grey",), **overrides})


def scene_config(**overrides: Any) -> ModelConfig:
    """The xView3 scene model: VV/VH channels, classes non_vessel / vessel / fishing."""
    return ModelConfig(**{"name": "xview3_w4a4", "in_channels": 2,
                          "class_names": ("non_vessel", "vessel", "fishing"),
                          "bands": ("VV_dB", "VH_dB"), **overrides})
