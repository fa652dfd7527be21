"""The steps of the FINN flow: plain ``step_x(model, cfg) -> model`` functions.

Each step is a docstring and a straight sequence of transformations, following
``finn/builder/build_dataflow_steps.py`` but called directly, because finn-plus refuses to import
its builder steps without ``XILINX_VIVADO`` (docs/references.md §5). Steps are registered by name
with :func:`register_step`, which rejects duplicates; :mod:`sarvessel.hw.flow` runs them and saves a
checkpoint after each.

The flow turns the cleaned QONNX detector (UINT8 input, Conv+BN+QuantReLU(+MaxPool) chain, final
conv with bias) into ONE dataflow partition; the depthwise convs of a separable body become
VVAUs. A detector with a context branch (the body output forks into a Concat and a MaxPool ->
convs -> nearest Resize x2 path that rejoins it; both Concat inputs leave one shared quantizer)
converts too: the fork becomes ``DuplicateStreams``, the Resize ``UpsampleNearestNeighbour`` and
the Concat ``StreamingConcat``, all in the same partition; a plain chain goes through exactly the
transformations it always did. Only layout transposes may stay in front of the partition, and
the last conv's per-channel scale ``Mul`` and bias ``Add`` (plus a transpose back to NCHW) after
it: these run on the CPU. Anything else left outside raises :class:`ConversionError`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.fold_constants import FoldConstants
from qonnx.transformation.general import (
    GiveReadableTensorNames,
    GiveUniqueNodeNames,
    RemoveStaticGraphInputs,
    RemoveUnusedTensors,
)
from qonnx.transformation.infer_data_layouts import InferDataLayouts
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
from qonnx.util.cleanup import cleanup_model

from sarvessel.hw.config import (
    FOLDING_FITS_PROP,
    FOLDING_TARGET_PROP,
    PARENT_MODEL_PROP,
    SWG_RAM_STYLE_PROP,
    HWConfig,
    SwgRamStyle,
)
from sarvessel.hw.errors import ConversionError, StepError

log = logging.getLogger(__name__)

#: A step: takes the model and the config, returns the transformed model.
Step = Callable[[ModelWrapper, HWConfig], ModelWrapper]
_S = TypeVar("_S", bound=Step)

#: Registered steps by name (without the ``step_`` prefix).
STEP_REGISTRY: dict[str, Step] = {}

_HW_DOMAIN = "finn.custom_op.fpgadataflow"


def register_step(name: str | None = None) -> Callable[[_S], _S]:
    """Register a step under ``name`` (default: the function name without ``step_``).

    >>> @register_step("doc_example")
    ... def step_doc_example(model, cfg):
    ...     return model
    >>> "doc_example" in STEP_REGISTRY
    True
    >>> register_step("doc_example")(step_doc_example)
    Traceback (most recent call last):
    ...
    sarvessel.hw.errors.StepError: step 'doc_example' is already registered
    >>> del STEP_REGISTRY["doc_example"]
    """

    def deco(fn: _S) -> _S:
        key = name or fn.__name__.removeprefix("step_")
        if key in STEP_REGISTRY:
            raise StepError(f"step {key!r} is already registered")
        STEP_REGISTRY[key] = fn
        return fn

    return deco


def resolve_step(step: str | Step) -> tuple[str, Step]:
    """Name and function of a step given by registered name or as a callable."""
    if callable(step):
        return step.__name__.removeprefix("step_"), step
    key = step.removeprefix("step_")
    try:
        return key, STEP_REGISTRY[key]
    except KeyError:
        raise StepError(
            f"unknown step {step!r}; registered steps: {sorted(STEP_REGISTRY)}"
        ) from None


def is_hw_node(node: object) -> bool:
    """True for FINN HW layers (``finn.custom_op.fpgadataflow*`` domains)."""
    return str(getattr(node, "domain", "")).startswith(_HW_DOMAIN)


# -- steps ----------------------------------------------------------------------------------


@register_step()
def step_tidy_up(model: ModelWrapper, cfg: HWConfig) -> ModelWrapper:
    """QONNX cleanup, shapes, constant folding, readable names; annotate the UINT8 input.

    The contract's graph input carries raw 0..255 pixels with no quantizer, so FINN only knows
    they are integers from the datatype annotation; a float-annotated input is re-annotated with
    ``cfg.input_datatype`` (a warning says so).
    """
    model = cleanup_model(model)
    model = model.transform(InferShapes())
    model = model.transform(FoldConstants())
    model = model.transform(GiveUniqueNodeNames())
    model = model.transform(GiveReadableTensorNames())
    model = model.transform(RemoveStaticGraphInputs())
    iname = model.graph.input[0].name
    want = DataType[cfg.input_datatype]
    have = model.get_tensor_datatype(iname)
    if have != want:
        if have != DataType["FLOAT32"]:
            raise ConversionError(
                f"graph input {iname!r} is annotated {have.name}, the config says {want.name}"
            )
        log.warning("graph input %r has no integer annotation; setting %s", iname, want.name)
        model.set_tensor_datatype(iname, want)
    model = model.transform(InferDataTypes())
    return model


@register_step()
def step_qonnx_to_finn(model: ModelWrapper, cfg: HWConfig) -> ModelWrapper:
    """Quant nodes to FINN-ONNX: weight Quants folded into integer weights, activations into
    MultiThreshold nodes."""
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN

    model = model.transform(ConvertQONNXtoFINN())
    model = model.transform(InferDataTypes())
    return model


@register_step()
def step_streamline(model: ModelWrapper, cfg: HWConfig) -> ModelWrapper:
    """Move float scales/biases (BN, weight scales) into the thresholds; lower convs to
    Im2Col+MatMul and max-pools to NHWC, so only integer ops remain between input and the last
    MatMul."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC, MoveMulPastDWConv
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

    branched = has_branches(model)
    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    if branched:
        model = _scales_past_fork_and_join(model)
    model = model.transform(Streamline())
    # per-channel activation scales (``dw_in_per_channel``) stop at depthwise convs, which
    # Streamline() does not cross: swap them past (exact: channel c only scales output c),
    # then Streamline() collapses them with the weight scales into the next thresholds
    model = model.transform(MoveMulPastDWConv())
    model = model.transform(Streamline())
    model = model.transform(LowerConvsToMatMul())
    model = model.transform(MakeMaxPoolNHWC())
    model = model.transform(absorb.AbsorbTransposeIntoMultiThreshold())
    model = model.transform(MakeMaxPoolNHWC())
    model = model.transform(absorb.AbsorbConsecutiveTransposes())
    model = model.transform(Streamline())
    model = model.transform(RoundAndClipThresholds())
    model = model.transform(InferDataLayouts())
    if branched:
        model = _branches_to_nhwc(model)
    model = model.transform(RemoveUnusedTensors())
    return model


