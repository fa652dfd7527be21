"""The ``sarvessel`` command: one entry point composed from the subpackages' commands.

Each subpackage that has commands exposes ``cli.register(subparsers)``, which adds its
sub-commands with ``set_defaults(func=handler)``; a handler takes the parsed arguments and returns
the exit code, importing heavy modules (torch, finn) only when it runs, so ``--help`` and the
runtime commands work on the board where the host tools are not installed.
User errors (:class:`~sarvessel.runtime.errors.SarvesselError`) print one line, no traceback,
and exit 2. ``-v``/``-q`` work before or after the command. ``sarvessel`` without a command is
a usage error, as argparse treats any missing required argument: the usage and a one-line hint
on stderr, exit 2 (``sarvessel --help`` prints the help on stdout and exits 0).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from sarvessel import __version__
from sarvessel.runtime.errors import SarvesselError

log = logging.getLogger(__name__)

#: Host-tool modules a command may need that the runtime-only install (``make demo``, the
#: board) lacks.
HOST_MODULES = frozenset({"torch", "brevitas", "onnxoptimizer", "matplotlib", "onnx", "qonnx",
                          "finn", "sklearn", "skl2onnx"})

#: Subpackages whose ``cli.register`` is called, in help order.
COMMAND_MODULES = (
    "sarvessel.demo",
    "sarvessel.runtime.cli",
    "sarvessel.runtime.board.cli",
    "sarvessel.runtime.server.cli",
    "sarvessel.archive.cli",
    "sarvessel.synth.cli",
    "sarvessel.evaluation.cli",
    "sarvessel.benchmark.cli",
    "sarvessel.model.cli",
    "sarvessel.quantize.cli",
    "sarvessel.hw.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (sub-commands of every installed subpackage)."""
    parser = argparse.ArgumentParser(
        prog="sarvessel",
        description="Vessel detection in Sentinel-1 SAR scenes: the scene runtime (CPU), "
        "training and export of the detector, and its FINN build for a Kria KV260 FPGA.",
    )
    parser.add_argument("--version", action="version", version=f"sarvessel {__version__}")
    _add_log_options(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a subpackage without commands yet
            if exc.name != name:
                raise
            continue
        module.register(sub)
    for command in _subparsers(parser):  # -v/-q after the command too
        _add_log_options(command, default=argparse.SUPPRESS)
    return parser


def _add_log_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    """``-v``/``-q``; a command's copies default to SUPPRESS so they never reset the
    top-level value (``sarvessel -q detect ...``)."""
    taken = {s for a in parser._actions for s in a.option_strings}
    if not taken & {"-v", "--verbose"}:
        parser.add_argument("-v", "--verbose", action="store_true", default=default,
                            help="log debug messages")
    if not taken & {"-q", "--quiet"}:
        parser.add_argument("-q", "--quiet", action="store_true", default=default,
                            help="log warnings only")


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command parser below ``parser`` (nested ones such as ``hw estimate`` too)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                found += [child, *_subparsers(child)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_usage(sys.stderr)
        print("sarvessel: error: no command given; `sarvessel --help` lists the commands",
              file=sys.stderr)
        return 2
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except SarvesselError as exc:
        print(f"sarvessel {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sarvessel {args.command}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # a host command on a runtime-only install
        top = (exc.name or "").split(".")[0]
        if top not in HOST_MODULES:
            raise
        print(f"sarvessel {args.command}: error: needs {top}, which is not installed here "
              "(a runtime-only install): use `make test`'s .venv, which has every host tool "
              "(torch, Brevitas, onnx, and finn-plus with its pins, requirements/hw.txt)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
