"""Warm starts: seed a network from a checkpoint of the same or a related one (a float run
into QAT, a body into a grown network, a one-anchor head into a finer anchor grid)."""

from __future__ import annotations

from pathlib import Path

import torch

from sarvessel.model.checkpoint import load_checkpoint
from sarvessel.model.config import ModelConfig
from sarvessel.model.network import SarYolo
from sarvessel.runtime.errors import SarvesselError

__all__ = ["init_from_checkpoint"]


def init_from_checkpoint(model: SarYolo, path: Path | str, *, grow: str = "zero"
                         ) -> tuple[list[str], list[str]]:
    """Copy into ``model`` every tensor of checkpoint ``path`` whose name and shape match; the
    rest keep their fresh init. Returns (copied, fresh) names.

    Why: a float run's weights seed QAT (the quantizer scales start fresh), and a grown network
    (e.g. a context branch added to a trained body) starts from the trained body. A network
    that differs only in wider body layers starts as the narrower one. ``grow`` says how its
    new channels start: "zero", fresh and read through zero weights (:func:`_widened`), or
    "copy", as copies of old channels (:func:`_split_widened`; plain bodies only). Session 22
    measured both on SSDD (a 96-wide body grown from the 40-wide float twin, 2 x 36 epochs):
    the new channels carry 41-49 % of each layer's signal instead of 4-19 %, but the model
    scores the same on the training split (AP50 0.963 against 0.965) and 1 point lower on
    test, with a higher training loss, so "zero" stays the default."""
    if grow not in ("zero", "copy"):
        raise SarvesselError(f"grow must be 'zero' or 'copy', got {grow!r}")
    src, _ = load_checkpoint(path, quantized=model.cfg.quantized)
    own = model.state_dict()
    state = dict(src.state_dict())
    n = model.cfg.subgrid ** 2
    if src.cfg.subgrid == 1 and n > 1:
        # a one-anchor head seeds every anchor of a finer grid: the packed output channel
        # c*n + k is anchor k's channel c, so each row is repeated n times (pixel-shuffle order)
        last = f"head.{len(model.head) - 1}."
        for k, v in list(state.items()):
            if k.startswith(last) and v.ndim >= 1 and v.shape[0] == model.cfg.cell_channels:
                state[k] = v.repeat_interleave(n, dim=0)
    if _widens(src.cfg, model.cfg):
        if grow == "copy":
            if model.cfg.context_widths or model.cfg.separable_from:
                raise SarvesselError("grow 'copy' needs a plain conv body (no context branch, "
                                     "no separable layers); use 'zero'")
            state.update(_split_widened(state, model))
        for k, v in list(state.items()):
            if k in own and own[k].shape != v.shape:
                grown = _widened(v, own[k])
                if grown is not None:
                    state[k] = grown
    # keys absent from ``own`` stay: Brevitas registers learned activation scales (``.value``)
    # only once initialised, and takes them from the state dict when loading
    state = {k: v for k, v in state.items() if k not in own or own[k].shape == v.shape}
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.apply_masks()
    return sorted(set(state) - set(unexpected)), sorted(missing)


def _widens(src: ModelConfig, dst: ModelConfig) -> bool:
    """True when ``dst`` is ``src`` with some body layers wider and nothing else changed."""
    same = ("stem_stride", "pools", "dilations", "separable_from", "context_widths",
            "context_dilations", "head_width", "head_kernel", "reg_max", "in_channels")
    return (len(src.widths) == len(dst.widths)
            and all(d >= s for s, d in zip(src.widths, dst.widths, strict=True))
            and all(getattr(src, f) == getattr(dst, f) for f in same))


def _split_widened(state: dict[str, torch.Tensor], model: SarYolo, *, noise: float = 0.05,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """The body and first head conv of ``state`` grown to ``model``'s widths, Net2WiderNet-style
    (Chen et al. 2016): each new channel of a layer copies a random old channel of that layer
    (its conv filter and batch-norm), and the next conv splits the copied channel's weights
    between the copies at random fractions that sum to one. Each copy's filter gets Gaussian
    noise of ``noise`` times that filter's standard deviation (0: the output is unchanged).

    Why, beside :func:`_widened` (fresh channels read through zero weights): that also keeps
    the function, but the fresh channels stay weak. In a 96-wide body grown that way from the
    40-wide float twin, after 72 epochs the old 40 channels still carried 81-96 % of the
    signal into each next layer (``scripts/channel_share.py``). Copies start as strong as the
    channels they copy; the noise lets them drift apart (under Adam, exact copies get the
    same normalised updates and stay copies). Plain nn.Conv2d/BatchNorm2d chain only (no context
    branch, no separable layers)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    in_map: torch.Tensor | None = None  # new input channel -> old one, and its share
    in_frac = torch.ones(0)
    for i in [i for i, m in enumerate(model.body) if isinstance(m, torch.nn.Conv2d)]:
        conv, bn = f"body.{i}", f"body.{i + 1}"  # each body conv is followed by its batch norm
        w = state[f"{conv}.weight"]
        if in_map is not None:
            w = w[:, in_map] * in_frac.view(1, -1, 1, 1).to(w.dtype)
        n_old, n_new = w.shape[0], model.get_submodule(conv).out_channels
        g = torch.cat([torch.arange(n_old), torch.randint(0, n_old, (n_new - n_old,),
                                                          generator=gen)])
        w = w[g]
        if n_new > n_old and noise:
            copies = w[n_old:]
            scale = copies.flatten(1).std(1).view(-1, *[1] * (w.ndim - 1))
            w[n_old:] = copies + noise * scale * torch.randn(copies.shape, generator=gen)
        out[f"{conv}.weight"] = w
        for part in ("weight", "bias", "running_mean", "running_var"):
            out[f"{bn}.{part}"] = state[f"{bn}.{part}"][g]
        share = torch.rand(n_new, generator=gen) + 0.5  # 0.5-1.5: no copy starts negligible
        total = torch.zeros(n_old).index_add_(0, g, share)
        in_map, in_frac = g, share / total[g]  # an uncopied channel: share / share, exactly 1
    w = state["head.0.weight"]  # the head reads the last body layer
    out["head.0.weight"] = w[:, in_map] * in_frac.view(1, -1, 1, 1).to(w.dtype)
    return out


def _widened(old: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor | None:
    """``fresh`` with ``old`` in its leading slice, or None when ``old`` does not fit in it.

    Why (Net2Net-style growth that keeps the function): the old channels keep their weights,
    the new ones keep their fresh init, and the old output channels read the new input channels
    through zero weights, so the wider network starts with the narrower one's output (eval
    mode) and the new channels join as training moves those zeros."""
    if old.ndim != fresh.ndim or any(o > f for o, f in zip(old.shape, fresh.shape, strict=True)):
        return None
    out = fresh.detach().clone()
    out[tuple(slice(0, n) for n in old.shape)] = old
    if out.ndim >= 2 and fresh.shape[1] > old.shape[1]:
        out[:old.shape[0], old.shape[1]:] = 0
    return out