def has_branches(model: ModelWrapper) -> bool:
    """True when the graph is not a plain chain: some tensor feeds two nodes (a fork) or some
    node takes two dynamic inputs (a join, e.g. the context branch's Concat)."""
    for node in model.graph.node:
        for t in node.output:
            if len(model.find_consumers(t)) > 1:
                return True
        dynamic = [t for t in node.input if t and model.get_initializer(t) is None]
        if node.op_type != "MultiThreshold" and len(dynamic) > 1:
            return True
    return False


def _scales_past_fork_and_join(model: ModelWrapper) -> ModelWrapper:
    """Move the activation scales of a branched graph out of the way of streamlining.

    A QuantReLU becomes ``MultiThreshold -> Mul(scale)``; the body's last one forks (Concat and
    the context branch's MaxPool) and the two Concat inputs both end in such a Mul (one shared
    quantizer: equal scalar scales). Copy each forking Mul into every branch, move the context
    branch's Mul past the nearest Resize (which commutes with a scalar), then the two equal Muls
    past the Concat, where the usual streamlining absorbs it into the next thresholds. Unequal
    scales stay in front of the Concat and :func:`conversion_problems` reports them.
    """
    from finn.transformation.streamline.reorder import (
        MoveAddPastJoinConcat,
        MoveLinearPastFork,
        MoveMulPastJoinConcat,
        MoveScalarLinearPastInvariants,
    )

    for trn in (MoveLinearPastFork(), MoveScalarLinearPastInvariants(), MoveMulPastJoinConcat(),
                MoveAddPastJoinConcat()):
        model = model.transform(trn)
        model = model.transform(InferShapes())
        model = model.transform(InferDataTypes())
        model = model.transform(InferDataLayouts())
    return model


