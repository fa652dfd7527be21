#!/usr/bin/env python
"""How much of each body layer's signal its channels carry, for a float SSDD checkpoint.

A channel's weight is the standard deviation of its post-ReLU activation over SSDD training
images times the L2 norm of the weights with which the next conv (or the head) reads it. Per
body conv wider than ``--keep``, this prints the share of the layer's total weight carried by
its first ``--keep`` channels and by its best ``--keep``. Why: a network grown from a narrower
one (``sarvessel train --init``) keeps the old channels first, so a high first-K share means
the new channels stayed weak and the wide network is mostly the narrow one; the best-K
channels are what pruning back to K would keep. Example (the session 22 probe):

    python scripts/channel_share.py runs/wide/t96b/last.pt --keep 40
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from sarvessel.evaluation.datasets import load_ssdd
from sarvessel.evaluation.evaluate import ssdd_root
from sarvessel.model.checkpoint import load_checkpoint
from sarvessel.model.data import ImageDataset
from sarvessel.model.network import SarYolo


def channel_weights(model: SarYolo, images: list[np.ndarray]) -> dict[int, torch.Tensor]:
    """Per body conv index, the weight of each of its output channels (see the module doc);
    ``images`` are uint8 tiles ``[C, H, W]``.
    Plain conv → batch norm → ReLU body, as :func:`~sarvessel.model.warm_start._split_widened`
    grows it."""
    body = model.body
    convs = [i for i, m in enumerate(body) if isinstance(m, torch.nn.Conv2d)]
    acts: dict[int, list[torch.Tensor]] = {i: [] for i in convs}
    hooks = [body[i + 2].register_forward_hook(
        lambda _m, _a, out, i=i: acts[i].append(out.detach().transpose(0, 1).flatten(1)))
        for i in convs]
    try:
        with torch.no_grad():
            for img in images:
                model(torch.from_numpy(img.astype(np.float32))[None])
    finally:
        for h in hooks:
            h.remove()
    readers = [body[i] for i in convs[1:]] + [model.head[0]]
    return {i: torch.cat(acts[i], 1).std(1) * r.weight.detach().pow(2).sum((0, 2, 3)).sqrt()
            for i, r in zip(convs, readers, strict=True)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="float sarvessel checkpoint (SSDD, 1 channel)")
    ap.add_argument("--keep", type=int, required=True, help="channels to keep per layer")
    ap.add_argument("--images", type=int, default=64, help="SSDD training images to read")
    args = ap.parse_args()
    model, _ = load_checkpoint(args.checkpoint, quantized=False)
    if model.cfg.context_widths or model.cfg.separable_from:
        print("only plain conv bodies (no context branch, no separable layers)", file=sys.stderr)
        return 2
    # evaluation tiles: each image letterboxed at a tile's top-left, as quick evaluation does
    ds = ImageDataset(load_ssdd(ssdd_root(), "train"), tile_size=model.cfg.tile_size)
    pick = np.random.default_rng(0).choice(len(ds), min(args.images, len(ds)), replace=False)
    images = [ds[int(k)][0] for k in pick]
    print(f"{args.checkpoint}: share of each layer's signal, {len(images)} SSDD training images")
    for i, w in channel_weights(model.eval(), images).items():
        if len(w) <= args.keep:
            continue
        total = float(w.sum())
        best = float(w.sort(descending=True).values[:args.keep].sum())
        print(f"  body.{i} ({len(w)} channels): first {args.keep} {w[:args.keep].sum() / total:.3f}"
              f", best {args.keep} {best / total:.3f}, the rest {1 - best / total:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
