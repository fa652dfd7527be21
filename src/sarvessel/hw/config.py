"""Configuration of the FINN flow for the Kria KV260: one validated dataclass.

Every field is documented by a ``#:`` comment; closed option sets are str-enums; values derived
from the fields (clock period, tiles per scene, target cycles per tile, fabric budget) are
methods, so a config file only holds choices, never numbers that must agree with each other.
:meth:`HWConfig.from_file` reads JSON or YAML, rejects unknown keys and wrong types, and resolves
relative paths against the folder of the config file (as finn-plus ``construct_from`` /
``forbid_extra_keys`` / ``correct_paths`` do).

>>> cfg = HWConfig()
>>> cfg.tiles_per_scene()
3630
>>> round(cfg.required_tiles_per_s(), 1)
363.0
>>> cfg.target_cycles_per_tile()
413223
>>> cfg.folding_target_cycles()
330578
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sarvessel.hw.errors import HWConfigError
from sarvessel.runtime.contract import OVERLAP, TILE_SIZE
from sarvessel.runtime.tiling import count_tiles

__all__ = [
    "ESTIMATE_STEPS",
    "KV260_FABRIC",
    "Board",
    "Fabric",
    "HWConfig",
    "ShellFlow",
    "SwgRamStyle",
    "ThresholdRamStyle",
    "VerifyStep",
]

# Metadata keys the steps write on the models they hand on (read by the estimate and build).
#: Metadata key on the dataflow model that points at the saved parent graph.
PARENT_MODEL_PROP = "sarvessel_parent_model"
#: Metadata key recording the folding target that was finally used (cycles per tile).
FOLDING_TARGET_PROP = "sarvessel_folding_target_cycles"
#: Metadata key recording whether the final folding fits the resource budget ("1"/"0").
FOLDING_FITS_PROP = "sarvessel_folding_fits_budget"
#: Metadata key recording ``cfg.swg_ram_style`` as applied by the folding step.
SWG_RAM_STYLE_PROP = "sarvessel_swg_ram_style"



class Board(str, Enum):
    """Boards the flow targets (FINN board names)."""

    KV260_SOM = "KV260_SOM"


class ShellFlow(str, Enum):
    """FINN shell flows (``finn.builder.build_dataflow_config.ShellFlowType`` values)."""

    VIVADO_ZYNQ = "vivado_zynq"


class SwgRamStyle(str, Enum):
    """Memory of the sliding-window generators' line buffers (``ConvolutionInputGenerator``
    ``ram_style``); ``auto`` picks per generator
    (:func:`sarvessel.hw.steps.apply_swg_ram_style`)."""

    AUTO = "auto"
    DISTRIBUTED = "distributed"
    BLOCK = "block"


class ThresholdRamStyle(str, Enum):
    """Memory of the threshold tables of MVAU/VVAU/Thresholding layers (FINN's
    ``ram_style_thresholds``), set explicitly: FINN's own default "auto" leaves the choice to
    Vivado and its resource model then counts nothing for them."""

    DISTRIBUTED = "distributed"
    BLOCK = "block"


class VerifyStep(str, Enum):
    """Verification steps ``sarvessel hw build`` asks finn-plus to run (the values of
    ``finn.builder.build_dataflow_config.VerificationStepType`` that check the hardware below the
    Python model; both need Vivado's xsim)."""

    #: every layer's generated RTL/HLS IP simulated on its own (after HW code generation)
    NODE_BY_NODE_RTLSIM = "node_by_node_rtlsim"
    #: the stitched accelerator (FIFOs and width converters included) simulated as one IP
    STITCHED_IP_RTLSIM = "stitched_ip_rtlsim"


@dataclass(frozen=True)
class Fabric:
    """Programmable-logic totals of one device (docs/references.md §4)."""

    lut: int
    ff: int
    bram36: int
    uram: int
    dsp: int

    def totals(self) -> dict[str, int]:
        """Totals keyed as in the resource reports (BRAM counted as 18 Kb halves)."""
        return {
            "LUT": self.lut,
            "FF": self.ff,
            "BRAM_18K": 2 * self.bram36,
            "URAM": self.uram,
            "DSP": self.dsp,
        }


#: Zynq UltraScale+ K26 (Kria KV260 SOM) fabric.
KV260_FABRIC = Fabric(lut=117_120, ff=234_240, bram36=144, uram=64, dsp=1_248)

#: Steps of ``sarvessel hw estimate``: QONNX to a folded, specialised dataflow graph + reports.
ESTIMATE_STEPS: tuple[str, ...] = (
    "tidy_up",
    "qonnx_to_finn",
    "streamline",
    "convert_to_hw",
    "minimize_bit_width_initial",
    "create_dataflow_partition",
    "specialize_layers",
    "set_folding",
    "minimize_bit_width",
    "generate_estimates",
)

_BOARD_PARTS = {Board.KV260_SOM: "xck26-sfvc784-2LV-c"}


@dataclass
class HWConfig:
    """Everything the hardware flow needs to know; see the module docstring."""

    #: Board the accelerator is built for; selects the Zynq shell and the fabric totals.
    board: Board = Board.KV260_SOM
    #: Xilinx part number; must match the board.
    fpga_part: str = "xck26-sfvc784-2LV-c"
    #: Shell flow used by ``sarvessel hw build``.
    shell_flow: ShellFlow = ShellFlow.VIVADO_ZYNQ
    #: Target clock of the dataflow accelerator (MHz). 150 MHz until a routed build closes
    #: timing higher: finn-examples close their KV260 designs at 100 MHz.
    clock_mhz: float = 150.0
    #: Share of the cycle target the folding keeps free (0..1): layers are folded to
    #: ``target_cycles_per_tile * (1 - cycle_margin)`` so stalls, FIFO effects and a lower
    #: achieved clock do not miss the scene target at once.
    cycle_margin: float = 0.20
    #: Tile edge the accelerator is built for (px); the model input is [1, C, tile, tile].
    tile_size: int = TILE_SIZE
    #: Overlap between neighbouring tiles (px), as in :func:`sarvessel.runtime.tiling.tile_grid`.
    tile_overlap: int = OVERLAP
    #: Scene height used for the scene-time target and estimate (px); xView3 average.
    scene_height: int = 24_400
    #: Scene width used for the scene-time target and estimate (px); xView3 average.
    scene_width: int = 29_400
    #: Target time for one scene (s), overlap included. Ignored when target_tiles_per_s is set.
    target_scene_seconds: float | None = 10.0
    #: Target throughput (tiles/s); overrides target_scene_seconds when set.
    target_tiles_per_s: float | None = None
    #: Largest share of the device's LUTs the accelerator may use (0..1).
    lut_budget: float = 0.70
    #: Largest share of BRAM36, and separately of URAM, the accelerator may use (0..1).
    bram_budget: float = 0.80
    #: Largest share of DSP slices the accelerator may use (0..1).
    dsp_budget: float = 0.90
    #: Each folding attempt over budget multiplies the cycle target by this (> 1).
    folding_relax_factor: float = 1.15
    #: Folding attempts before giving up on the budget (the last attempt is kept and reported).
    max_folding_attempts: int = 8
    #: Line-buffer memory of the sliding-window generators: "distributed" (LUTRAM, FINN's
    #: default), "block" (BRAM) or "auto" (per generator: BRAM where it saves more of the LUT
    #: budget than it spends of the BRAM budget, within the BRAM budget; see
    #: :func:`sarvessel.hw.steps.apply_swg_ram_style`). Set with the folding, so the budget check
    #: of each folding attempt and the estimate include it. The default keeps FINN's LUTRAM, so
    #: the shipped models' quoted estimates and builds stay as they are; a body with wide
    #: dilated depthwise convs needs "auto" to meet the throughput target.
    swg_ram_style: SwgRamStyle = SwgRamStyle.DISTRIBUTED
    #: Widest MVAU weight stream SetFolding may create (bits; FINN's mvau_wwidth_max).
    mvau_wwidth_max: int = 1024
    #: Threshold-table memory of every thresholding layer, set explicitly (see
    #: :class:`ThresholdRamStyle`); FINN's resource model prices "distributed" (storage and
    #: comparators in LUTs) and counts nothing for "block".
    ram_style_thresholds: ThresholdRamStyle = ThresholdRamStyle.DISTRIBUTED
    #: HLS MVAUs whose weight + input bits reach this many multiply in DSP slices instead of
    #: LUTs (FINN ``resType="dsp"``); 0 keeps every HLS MVAU in LUTs. 16 = the 8-bit x 8-bit
    #: first conv, whose LUT multipliers cost ~3x a 4-bit layer's per MAC while the DSPs idle.
    mvau_dsp_min_bits: int = 16
    #: LUTs allowed for the Zynq shell around the accelerator: FINN's IODMAs (input and
    #: output, 128-bit AXI masters), the AXI SmartConnect to the PS, the AXI-lite control
    #: interconnect and the reset block, none of which FINN has a resource model for. An
    #: allowance to replace with the first routed build's utilisation report.
    shell_allowance_lut: int = 6_000
    #: BRAM18s allowed for the shell (the IODMAs' and the interconnect's buffers).
    shell_allowance_bram18: int = 8
    #: Verification steps ``sarvessel hw build`` runs through finn-plus (Vivado xsim), each on
    #: the input/expected tensors of ``rtlsim_verify_tiles`` tiles from the Python graph;
    #: empty: none.
    verify_steps: tuple[str, ...] = (VerifyStep.NODE_BY_NODE_RTLSIM.value,
                                     VerifyStep.STITCHED_IP_RTLSIM.value)
    #: FINN datatype of the graph input; annotated when the QONNX input carries none.
    input_datatype: str = "UINT8"
    #: Non-HW op types allowed after the dataflow partition (run on the CPU).
    cpu_tail_ops: tuple[str, ...] = ("Transpose", "Mul", "Add", "Reshape")
    #: Non-HW op types allowed before the dataflow partition (layout only).
    cpu_head_ops: tuple[str, ...] = ("Transpose", "Reshape")
    #: Where every artefact goes (intermediate models, reports, deploy package).
    output_dir: Path = Path("build/hw")
    #: Steps to run, by registered name (see :mod:`sarvessel.hw.steps`).
    steps: tuple[str, ...] = ESTIMATE_STEPS
    #: Resume from the saved model of the step before this one (None: start at the beginning).
    start_step: str | None = None
    #: Stop after this step (None: run to the end).
    stop_step: str | None = None
    #: Save ``intermediate_models/<step>.onnx`` after every step (needed for resuming).
    save_intermediate_models: bool = True
    #: After the last step, run this many SAR-like uint8 tiles through the QONNX model and the
    #: HW graphs in Python and compare (0: skip; ~40 s per 512 px tile).
    verify_tiles: int = 0
    #: Tiles (of ``tile_size``) the rtlsim verification of ``hw build`` simulates: SAR-like
    #: uint8 tiles, expected outputs from the QONNX model's Python execution.
    rtlsim_verify_tiles: int = 1
    #: Parallel Vivado / HLS jobs for ``hw build``.
    vivado_jobs: int = 4

    def __post_init__(self) -> None:
        self._coerce()
        self.validate()

    # -- derived values ---------------------------------------------------------------------

    def clock_hz(self) -> float:
        """Clock frequency (Hz)."""
        return self.clock_mhz * 1e6

    def clock_period_ns(self) -> float:
        """Clock period (ns), as FINN's ``synth_clk_period_ns``."""
        return 1e3 / self.clock_mhz

    def fabric(self) -> Fabric:
        """Fabric totals of :attr:`board`."""
        return KV260_FABRIC

    def tiles_per_scene(self) -> int:
        """Tiles in one scene of :attr:`scene_height` × :attr:`scene_width` with the overlap."""
        return count_tiles(
            self.scene_height, self.scene_width, tile=self.tile_size, overlap=self.tile_overlap
        )

    def scene_megapixels(self) -> float:
        """Scene size (MPx)."""
        return self.scene_height * self.scene_width / 1e6

    def required_tiles_per_s(self) -> float:
        """Throughput the folding aims at (tiles/s)."""
        if self.target_tiles_per_s is not None:
            return float(self.target_tiles_per_s)
        assert self.target_scene_seconds is not None  # validate() guarantees one is set
        return self.tiles_per_scene() / self.target_scene_seconds

    def target_cycles_per_tile(self) -> int:
        """Largest initiation interval per tile (clock cycles) that meets the target."""
        return max(1, math.floor(self.clock_hz() / self.required_tiles_per_s()))

    def folding_target_cycles(self) -> int:
        """Cycles per tile the folding aims at: the target less :attr:`cycle_margin`."""
        return max(1, math.floor(self.target_cycles_per_tile() * (1.0 - self.cycle_margin)))

    def shell_allowance(self) -> dict[str, float]:
        """The shell allowance keyed as in the resource reports."""
        return {"LUT": float(self.shell_allowance_lut),
                "BRAM_18K": float(self.shell_allowance_bram18), "URAM": 0.0, "DSP": 0.0}

    def budgets(self) -> dict[str, float]:
        """Largest allowed share of each resource, keyed as in the resource reports."""
        return {
            "LUT": self.lut_budget,
            "BRAM_18K": self.bram_budget,
            "URAM": self.bram_budget,
            "DSP": self.dsp_budget,
        }

    def intermediate_dir(self) -> Path:
        """Folder of ``<step>.onnx`` checkpoints."""
        return self.output_dir / "intermediate_models"

    def report_dir(self) -> Path:
        """Folder of the estimate reports."""
        return self.output_dir / "report"

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base_dir: Path | None = None) -> HWConfig:
        """Build from a plain mapping; unknown keys and wrong types raise :class:`HWConfigError`.

        Relative paths are resolved against ``base_dir`` (the config file's folder). The default
        is the current directory.
        """
        if not isinstance(data, dict):
            raise HWConfigError(f"config must be a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise HWConfigError(
                f"unknown config key(s) {unknown}; known keys: {sorted(names)}"
            )
        cfg = cls(**data)
        if base_dir is not None and not cfg.output_dir.is_absolute():
            cfg.output_dir = (base_dir / cfg.output_dir).resolve()
        return cfg

    @classmethod
    def from_file(cls, path: Path | str) -> HWConfig:
        """Read a ``.json``, ``.yaml`` or ``.yml`` config; paths are relative to its folder."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise HWConfigError(f"{path}: cannot read config: {exc}") from exc
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            elif path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                raise HWConfigError(f"{path}: config must be .json, .yaml or .yml")
        except (ValueError, ImportError) as exc:
            if isinstance(exc, HWConfigError):
                raise
            raise HWConfigError(f"{path}: cannot parse config: {exc}") from exc
        try:
            return cls.from_dict(data or {}, base_dir=path.parent.resolve())
        except HWConfigError as exc:
            raise HWConfigError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (enums as values, paths as strings, tuples as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Enum):
                v = v.value
            elif isinstance(v, Path):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    def replace(self, **changes: Any) -> HWConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    # -- validation -------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise :class:`HWConfigError` naming the first inconsistent field."""
        if _BOARD_PARTS[self.board] != self.fpga_part:
            raise HWConfigError(
                f"fpga_part {self.fpga_part!r} does not match board {self.board.value} "
                f"({_BOARD_PARTS[self.board]})"
            )
        if not 10.0 <= self.clock_mhz <= 500.0:
            raise HWConfigError(f"clock_mhz must be in [10, 500], got {self.clock_mhz}")
        if self.tile_size <= 0 or self.tile_size % 8:
            raise HWConfigError(f"tile_size must be a positive multiple of 8, got {self.tile_size}")
        if not 0 <= self.tile_overlap < self.tile_size:
            raise HWConfigError(
                f"tile_overlap must be in [0, tile_size), got {self.tile_overlap}"
            )
        if self.scene_height <= 0 or self.scene_width <= 0:
            raise HWConfigError("scene_height and scene_width must be positive")
        if self.target_tiles_per_s is None and self.target_scene_seconds is None:
            raise HWConfigError("set target_scene_seconds or target_tiles_per_s")
        for name in ("target_tiles_per_s", "target_scene_seconds"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise HWConfigError(f"{name} must be positive, got {v}")
        for name in ("lut_budget", "bram_budget", "dsp_budget"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise HWConfigError(f"{name} must be in (0, 1], got {v}")
        if self.folding_relax_factor <= 1.0:
            raise HWConfigError(
                f"folding_relax_factor must be > 1, got {self.folding_relax_factor}"
            )
        if self.max_folding_attempts < 1:
            raise HWConfigError("max_folding_attempts must be >= 1")
        if self.rtlsim_verify_tiles < 1:
            raise HWConfigError("rtlsim_verify_tiles must be >= 1")
        if self.verify_tiles < 0:
            raise HWConfigError(f"verify_tiles must be >= 0, got {self.verify_tiles}")
        if not 0.0 <= self.cycle_margin < 1.0:
            raise HWConfigError(f"cycle_margin must be in [0, 1), got {self.cycle_margin}")
        if self.mvau_dsp_min_bits < 0:
            raise HWConfigError("mvau_dsp_min_bits must be >= 0")
        if self.shell_allowance_lut < 0 or self.shell_allowance_bram18 < 0:
            raise HWConfigError("shell allowances must be >= 0")
        known = {v.value for v in VerifyStep}
        bad = [v for v in self.verify_steps if v not in known]
        if bad:
            raise HWConfigError(f"verify_steps {bad} unknown; known: {sorted(known)}")
        if self.mvau_wwidth_max < 1:
            raise HWConfigError("mvau_wwidth_max must be >= 1")
        if not self.steps:
            raise HWConfigError("steps must not be empty")
        for name in ("start_step", "stop_step"):
            v = getattr(self, name)
            if v is not None and v not in self.steps:
                raise HWConfigError(f"{name} {v!r} is not one of steps {list(self.steps)}")
        if (
            self.start_step is not None
            and self.stop_step is not None
            and self.steps.index(self.stop_step) < self.steps.index(self.start_step)
        ):
            raise HWConfigError(f"stop_step {self.stop_step!r} comes before {self.start_step!r}")

    def _coerce(self) -> None:
        """Turn JSON values into the declared types, or raise naming the field."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            setattr(self, f.name, _coerce_value(f.name, value, hints[f.name]))


def _coerce_value(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce_value(name, value, inner)
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise HWConfigError(f"{name} must be a list, got {value!r}")
        for v in value:
            if not isinstance(v, str):
                raise HWConfigError(f"{name} must be a list of strings, got {v!r}")
        return tuple(value)
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            choices = [m.value for m in hint]
            raise HWConfigError(f"{name} must be one of {choices}, got {value!r}") from None
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise HWConfigError(f"{name} must be a path, got {value!r}")
        return Path(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise HWConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HWConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise HWConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise HWConfigError(f"{name} must be a string, got {value!r}")
        return value
    return value