def _branches_to_nhwc(model: ModelWrapper) -> ModelWrapper:
    """Bring the Resize and the Concat of a context branch into NHWC, as the streaming layers
    want them, and cancel the layout transposes around them.

    After lowering, the branch reads ``MT(NHWC) -> Transpose(NCHW) -> Resize -> Concat(axis 1)
    -> Transpose(NHWC)`` and the fork's other side ``Transpose(NCHW) -> Transpose(NHWC) ->
    MaxPoolNHWC``. The Resize swaps with the transpose in front of it (its scales permuted to
    NHWC); identical transposes on every Concat input move past it (the axis becomes 3); the
    forking transpose is copied into each branch; opposite pairs cancel.
    """
    from finn.transformation.streamline.absorb import AbsorbConsecutiveTransposes
    from finn.transformation.streamline.reorder import MakeScaleResizeNHWC

    model = model.transform(MakeScaleResizeNHWC())
    model = model.transform(InferDataLayouts())
    model = model.transform(_identical_transposes_past_concat())
    model = model.transform(AbsorbConsecutiveTransposes())
    model = model.transform(InferShapes())
    model = model.transform(InferDataTypes())
    model = model.transform(InferDataLayouts())
    return model


def _identical_transposes_past_concat() -> object:
    """finn-plus's ``MoveTransposePastJoinConcat``, but only for equal permutations on every
    Concat input (its own check compares them and then never returns False)."""
    from finn.transformation.streamline.reorder import MoveTransposePastJoinConcat
    from qonnx.util.basic import get_by_name

    class MoveIdenticalTransposesPastJoinConcat(MoveTransposePastJoinConcat):
        def are_producers_identical(self, model: ModelWrapper, producers: list) -> bool:
            if not all(p is not None and p.op_type == "Transpose" for p in producers):
                return False
            perms = [list(get_by_name(p.attribute, "perm").ints) for p in producers]
            return all(p == perms[0] for p in perms)

    return MoveIdenticalTransposesPastJoinConcat()


