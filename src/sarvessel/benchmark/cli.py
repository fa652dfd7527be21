"""The suite's options on the runtime's ``bench`` command: ``sarvessel bench --quick|--full``.

The runtime owns ``bench`` (it runs on the board); this module adds the suite's options to it and
the handler that runs :func:`~sarvessel.benchmark.suite.run_suite`, as the evaluation tools add
scoring to ``detect``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from sarvessel.runtime.errors import SarvesselError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the suite's options to ``bench`` (when the runtime's commands are installed)."""
    bench = sub.choices.get("bench")
    if bench is None:
        return
    g = bench.add_argument_group("suite (--quick / --full; ground tools)")
    g.add_argument("--sizes", type=_floats, metavar="MPX,...",
                   help="scaling scene sizes in MPx at the xView3 aspect (700 = the average "
                   "xView3 scene, 24,400 x 29,400; default quick 1,2,4, full 10,50,200,700)")
    g.add_argument("--scene-mpx", type=float,
                   help="size of the scene every backend runs on (default quick 2, full 50)")
    g.add_argument("--scaling-backend", help="backend spec of the scaling runs (default onnx)")
    g.add_argument("--no-scaling", action="store_true", help="leave out the scaling runs")
    g.add_argument("--no-peers", action="store_true", help="leave out the YOLOv8n peer")
    g.add_argument("--no-accuracy", action="store_true", help="leave out xView3 and SSDD")
    g.add_argument("--eval-seeds", type=_seeds, metavar="A-B|A,B",
                   help="held-out generated scenes, seeds >= 900 (default quick 900, "
                   "full 900-931)")
    g.add_argument("--eval-size", type=int, help="their side in px (default quick 2048, "
                   "full 4096)")
    g.add_argument("--ssdd-images", type=int,
                   help="first N SSDD test images (default quick 16, full all)")
    g.add_argument("--repeats", type=int, help="repeats of the per-tile network timing "
                   "(default quick 3, full 10)")
    g.add_argument("--work", type=Path, default=Path("out/bench"),
                   help="generated scenes, peer exports and run outputs, reused between runs "
                   "(default out/bench)")
    g.add_argument("--timeout", type=float, help="longest one measured run may take (s)")
    bench.set_defaults(suite_fn=cmd_suite)


def cmd_suite(args: argparse.Namespace) -> int:
    """Run the preset the flags name with the options given; print where the report is."""
    from sarvessel.benchmark.suite import Mode, SuiteSettings, run_suite

    mode = Mode.FULL if args.full else Mode.QUICK
    threads = args.threads
    if threads is not None and threads < 1:
        raise SarvesselError(f"--threads must be >= 1, got {threads}")
    s = SuiteSettings.preset(
        mode, report=args.report, work=args.work, sizes_mpx=args.sizes,
        scene_mpx=args.scene_mpx, backends=args.backends, scaling_backend=args.scaling_backend,
        threads=threads, batch=args.batch, network_repeats=args.repeats,
        eval_seeds=args.eval_seeds, eval_size=args.eval_size, ssdd_images=args.ssdd_images,
        hw_estimate=args.hw_estimate, timeout_s=args.timeout,
        scaling=False if args.no_scaling else None, accuracy=False if args.no_accuracy else None,
        peer_tiles=() if args.no_peers else None)
    if s.scaling and s.scene_mpx not in s.sizes_mpx and args.scene_mpx is None:
        s.scene_mpx = sorted(s.sizes_mpx)[len(s.sizes_mpx) // 2]
    if s.eval_seeds and min(s.eval_seeds) < 900:
        raise SarvesselError(f"--eval-seeds must be >= 900 (held out from training), got "
                             f"{min(s.eval_seeds)}")
    command = "sarvessel " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""
    report, paths = run_suite(s, command=command)
    from sarvessel.runtime.cli import print_bench_report

    print_bench_report(report, paths)
    return 0


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes in MPx such as 10,50,200,700, "
                                         f"got {text!r}") from None
    if not vals or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be > 0 MPx, got {text!r}")
    return vals


def _seeds(text: str) -> tuple[int, ...]:
    try:
        if "-" in text:
            a, b = text.split("-")
            return tuple(range(int(a), int(b) + 1))
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds such as 900-931 or 900,905, "
                                         f"got {text!r}") from None
