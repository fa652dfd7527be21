"""``sarvessel demo``: generate a scene, detect vessels in it, score them; no data to fetch.

It composes the three packages a user meets first (:mod:`sarvessel.synth`,
:mod:`sarvessel.runtime`, :mod:`sarvessel.evaluation`), so it lives beside the top-level CLI
rather than in any one of them.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``sarvessel`` parser."""
    from sarvessel.runtime.cli import add_backend_args

    p = sub.add_parser(
        "demo", help="generate a scene, detect vessels, score them (no data needed)",
        description="Generate a synthetic Sentinel-1 scene (xView3 format), run the default "
        "detector over it, write CSV/GeoJSON/quicklook PNG and print the xView3 score and "
        "throughput.",
    )
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder "
                   "(default: out/demo)")
    p.add_argument("--size", type=int, default=4096, help="scene side in pixels (default 4096)")
    p.add_argument("--seed", type=int, default=1000, help="scene seed (default 1000; seeds "
                   "below 900 are the scene model's training and validation scenes)")
    add_backend_args(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from sarvessel.evaluation.cli import print_scene_score
    from sarvessel.runtime.cli import (
        make_cli_detector,
        make_governor,
        pipeline_config,
        progress_bar,
        report,
    )
    from sarvessel.runtime.detect import detect_scene
    from sarvessel.runtime.io.xview3_csv import read_labels_csv
    from sarvessel.synth.generate import synthesize_scene

    t0 = time.perf_counter()
    with progress_bar(f"generating a {args.size} x {args.size} scene") as cb:
        synth = synthesize_scene(args.out / "scenes", height=args.size, width=args.size,
                                 seed=args.seed, progress=cb)
    log.info("scene %s generated in %.1f s", synth.scene_dir.name, time.perf_counter() - t0)
    detector = make_cli_detector(args)
    with make_governor(args) as governor, \
            progress_bar(f"detecting in {synth.scene_dir.name}") as cb:
        result, paths = detect_scene(synth.scene_dir, detector, out_dir=args.out,
                                     config=pipeline_config(args, detector.tile_size),
                                     resume=False, progress=cb, governor=governor)
    report(result, detector.name, paths)
    print_scene_score(paths["csv"], read_labels_csv(synth.labels_csv), synth.scene_dir)
    return 0