@register_step()
def step_convert_to_hw(model: ModelWrapper, cfg: HWConfig) -> ModelWrapper:
    """Map MatMul(+MultiThreshold) to MVAU, depthwise MatMul(+MultiThreshold) to VVAU, Im2Col
    to padding + sliding-window generators (``depthwise`` ones for the VVAUs), MaxPoolNHWC to
    Pool, leftover MultiThresholds to Thresholding; in a branched graph also
    nearest Resize to UpsampleNearestNeighbour, channel Concat to StreamingConcat and every
    fork to DuplicateStreams."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.pool import InferPool
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (  # noqa: E501
        InferQuantizedMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import (
        InferThresholdingLayer,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.vector_vector_activation import (
        InferVectorVectorActivation,
    )
    from finn.transformation.move_reshape import RemoveCNVtoFCFlatten

    branched = has_branches(model)
    model = model.transform(InferQuantizedMatrixVectorActivation())
    # after the MVAUs (which skip MatMuls with a depthwise sparsity annotation) and before the
    # standalone thresholds, so each VVAU absorbs its MultiThreshold (finn-plus order)
    model = model.transform(InferVectorVectorActivation())
    model = model.transform(InferThresholdingLayer())
    model = model.transform(InferPool())
    model = model.transform(InferConvInpGen())
    if branched:
        from finn.transformation.fpgadataflow.convert_to_hw.concat import InferConcatLayer
        from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import (
            InferDuplicateStreamsLayer,
        )
        from finn.transformation.fpgadataflow.convert_to_hw.upsample import InferUpsample

        model = model.transform(InferUpsample())
        model = model.transform(InferConcatLayer())
        # last: every fork between HW layers becomes an explicit stream duplicator
        model = model.transform(InferDuplicateStreamsLayer())
    model = model.transform(absorb.AbsorbConsecutiveTransposes())
    model = model.transform(RemoveCNVtoFCFlatten())
    model = model.transform(GiveUniqueNodeNames())
    model = model.transform(InferDataLayouts())
    model = model.transform(InferDataTypes())
    model = model.transform(InferShapes())
    problems = conversion_problems(model, cfg)
    if problems:
        raise ConversionError(
            "the model does not convert to one dataflow partition: " + "; ".join(problems)
        )
    return model


@register_step()
def step_minimize_bit_width_initial(model: ModelWrapper, cfg: HWConfig) -> ModelWrapper:
    """Tighten weight and accumulator widths right after conversion, so specialisation and
    folding see the real widths, not 32-bit placeholders (finn-plus default order)."""
    return _minimize_bit_width(model)


@register_step()
def step_create_dataflow_partition(model: ModelWrapper, cfg: HWConfig) -> ModelWrapper:
    """Cut the HW layers out into one StreamingDataflowPartition and continue on it.

    The parent graph (input transpose, partition node, CPU tail) is saved as
    ``<output_dir>/dataflow_parent.onnx``; its path is recorded in the dataflow model's metadata
    so verification and the deploy package can find the CPU tail.
    """
    from finn.transformation.fpgadataflow.create_dataflow_partition import (
        CreateDataflowPartition,
    )

    part_dir = cfg.output_dir / "dataflow_partitions"
    part_dir.mkdir(parents=True, exist_ok=True)
    parent = model.transform(CreateDataflowPartition(partition_model_dir=str(part_dir)))
    sdps = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    if len(sdps) != 1:
        raise ConversionError(f"expected one dataflow partition, got {len(sdps)}")
    parent_path = cfg.output_dir / "dataflow_parent.onnx"
    parent.save(str(parent_path))
    dataflow = ModelWrapper(getCustomOp(sdps[0]).get_nodeattr("model"))
    dataflow.set_metadata_prop(PARENT_MODEL_PROP, str(parent_path.resolve()))
    return dataflow


@register_step()
def step_specialize_layers(model: ModelWrapper, cfg: HWConfig) -> ModelWrapper:
    """Pick the HLS or RTL implementation of every layer for ``cfg.fpga_part``."""
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    model = model.transform(SpecializeLayers(cfg.fpga_part))
    model = model.transform(GiveUniqueNodeNames())
    model = model.transform(InferShapes())
    model = model.transform(InferDataTypes())
    return model


@register_step()
def step_set_folding(model: ModelWrapper, cfg: HWConfig) -> ModelWrapper:
    """Fold (PE/SIMD) every layer to meet the throughput target, within the resource budget.

    The target is :meth:`HWConfig.folding_target_cycles` (the scene target less the cycle
    margin). The budget is checked against the *expected* totals
    (:func:`sarvessel.hw.estimate.expected_resources`: layers, width converters, FIFOs and the
    shell allowance), not the layers alone. When they exceed the budget the target is relaxed by
    ``cfg.folding_relax_factor`` and the folding redone from scratch, at most
    ``cfg.max_folding_attempts`` times; the chosen target and whether it fits are stored in the
    model metadata (the estimate report shows both). SetFolding leaves nearest
    upsampling layers alone, so they are folded first (:func:`_fold_upsamplers`). Depthwise
    VVAUs need nothing extra: SetFolding raises their PE (channels) first and SIMD (kernel
    elements) only once PE is full, and gives the depthwise sliding-window generator in front
    SIMD = PE (and ``parallel_window`` when the VVAU's SIMD > 1), as both must stream alike.

    After each SetFolding the line-buffer memory of the sliding-window generators is set from
    ``cfg.swg_ram_style`` (:func:`apply_swg_ram_style`), and threshold memories and MVAU
    multipliers explicitly (:func:`apply_memory_styles`), before the budget check: their LUT and
    BRAM cost depends on it, and for "auto" the choice depends on the SIMD just chosen.
    """
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    from sarvessel.hw.estimate import expected_resources, over_budget

    target = cfg.folding_target_cycles()
    for attempt in range(1, cfg.max_folding_attempts + 1):
        folded = _fold_upsamplers(copy.deepcopy(model), target).transform(
            SetFolding(target, mvau_wwidth_max=cfg.mvau_wwidth_max, two_pass_relaxation=True)
        )
        folded = apply_memory_styles(apply_swg_ram_style(folded, cfg), cfg)
        over = over_budget(expected_resources(folded, cfg), cfg)
        log.info("folding attempt %d: target %d cycles/tile, over: %s", attempt, target, over)
        if not over or attempt == cfg.max_folding_attempts:
            break
        target = int(target * cfg.folding_relax_factor)
    fits = not over
    if not fits:
        log.warning("folding exceeds the resource budget after %d attempts: %s", attempt, over)
    folded = folded.transform(GiveUniqueNodeNames())
    folded.set_metadata_prop(FOLDING_TARGET_PROP, str(target))
    folded.set_metadata_prop(FOLDING_FITS_PROP, "1" if fits else "0")
    folded.set_metadata_prop(SWG_RAM_STYLE_PROP, SwgRamStyle(cfg.swg_ram_style).value)
    return folded


@register_step()
def step_minimize_bit_width(model: ModelWrapper, cfg: HWConfig) -> ModelWrapper:
    """Tighten weight and accumulator widths again for the chosen implementations and round
    and clip the thresholds to the accumulator ranges."""
    return _minimize_bit_width(model)


@register_step()
def step_generate_estimates(model: ModelWrapper, cfg: HWConfig) -> ModelWrapper:
    """Annotate expected cycles and write the estimate reports (JSON, table, PNG) to
    ``<output_dir>/report``."""
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    from sarvessel.hw.estimate import estimate_model, write_report

    model = model.transform(AnnotateCycles())
    write_report(estimate_model(model, cfg), cfg.report_dir())
    return model


def apply_memory_styles(model: ModelWrapper, cfg: HWConfig) -> ModelWrapper:
    """Set what FINN would otherwise leave to Vivado, so the estimate prices what is built:
    ``ram_style_thresholds`` of every thresholding layer from ``cfg.ram_style_thresholds``, and
    ``resType="dsp"`` for HLS MVAUs whose weight + input widths reach ``cfg.mvau_dsp_min_bits``
    (``"lut"`` for the others)."""
    style = str(cfg.ram_style_thresholds.value)
    for node in model.graph.node:
        if not is_hw_node(node):
            continue
        inst = getCustomOp(node)
        known = inst.get_nodeattr_types()
        if "ram_style_thresholds" in known:
            inst.set_nodeattr("ram_style_thresholds", style)
        if node.op_type == "MVAU_hls" and "resType" in known:
            bits = inst.get_input_datatype(0).bitwidth() + inst.get_input_datatype(1).bitwidth()
            dsp = 0 < cfg.mvau_dsp_min_bits <= bits
            inst.set_nodeattr("resType", "dsp" if dsp else "lut")
    return model


def sliding_window_generators(model: ModelWrapper) -> list[Any]:
    """Custom ops of the ``ConvolutionInputGenerator*`` layers that have a ``ram_style``."""
    out = []
    for node in model.graph.node:
        if node.op_type.startswith("ConvolutionInputGenerator"):
            inst = getCustomOp(node)
            if "ram_style" in inst.get_nodeattr_types():
                out.append(inst)
    return out


def apply_swg_ram_style(model: ModelWrapper, cfg: HWConfig) -> ModelWrapper:
    """Set ``ram_style`` of every sliding-window generator from ``cfg.swg_ram_style``.

    "distributed" (LUTRAM, FINN's default) and "block" (BRAM) go to every generator. "auto"
    decides per generator from FINN's own estimates for the folded layer: the LUTs its line
    buffer costs in LUTRAM (``lut_estimation``: one LUT per 38 entries of each buffer bit, the
    300-LUT control logic is the same for both) against the BRAM18s it takes as block RAM
    (``bram_estimation``, which rounds width and depth up to whole BRAM aspect ratios). A
    generator goes to BRAM when the LUTs saved are a larger share of the LUT budget than the
    BRAMs spent are of the BRAM budget, i.e. when it saves more than
    ``lut_budget * LUT / (bram_budget * BRAM18)`` LUTs per BRAM18 (356 on the KV260 with the
    default 70 % / 80 %). A full BRAM18 (18 Kib) replaces about 485 LUTs, so this takes the
    buffers that fill their BRAMs to roughly 70 % or more: the big line buffers of wide
    or dilated convs (rows x channels of thousands of entries), while short or narrow buffers,
    which would leave most of a BRAM empty, stay in LUTRAM. Candidates are then taken best
    LUT-per-BRAM first for as long as the model's total BRAM stays within ``cfg.bram_budget``
    (every generator in LUTRAM counted as the base), so "auto" never pushes the BRAM over budget;
    the folding step's budget check sees the result. Generators without line buffers (FINN
    estimates 0 BRAM) stay in LUTRAM. This "auto" is resolved here and never handed to FINN,
    whose own ``ram_style="auto"`` leaves the choice to the synthesis tool.
    """
    from sarvessel.hw.estimate import total_resources

    style = SwgRamStyle(cfg.swg_ram_style)
    swgs = sliding_window_generators(model)
    if style is not SwgRamStyle.AUTO:
        for inst in swgs:
            inst.set_nodeattr("ram_style", style.value)
        return model
    for inst in swgs:
        inst.set_nodeattr("ram_style", SwgRamStyle.DISTRIBUTED.value)
    if not swgs:
        return model
    dev = cfg.fabric().totals()
    lut_per_bram = cfg.lut_budget * dev["LUT"] / (cfg.bram_budget * dev["BRAM_18K"])
    headroom = cfg.bram_budget * dev["BRAM_18K"] - total_resources(model, cfg)["BRAM_18K"]
    candidates = []
    for order, inst in enumerate(swgs):
        luts, brams = swg_block_trade(inst, cfg.fpga_part)
        if brams > 0 and luts > brams * lut_per_bram:
            candidates.append((-luts / brams, order, brams, inst))
    for _, _, brams, inst in sorted(candidates, key=lambda c: c[:2]):
        if brams <= headroom:
            inst.set_nodeattr("ram_style", SwgRamStyle.BLOCK.value)
            headroom -= brams
    return model


def swg_block_trade(inst: Any, fpgapart: str) -> tuple[float, float]:
    """(LUTs saved, BRAM18s spent) by moving one generator's line buffer from LUTRAM to BRAM,
    from FINN's estimates at its current folding; its ``ram_style`` is left as it was."""
    was = inst.get_nodeattr("ram_style")
    cost: dict[str, tuple[float, float]] = {}
    for style in (SwgRamStyle.DISTRIBUTED.value, SwgRamStyle.BLOCK.value):
        inst.set_nodeattr("ram_style", style)
        cost[style] = (inst.lut_estimation(fpgapart), inst.bram_estimation(fpgapart))
    inst.set_nodeattr("ram_style", was)
    (lut_d, bram_d), (lut_b, bram_b) = cost["distributed"], cost["block"]
    return float(lut_d - lut_b), float(bram_b - bram_d)


def _fold_upsamplers(model: ModelWrapper, target: int) -> ModelWrapper:
    """Give every UpsampleNearestNeighbour layer the smallest SIMD (a divisor of its channels)
    that meets ``target`` cycles per tile (the largest when none does); finn-plus's SetFolding
    does not handle the op and would leave it at SIMD 1, possibly the bottleneck."""
    for node in model.graph.node:
        if not node.op_type.startswith("UpsampleNearestNeighbour"):
            continue
        inst = getCustomOp(node)
        channels = int(inst.get_nodeattr("NumChannels"))
        for simd in (d for d in range(1, channels + 1) if channels % d == 0):
            inst.set_nodeattr("SIMD", simd)
            if inst.get_exp_cycles() <= target:
                break
    return model


def _minimize_bit_width(model: ModelWrapper) -> ModelWrapper:
    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth,
    )
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

    model = model.transform(MinimizeWeightBitWidth())
    model = model.transform(MinimizeAccumulatorWidth())
    model = model.transform(InferDataTypes())
    model = model.transform(RoundAndClipThresholds())
    model = model.transform(InferDataTypes())
    model = model.transform(MinimizeWeightBitWidth())
    model = model.transform(InferDataTypes())
    return model


