"""Brevitas quantizers of the detector, declared once here.

Every quantizer leaves ``bit_width = None`` so each layer must state its own width
(``weight_bit_width=``, ``bit_width=``); a new width is a keyword, never a new class. The classes
are built from Brevitas mixins with the solver last, as in ``brevitas/quant/scaled_int.py``.
FINN needs per-channel symmetric (narrow-range) integer weights and unsigned per-tensor ReLU
activations with a float scale; both convert to MVAU + thresholds.
"""

from __future__ import annotations

from brevitas.core.restrict_val import RestrictValueType
from brevitas.core.scaling import ScalingPerOutputType
from brevitas.quant.base import (
    MaxStatsScaling,
    MSESymmetricScale,
    NarrowIntQuant,
    ParamFromRuntimePercentileScaling,
    PerChannelFloatScaling8bit,
    PerTensorFloatScaling8bit,
    UintQuant,
)
from brevitas.quant.solver.act import ActQuantSolver
from brevitas.quant.solver.weight import WeightQuantSolver

__all__ = ["IntWeightPerChannelMSEQuant", "IntWeightPerChannelQuant", "IntWeightPerTensorQuant",
           "UintActPerChannelQuant", "UintActQuant"]


class IntWeightPerChannelQuant(NarrowIntQuant, MaxStatsScaling, PerChannelFloatScaling8bit,
                               WeightQuantSolver):
    """Signed narrow-range integer weights, one float scale per output channel (max of |w|).

    >>> from brevitas.nn import QuantConv2d
    >>> conv = QuantConv2d(2, 4, 3, weight_quant=IntWeightPerChannelQuant, weight_bit_width=4)
    >>> int(conv.quant_weight().bit_width)
    4
    """

    bit_width = None
    scaling_min_val = 2e-16


class IntWeightPerChannelMSEQuant(MSESymmetricScale, IntWeightPerChannelQuant):
    """As :class:`IntWeightPerChannelQuant`, but each channel's scale starts at the value that
    minimises the rounding MSE of its weights and is then a learned parameter (``weight_mse``).

    >>> import torch
    >>> from brevitas.nn import QuantConv2d
    >>> _ = torch.manual_seed(0)
    >>> conv = QuantConv2d(2, 4, 3, weight_quant=IntWeightPerChannelMSEQuant, weight_bit_width=4)
    >>> wmax = conv.weight.abs().amax((1, 2, 3))  # where no clipping is best, scale*7 == max|w|
    >>> bool((conv.quant_weight().scale.flatten() * 7 <= wmax * (1 + 1e-6)).all())
    True

    The scale is learned in the linear domain (Brevitas' MSE search yields NaN with LOG_FP),
    so the training loop gives it a smaller lr (``WEIGHT_SCALE_LR_FACTOR``).
    """


class IntWeightPerTensorQuant(NarrowIntQuant, MaxStatsScaling, PerTensorFloatScaling8bit,
                              WeightQuantSolver):
    """Signed narrow-range integer weights with one float scale for the whole tensor."""

    bit_width = None
    scaling_min_val = 2e-16


class UintActQuant(UintQuant, ParamFromRuntimePercentileScaling, PerTensorFloatScaling8bit,
                   ActQuantSolver):
    """Unsigned per-tensor activations (after ReLU): scale initialised from a high percentile
    of the first 30 training batches, then learned in the log domain.

    >>> from brevitas.nn import QuantReLU
    >>> act = QuantReLU(act_quant=UintActQuant, bit_width=4)
    >>> int(act.act_quant.bit_width())
    4
    """

    bit_width = None
    scaling_min_val = 2e-16
    #: Batches whose percentile statistics initialise the scale (Brevitas' default 300 makes
    #: the first epochs of a CPU run several times slower).
    collect_stats_steps = 30
    restrict_scaling_type = RestrictValueType.LOG_FP


class UintActPerChannelQuant(UintActQuant):
    """As :class:`UintActQuant` with one scale per channel of an NCHW tensor; the layer must
    pass ``per_channel_broadcastable_shape=(1, C, 1, 1)``.

    >>> from brevitas.nn import QuantReLU
    >>> act = QuantReLU(act_quant=UintActPerChannelQuant, bit_width=4,
    ...                 per_channel_broadcastable_shape=(1, 8, 1, 1))
    >>> tuple(act.act_quant.scale().shape)
    (1, 8, 1, 1)
    """

    scaling_per_output_type = ScalingPerOutputType.CHANNEL
    scaling_stats_permute_dims = (1, 0, 2, 3)
