"""Analytical performance and resource estimates of a folded dataflow model.

Numbers come from FINN's analytical models (``exp_cycles_per_layer``, ``res_estimation``), in
two totals:

* **pre-FIFO**: the folded layers (threshold tables priced as ``cfg.ram_style_thresholds``, set
  explicitly by the folding step: with FINN's default "auto" its model counts them as 0), plus
  the analytical skip FIFOs of a branched model;
* **expected**: pre-FIFO plus what FINN inserts before building, priced by FINN's own models
  on a copy of the model (:func:`inserted_layers`: ``InsertDWC`` data-width converters and
  ``InsertFIFO(create_shallow_fifos=True)`` minimum-depth FIFOs, as finn-plus'
  ``step_set_fifo_depths`` does before sizing them), plus the shell allowance
  (``cfg.shell_allowance_lut`` / ``_bram18``: IODMAs, AXI interconnect, reset; FINN has no model
  for them). FIFO sizing can still deepen FIFOs, and FINN counts 0 LUT for FMPadding_rtl,
  Pool_hls and MVAU_rtl control logic: a routed build is the measurement.

The budget check of the folding and ``fits_budget`` use the expected totals. FINN has no
flip-flop model; FF is reported as unknown (None). Throughput assumes the dataflow
pipeline is limited by its slowest layer (initiation interval = max cycles per tile) at
``cfg.clock_mhz``; a scene is ``cfg.tiles_per_scene()`` tiles, overlap included.

A context branch adds three streaming layers finn-plus has no resource model for
(``DuplicateStreams``, ``UpsampleNearestNeighbour``, ``StreamingConcat``: counted as 0 LUT/BRAM,
a note says so) and one real cost FINN's pre-FIFO numbers miss: the Concat's direct input must
buffer the body output while the branch (max-pool, convs, upsampling) catches up.
:func:`branch_fifos` sizes that skip FIFO from the layers' row dependencies and prices it with
FINN's own ``StreamingFIFO_rtl`` model; it is listed as a layer (0 cycles) and counted in the
totals. FINN's FIFO sizing at build time sets the real depth.

Report outputs (:func:`write_report`): ``estimate.json``, ``estimate.txt`` (the rich table as
text) and ``estimate.png`` (per-layer cycles and resources).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from sarvessel.hw.config import HWConfig
from sarvessel.runtime.io.outputs import write_json

log = logging.getLogger(__name__)

#: Resources FINN estimates per layer, in report order.
RESOURCE_KEYS = ("LUT", "BRAM_18K", "URAM", "DSP")
#: HW layers FINN estimates as 0 LUT / 0 BRAM (no resource model in finn-plus).
_NO_RESOURCE_MODEL = ("DuplicateStreams_hls", "StreamingConcat_hls", "UpsampleNearestNeighbour_hls")
#: Layers FINN inserts before building (:func:`inserted_layers`).
_INSERTED_OPS = ("StreamingDataWidthConverter", "StreamingFIFO")
#: File names written by :func:`write_report`.
REPORT_JSON, REPORT_TXT, REPORT_PNG = "estimate.json", "estimate.txt", "estimate.png"


@dataclass
class LayerEstimate:
    """One HW layer: expected cycles per tile and resources."""

    name: str
    op_type: str
    cycles: int
    resources: dict[str, float]
    folding: dict[str, int] = field(default_factory=dict)
    #: Line-buffer memory of a sliding-window generator ("distributed" / "block"); None for
    #: other layers.
    ram_style: str | None = None


@dataclass
class EstimateReport:
    """The estimate of a whole accelerator; see the module docstring for the assumptions."""

    board: str
    fpga_part: str
    clock_mhz: float
    tile_size: int
    tile_overlap: int
    scene_height: int
    scene_width: int
    tiles_per_scene: int
    #: Cycle target derived from the throughput target (cycles per tile).
    target_cycles_per_tile: int
    #: Cycle target the folding finally used (relaxed when over budget), if recorded.
    folding_target_cycles: int | None
    #: Whether the folding met the resource budget, if recorded.
    fits_budget: bool | None
    layers: list[LayerEstimate]
    #: Summed resources; FF is None (no FINN model).
    totals: dict[str, float | None]
    #: Device totals (KV260) the shares are taken of.
    device: dict[str, int]
    #: totals / device per resource (FF None).
    shares: dict[str, float | None]
    budgets: dict[str, float]
    bottleneck: str
    bottleneck_cycles: int
    tiles_per_s: float
    #: Raw tile pixels through the accelerator per second (MPx/s, overlap counted twice).
    tile_mpx_per_s: float
    #: Scene pixels per second, overlap discounted (MPx/s).
    scene_mpx_per_s: float
    scene_seconds: float
    meets_target: bool
    notes: list[str] = field(default_factory=list)
    #: Expected totals: pre-FIFO + inserted DWCs/FIFOs + shell allowance (FF None).
    expected_totals: dict[str, float | None] = field(default_factory=dict)
    #: expected_totals / device.
    expected_shares: dict[str, float | None] = field(default_factory=dict)
    #: What the expected totals add to the pre-FIFO ones, by part ("data-width converters (13)",
    #: "FIFOs (36, minimum depth)", "shell allowance").
    additions: dict[str, dict[str, float]] = field(default_factory=dict)
    #: 1 - bottleneck / target cycles: the share of the cycle target left free.
    cycle_margin: float | None = None
    #: The margin the folding was asked to keep (``HWConfig.cycle_margin``).
    required_cycle_margin: float | None = None
    #: ``HWConfig.ram_style_thresholds`` the estimate priced.
    ram_style_thresholds: str | None = None
    #: ``HWConfig.swg_ram_style`` the folding applied ("auto" / "distributed" / "block"), if
    #: recorded; the per-generator result is each layer's ``ram_style``.
    swg_ram_style: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return asdict(self)


def total_resources(model: ModelWrapper, cfg: HWConfig) -> dict[str, float]:
    """Summed FINN resource estimates of every HW layer of ``model``, plus the skip FIFOs of
    its branches (:func:`branch_fifos`)."""
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    per_layer = list(res_estimation(model, fpgapart=cfg.fpga_part).values())
    per_layer += [f.resources for f in branch_fifos(model, cfg.fpga_part)]
    return {k: float(sum(r.get(k, 0) for r in per_layer)) for k in RESOURCE_KEYS}


def inserted_layers(model: ModelWrapper, cfg: HWConfig) -> list[LayerEstimate]:
    """The data-width converters and minimum-depth FIFOs FINN inserts before building, priced by
    FINN's own models: ``InsertDWC`` then ``InsertFIFO(create_shallow_fifos=True)`` (each followed
    by ``SpecializeLayers``, as finn-plus' ``step_set_fifo_depths``) on a deep copy of ``model``,
    which is left unchanged."""
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.transformation.general import GiveUniqueNodeNames

    before = {n.name for n in model.graph.node}
    m = copy.deepcopy(model)
    m = m.transform(InsertDWC()).transform(SpecializeLayers(cfg.fpga_part))
    m = m.transform(InsertFIFO(create_shallow_fifos=True))
    m = m.transform(SpecializeLayers(cfg.fpga_part))
    m = m.transform(GiveUniqueNodeNames(prefix="ins_"))
    res = res_estimation(m, fpgapart=cfg.fpga_part)
    out = []
    for node in m.graph.node:
        if not node.op_type.startswith(_INSERTED_OPS) or node.name in before:
            continue
        inst = getCustomOp(node)
        fold = {"depth": int(inst.get_nodeattr("depth"))} if "FIFO" in node.op_type else {}
        out.append(LayerEstimate(
            name=node.name, op_type=node.op_type, cycles=0, folding=fold,
            resources={k: float(res.get(node.name, {}).get(k, 0)) for k in RESOURCE_KEYS}))
    return out


def expected_resources(model: ModelWrapper, cfg: HWConfig) -> dict[str, float]:
    """Expected totals of a folded model: :func:`total_resources` + :func:`inserted_layers` +
    the shell allowance (what the folding step checks against the budget)."""
    totals = total_resources(model, cfg)
    for ly in inserted_layers(model, cfg):
        for k in RESOURCE_KEYS:
            totals[k] += ly.resources[k]
    for k, v in cfg.shell_allowance().items():
        totals[k] += v
    return totals


@dataclass
class BranchFifo:
    """The FIFO one input of a StreamingConcat needs so that the other inputs can catch up."""

    #: The StreamingConcat node and which of its inputs the FIFO sits on.
    concat: str
    input_index: int
    #: Feature-map rows (at the Concat's resolution) the FIFO must hold.
    rows: int
    #: FIFO depth (stream words) and word width (bits).
    depth: int
    width: int
    #: FINN's StreamingFIFO_rtl estimate for that depth and width.
    resources: dict[str, float]

    @property
    def name(self) -> str:
        """Layer name in the report."""
        return f"skip_fifo_{self.concat}_in{self.input_index}"


def branch_fifos(model: ModelWrapper, fpgapart: str) -> list[BranchFifo]:
    """Skip FIFOs of every StreamingConcat whose inputs fork from one DuplicateStreams.

    For each Concat output row ``r`` each input path needs the fork's rows up to ``need(r)``,
    found by walking the path back to the fork: a sliding-window generator reads
    ``r*stride + (k-1)*dilation`` of its (padded) input, padding shifts by its top border,
    nearest upsampling reads ``r*HI//HO``, every other layer maps row to row. An input whose
    need lags the others' by ``lag`` rows holds ``lag + 1`` rows of its stream. Concats whose
    paths cannot be traced (no common DuplicateStreams) are skipped.
    """
    from onnx import helper

    out = []
    for node in model.graph.node:
        if not node.op_type.startswith("StreamingConcat"):
            continue
        concat = getCustomOp(node)
        paths = [_rows_from_fork(model, t) for t in node.input]
        if any(p is None for p in paths) or len({fork for fork, _ in paths}) != 1:
            log.debug("%s: inputs not traced back to one DuplicateStreams", node.name)
            continue
        h = int(concat.get_normal_output_shape()[1])
        need = [[_apply(fns, r) for r in range(h)] for _, fns in paths]
        for i, mine in enumerate(need):
            lag = max(max(other[r] for other in need) - mine[r] for r in range(h))
            if lag <= 0:
                continue
            rows = lag + 1
            folded = [int(v) for v in concat.get_folded_input_shape(i)]
            depth = math.ceil(rows * math.prod(folded[:-1]) / h)
            fifo = helper.make_node(
                "StreamingFIFO_rtl", ["in"], ["out"], domain="finn.custom_op.fpgadataflow.rtl",
                depth=depth, folded_shape=folded,
                normal_shape=[int(v) for v in concat.get_normal_input_shape(i)],
                dataType=concat.get_input_datatype(i).name,
            )
            res = getCustomOp(fifo).node_res_estimation(fpgapart)
            out.append(BranchFifo(
                concat=node.name, input_index=i, rows=rows, depth=depth,
                width=int(concat.get_instream_width(i)),
                resources={k: float(res.get(k, 0)) for k in RESOURCE_KEYS},
            ))
    return out


def _rows_from_fork(model: ModelWrapper, tensor: str) -> tuple[str, list[Any]] | None:
    """(fork node name, row maps from the tensor back to the fork) or None if no fork."""
    fns: list[Any] = []
    while True:
        prod = model.find_producer(tensor)
        if prod is None:
            return None
        if prod.op_type.startswith("DuplicateStreams"):
            return prod.name, fns
        fns.append(_row_map(prod))
        tensor = prod.input[0]


def _row_map(node: Any) -> Any:
    """Last input row the layer reads to emit output row ``r`` (a function of ``r``)."""
    op = node.op_type
    if op.startswith("ConvolutionInputGenerator"):
        inst = getCustomOp(node)
        k, s, d = (inst.get_nodeattr(a)[0] for a in ("ConvKernelDim", "Stride", "Dilation"))
        h_in = inst.get_nodeattr("IFMDim")[0]
        return lambda r: min(r * s + (k - 1) * d, h_in - 1)
    if op.startswith("FMPadding"):
        inst = getCustomOp(node)
        top, h_in = inst.get_nodeattr("Padding")[0], inst.get_nodeattr("ImgDim")[0]
        return lambda r: min(max(r - top, 0), h_in - 1)
    if op.startswith("UpsampleNearestNeighbour"):
        inst = getCustomOp(node)
        hi, ho = inst.get_nodeattr("HI"), inst.get_nodeattr("HO")
        return lambda r: r * hi // ho
    return lambda r: r


def _apply(fns: list[Any], r: int) -> int:
    for fn in fns:
        r = fn(r)
    return r


def shares_of_device(totals: dict[str, float | None], cfg: HWConfig) -> dict[str, float | None]:
    """Each resource as a share of the device (0..1; None where unknown)."""
    dev = cfg.fabric().totals()
    return {k: (None if v is None else v / dev[k]) for k, v in totals.items()}


def over_budget(totals: dict[str, float], cfg: HWConfig) -> list[str]:
    """Resources whose share exceeds the budget, as ``"LUT 81.2% > 70%"`` strings."""
    shares = shares_of_device(dict(totals), cfg)
    out = []
    for k, limit in cfg.budgets().items():
        s = shares.get(k)
        if s is not None and s > limit:
            out.append(f"{k} {s:.1%} > {limit:.0%}")
    return out


def estimate_model(model: ModelWrapper, cfg: HWConfig) -> EstimateReport:
    """Estimate a folded, specialised dataflow model (the output of ``step_set_folding``)."""
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    from sarvessel.hw.config import FOLDING_TARGET_PROP, SWG_RAM_STYLE_PROP

    cycles = exp_cycles_per_layer(model)
    res = res_estimation(model, fpgapart=cfg.fpga_part)
    layers = []
    for node in model.graph.node:
        if node.name not in cycles:
            continue
        inst = getCustomOp(node)
        known = inst.get_nodeattr_types()
        folding = {
            a: int(inst.get_nodeattr(a)) for a in ("PE", "SIMD", "parallel_window") if a in known
        }
        swg = node.op_type.startswith("ConvolutionInputGenerator") and "ram_style" in known
        layers.append(
            LayerEstimate(
                name=node.name,
                op_type=node.op_type,
                cycles=int(cycles[node.name]),
                resources={k: float(res.get(node.name, {}).get(k, 0)) for k in RESOURCE_KEYS},
                folding=folding,
                ram_style=str(inst.get_nodeattr("ram_style")) if swg else None,
            )
        )
    if not layers:
        raise ValueError("model has no HW layers to estimate")
    fifos = branch_fifos(model, cfg.fpga_part)
    layers += [LayerEstimate(name=f.name, op_type="StreamingFIFO_rtl (skip, est.)", cycles=0,
                             resources=f.resources, folding={"depth": f.depth})
               for f in fifos]
    totals: dict[str, float | None] = {
        k: float(sum(ly.resources[k] for ly in layers)) for k in RESOURCE_KEYS
    }
    totals["FF"] = None
    inserted = inserted_layers(model, cfg)
    dwcs = [ly for ly in inserted if ly.op_type.startswith("StreamingDataWidthConverter")]
    shallow = [ly for ly in inserted if ly.op_type.startswith("StreamingFIFO")]
    additions = {
        f"data-width converters ({len(dwcs)})": _sum(dwcs),
        f"FIFOs ({len(shallow)}, minimum depth before sizing)": _sum(shallow),
        "shell allowance (IODMAs, AXI interconnect, reset)": cfg.shell_allowance(),
    }
    expected: dict[str, float | None] = {
        k: float(totals[k] or 0) + sum(a[k] for a in additions.values()) for k in RESOURCE_KEYS
    }
    expected["FF"] = None
    bott = max(layers, key=lambda ly: ly.cycles)
    tiles_per_s = cfg.clock_hz() / bott.cycles
    margin = 1.0 - bott.cycles / cfg.target_cycles_per_tile()
    scene_s = cfg.tiles_per_scene() / tiles_per_s
    ft = model.get_metadata_prop(FOLDING_TARGET_PROP)
    notes = [
        "pre-FIFO: FINN's models of the folded layers (threshold tables as "
        f"ram_style_thresholds={cfg.ram_style_thresholds.value}); expected: + FINN's models of "
        "the DWCs and minimum-depth FIFOs InsertDWC/InsertFIFO add, + the shell allowance "
        f"({cfg.shell_allowance_lut:,} LUT, {cfg.shell_allowance_bram18} BRAM18: an allowance, "
        "FINN has no model of IODMAs or AXI interconnect).",
        "FIFO sizing may deepen FIFOs; FINN counts 0 LUT for FMPadding_rtl, Pool_hls and "
        "MVAU_rtl control logic. FINN has no FF estimate (FF = None).",
    ]
    if cfg.ram_style_thresholds.value == "block":
        notes.append("ram_style_thresholds=block: FINN prices neither the BRAM nor the "
                     "comparators of HLS MVAU thresholds (counted as 0).")
    unmodelled = sorted({ly.op_type for ly in layers if ly.op_type in _NO_RESOURCE_MODEL})
    if unmodelled:
        notes.append(f"FINN has no resource model for {', '.join(unmodelled)} (counted as 0).")
    styles = [ly.ram_style for ly in layers if ly.ram_style is not None]
    swg_style = model.get_metadata_prop(SWG_RAM_STYLE_PROP)
    if styles:
        counts = ", ".join(f"{styles.count(s)} {s}" for s in sorted(set(styles)))
        notes.append(f"sliding-window line buffers: {counts}"
                     + (f" (swg_ram_style={swg_style})." if swg_style else "."))
    notes += [f"{f.name}: {f.rows} rows = {f.depth} x {f.width} bit words "
              f"(analytical skip-FIFO estimate, included in the totals)." for f in fifos]
    return EstimateReport(
        board=cfg.board.value,
        fpga_part=cfg.fpga_part,
        clock_mhz=cfg.clock_mhz,
        tile_size=cfg.tile_size,
        tile_overlap=cfg.tile_overlap,
        scene_height=cfg.scene_height,
        scene_width=cfg.scene_width,
        tiles_per_scene=cfg.tiles_per_scene(),
        target_cycles_per_tile=cfg.target_cycles_per_tile(),
        folding_target_cycles=int(ft) if ft else None,
        fits_budget=not over_budget(
            {k: v for k, v in expected.items() if v is not None}, cfg),
        layers=layers,
        totals=totals,
        device=cfg.fabric().totals(),
        shares=shares_of_device(totals, cfg),
        budgets=cfg.budgets(),
        bottleneck=bott.name,
        bottleneck_cycles=bott.cycles,
        tiles_per_s=tiles_per_s,
        tile_mpx_per_s=tiles_per_s * cfg.tile_size**2 / 1e6,
        scene_mpx_per_s=cfg.scene_megapixels() / scene_s,
        scene_seconds=scene_s,
        meets_target=margin >= cfg.cycle_margin - 1e-9,
        notes=notes,
        expected_totals=expected,
        expected_shares=shares_of_device(expected, cfg),
        additions=additions,
        cycle_margin=margin,
        required_cycle_margin=cfg.cycle_margin,
        ram_style_thresholds=cfg.ram_style_thresholds.value,
        swg_ram_style=swg_style or None,
    )


def _sum(layers: list[LayerEstimate]) -> dict[str, float]:
    return {k: float(sum(ly.resources[k] for ly in layers)) for k in RESOURCE_KEYS}


def render_table(report: EstimateReport) -> Any:
    """A ``rich`` renderable: per-layer table plus a summary."""
    from rich.console import Group
    from rich.table import Table

    t = Table(title=f"FINN estimate: {report.board} @ {report.clock_mhz:g} MHz")
    t.add_column("layer")
    t.add_column("op")
    t.add_column("fold", justify="right")
    t.add_column("ram")
    t.add_column("cycles/tile", justify="right")
    for k in RESOURCE_KEYS:
        t.add_column(k, justify="right")
    for ly in report.layers:
        fold = " ".join(f"{k[0]}{v}" for k, v in ly.folding.items() if k != "parallel_window")
        mark = " *" if ly.name == report.bottleneck else ""
        t.add_row(
            ly.name + mark,
            ly.op_type,
            fold,
            ly.ram_style or "",
            f"{ly.cycles:,}",
            *(f"{ly.resources[k]:,.0f}" for k in RESOURCE_KEYS),
        )
    t.add_section()
    t.add_row(
        "pre-FIFO total", "", "", "", "",
        *(f"{(report.totals[k] or 0):,.0f}" for k in RESOURCE_KEYS)
    )
    t.add_row(
        "pre-FIFO share of KV260", "", "", "", "",
        *(f"{(report.shares[k] or 0):.1%}" for k in RESOURCE_KEYS),
    )
    if report.expected_totals:
        t.add_section()
        for name, res in report.additions.items():
            t.add_row("+ " + name, "", "", "", "", *(f"{res[k]:,.0f}" for k in RESOURCE_KEYS))
        t.add_row(
            "expected total", "", "", "", "",
            *(f"{(report.expected_totals[k] or 0):,.0f}" for k in RESOURCE_KEYS),
        )
        t.add_row(
            "expected share of KV260", "", "", "", "",
            *(f"{(report.expected_shares[k] or 0):.1%}" for k in RESOURCE_KEYS),
        )
    s = Table(show_header=False, title="throughput")
    s.add_column("")
    s.add_column("", justify="right")
    rows = [
        ("bottleneck", f"{report.bottleneck} ({report.bottleneck_cycles:,} cycles)"),
        ("target cycles/tile", f"{report.target_cycles_per_tile:,}"),
        *([("cycle margin (required)",
            f"{report.cycle_margin:.1%} ({report.required_cycle_margin:.0%})")]
          if report.cycle_margin is not None else []),
        ("tiles/s", f"{report.tiles_per_s:,.1f}"),
        ("tile MPx/s", f"{report.tile_mpx_per_s:,.1f}"),
        ("scene MPx/s (overlap discounted)", f"{report.scene_mpx_per_s:,.1f}"),
        (
            f"scene {report.scene_height}x{report.scene_width} ({report.tiles_per_scene} tiles)",
            f"{report.scene_seconds:,.2f} s",
        ),
        ("meets target (with margin)", str(report.meets_target)),
        ("fits budget (expected totals)", str(report.fits_budget)),
    ]
    if report.swg_ram_style is not None:
        rows.append(("SWG line buffers (swg_ram_style)", report.swg_ram_style))
    for a, b in rows:
        s.add_row(a, b)
    return Group(t, s)


def report_text(report: EstimateReport, *, width: int = 150) -> str:
    """The rich table as plain text."""
    from rich.console import Console

    console = Console(record=True, width=width, file=_NullFile())
    console.print(render_table(report))
    return console.export_text()


def plot_report(report: EstimateReport, path: Path) -> Path:
    """Save a PNG of per-layer cycles (with the target) and LUT/BRAM/DSP shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [ly.name for ly in report.layers]
    x = range(len(names))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, 0.45 * len(names)), 8), sharex=True)
    ax1.bar(x, [ly.cycles for ly in report.layers], color="tab:blue")
    ax1.axhline(report.target_cycles_per_tile, color="tab:red", ls="--", label="target")
    ax1.set_ylabel("cycles per tile")
    ax1.legend()
    ax1.set_title(
        f"{report.board} @ {report.clock_mhz:g} MHz: {report.tiles_per_s:.0f} tiles/s, "
        f"scene {report.scene_seconds:.1f} s"
    )
    dev = report.device
    w = 0.27
    bars = (("LUT", "tab:green"), ("BRAM_18K", "tab:orange"), ("DSP", "tab:purple"))
    for i, (k, c) in enumerate(bars):
        ax2.bar(
            [xi + (i - 1) * w for xi in x],
            [100 * ly.resources[k] / dev[k] for ly in report.layers],
            width=w,
            color=c,
            label=k,
        )
    ax2.set_ylabel("% of KV260")
    ax2.legend()
    ax2.set_xticks(list(x))
    ax2.set_xticklabels(names, rotation=70, ha="right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(report: EstimateReport, out_dir: Path) -> dict[str, Path]:
    """Write JSON, text table and PNG into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / REPORT_JSON,
        "txt": out_dir / REPORT_TXT,
        "png": out_dir / REPORT_PNG,
    }
    write_json(paths["json"], report.to_dict())
    paths["txt"].write_text(report_text(report))
    plot_report(report, paths["png"])
    log.info("estimate reports written to %s", out_dir)
    return paths


def load_report(path: Path) -> EstimateReport:
    """Read an ``estimate.json`` back."""
    data = json.loads(Path(path).read_text())
    data["layers"] = [LayerEstimate(**ly) for ly in data["layers"]]
    return EstimateReport(**data)


class _NullFile:
    """A write sink so recording consoles print nothing."""

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        return None
