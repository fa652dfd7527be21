"""The top-level ``sarvessel`` command on a runtime-only install (``make demo``, the board)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: Runs the command with module ``mod`` made unimportable, as on a runtime-only install.
BLOCK = ("import sys; sys.modules[{mod!r}] = None; from sarvessel.cli import main; "
         "sys.exit(main({argv!r}))")


@pytest.mark.parametrize(("mod", "argv"), [
    ("torch", ["train", "--out", "{tmp}/run"]),
    ("torch", ["export", "{tmp}/ck.pt", "--out", "{tmp}/x"]),
    ("onnx", ["hw", "estimate", "{tmp}/m.onnx"]),
])
def test_host_commands_without_the_host_tools_say_what_to_install(tmp_path: Path, mod: str,
                                                                 argv: list[str]):
    """These once ended in a ModuleNotFoundError traceback after ``make demo``'s install."""
    (tmp_path / "ck.pt").write_bytes(b"x")
    (tmp_path / "m.onnx").write_bytes(b"x")
    argv = [a.format(tmp=tmp_path) for a in argv]
    proc = subprocess.run([sys.executable, "-c", BLOCK.format(mod=mod, argv=argv)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"needs {mod}, which is not installed here" in proc.stderr
    assert "use `make test`'s .venv, which has every host tool" in proc.stderr


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sarvessel", *args], capture_output=True,
                          text=True, timeout=300)


def test_no_command_is_a_usage_error_on_stderr_with_a_hint():
    """It printed the whole help on stdout and exited 2 (issue #34, 9); the convention kept
    is argparse's for a missing argument: usage and one line on stderr, exit 2."""
    proc = _run()
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("usage: sarvessel")
    assert "sarvessel: error: no command given; `sarvessel --help` lists the commands" in \
        proc.stderr
    assert _run("--help").returncode == 0


@pytest.mark.parametrize(("argv", "verbose", "quiet"), [
    (["score", "p.csv", "l.csv", "-q"], False, True),
    (["-q", "score", "p.csv", "l.csv"], False, True),
    (["score", "p.csv", "l.csv", "--verbose"], True, False),
    (["-v", "score", "p.csv", "l.csv"], True, False),
    (["score", "p.csv", "l.csv"], False, False),
    (["hw", "check-deploy", "pkg", "-q"], False, True),
])
def test_log_options_work_after_the_command_too(argv, verbose, quiet):
    from sarvessel.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.verbose, args.quiet) == (verbose, quiet)


def test_every_option_and_positional_has_help_and_descriptions_are_plain_text():
    """``train`` options had no help and its description was raw reStructuredText."""
    import argparse

    from sarvessel.cli import _subparsers, build_parser

    parser = build_parser()
    missing, rst = [], []
    for p in [parser, *_subparsers(parser)]:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help:
                missing.append(f"{p.prog} {'/'.join(action.option_strings) or action.dest}")
        if any(mark in (p.description or "") for mark in ("``", ":func:", ":class:", ":mod:")):
            rst.append(p.prog)
    assert missing == [] and rst == []
