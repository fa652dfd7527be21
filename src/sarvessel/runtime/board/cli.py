"""``sarvessel board flash|check|info``: thin handlers over :mod:`sarvessel.runtime.board.tools`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sarvessel.runtime.board.tools import DEFAULT_INSTALL, CheckBackend
from sarvessel.runtime.io.outputs import json_safe


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``board`` and its sub-commands to the ``sarvessel`` parser."""
    board = sub.add_parser("board", help="put a deploy package on a KV260, check it, show it")
    bsub = board.add_subparsers(dest="board_command", metavar="BOARD_COMMAND")

    p = bsub.add_parser(
        "flash", help="copy a deploy package to a board (SSH) or a folder, checked on arrival",
        description="Copy a deploy package to user@host:/path (or ssh://user@host:port/path) "
        "over the system ssh, or to a local or mounted folder. Every file's SHA-256 is checked "
        "on arrival; the previous package stays in place until the new one checks out and is "
        "kept as PATH.prev.")
    p.add_argument("package", type=Path, help="deploy package folder")
    p.add_argument("target", help="user@host:/path, ssh://user@host:port/path or a folder")
    p.add_argument("-i", "--identity", type=Path, help="ssh private key")
    p.add_argument("-o", "--ssh-option", action="append", default=[], metavar="OPT",
                   help="extra ssh -o option (repeatable), e.g. StrictHostKeyChecking=yes")
    p.set_defaults(func=cmd_flash)

    p = bsub.add_parser(
        "check", help="load the installed package, run its self-test tiles, report",
        description="Load a deploy package through the fpga core (on a board) or the sim core, "
        "run its self-test tiles and compare the accumulators with those stored at build time; "
        "report pass/fail, clock, driver and bitstream versions and the board's power.")
    p.add_argument("package", type=Path, nargs="?", default=DEFAULT_INSTALL,
                   help=f"deploy package folder (default {DEFAULT_INSTALL})")
    p.add_argument("--backend", choices=[b.value for b in CheckBackend], default="auto",
                   help="fpga, sim, or auto: fpga where a board is present (default)")
    p.add_argument("--batch", type=int, default=1, help="tiles per accelerator call (default 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_check)

    p = bsub.add_parser("info", help="what is installed (package, previous package, versions)")
    p.add_argument("path", type=Path, nargs="?", default=DEFAULT_INSTALL,
                   help=f"install folder (default {DEFAULT_INSTALL})")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_info)
    board.set_defaults(func=lambda args: board.print_help() or 2)


def cmd_flash(args: argparse.Namespace) -> int:
    from sarvessel.runtime.board.tools import flash

    opts: list[str] = []
    if args.identity:
        opts += ["-i", str(args.identity)]
    for o in args.ssh_option:
        opts += ["-o", o]
    r = flash(args.package, args.target, ssh_options=opts)
    print(f"flashed {args.package} to {r.target}: {r.files} files, {r.bytes / 1e6:.1f} MB, "
          f"all SHA-256 checked, {r.seconds:.1f} s"
          + ("; previous package kept as .prev" if r.previous_kept else ""))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from sarvessel.runtime.board.tools import check

    r = check(args.package, backend=args.backend, batch_size=args.batch)
    if args.json:
        print(json.dumps(json_safe(r.to_dict()), indent=2, allow_nan=False))
    else:
        power = "no sensor" if r.power_w is None else f"{r.power_w:.2f} W"
        sha = (r.bitstream_sha256 or "none")[:16]
        print(f"{'PASS' if r.passed else 'FAIL'}: {r.message} ({r.tiles} self-test tiles, "
              f"{r.backend} core, {r.ms_per_tile:.2f} ms/tile)")
        print(f"  clock {r.clock_mhz} MHz, bitstream sha256 {sha}, power {power}")
        print(f"  build {r.build or '-'}")
        print("  " + ", ".join(f"{k} {v or '-'}" for k, v in r.versions.items()))
    return 0 if r.passed else 1


def cmd_info(args: argparse.Namespace) -> int:
    from sarvessel.runtime.board.tools import info

    data = info(args.path)
    if args.json:
        print(json.dumps(json_safe(data), indent=2, allow_nan=False))
        return 0
    print(f"{data['path']}: board present {data['board_present']} ({data['machine']}); "
          f"recovery: {data['recovery']}")
    for label in ("installed", "previous"):
        d: dict[str, Any] | None = data[label]
        if d is None:
            print(f"  {label}: none")
            continue
        print(f"  {label}:")
        for k, v in d.items():
            print(f"    {k}: {v}")
    print("  " + ", ".join(f"{k} {v or '-'}" for k, v in data["versions"].items()))
    return 0