# -- checks ---------------------------------------------------------------------------------


def conversion_problems(model: ModelWrapper, cfg: HWConfig) -> list[str]:
    """What keeps ``model`` from being one dataflow partition with only a layout head and a
    CPU tail; empty when it converts fully.

    Checks: every non-HW node is an allowed head op before the first HW node or an allowed tail
    op after the last; no HW layer has a FLOAT32 input or output (every stream of a
    StreamingConcat or DuplicateStreams included).
    """
    nodes = list(model.graph.node)
    hw_idx = [i for i, n in enumerate(nodes) if is_hw_node(n)]
    if not hw_idx:
        return ["no node was converted to a HW layer"]
    first, last = hw_idx[0], hw_idx[-1]
    problems = []
    for i, n in enumerate(nodes):
        if is_hw_node(n):
            continue
        if i < first and n.op_type in cfg.cpu_head_ops:
            continue
        if i > last and n.op_type in cfg.cpu_tail_ops:
            continue
        where = "inside" if first < i < last else "before" if i < first else "after"
        problems.append(f"{n.op_type} node {n.name!r} {where} the HW layers is not a HW layer")
        if n.op_type == "Concat" and not all(
                model.get_tensor_datatype(t).is_integer() for t in n.input):
            problems.append(f"Concat {n.name!r} joins non-integer tensors: its inputs must "
                            "leave one shared quantizer (same scale) for the scales to move past")
    float_dt = DataType["FLOAT32"]
    for i in hw_idx:
        n = nodes[i]
        dynamic = [t for t in n.input if t and model.get_initializer(t) is None]
        for t in [*dynamic, *n.output]:
            if model.get_tensor_datatype(t) == float_dt:
                problems.append(f"HW layer {n.op_type} {n.name!r} has FLOAT32 tensor {t!r}")
    return problems


def parent_model_path(model: ModelWrapper) -> Path | None:
    """The saved parent graph of a dataflow model, if the partition step recorded one."""
    p = model.get_metadata_prop(PARENT_MODEL_PROP)
    return Path(p) if p else None
