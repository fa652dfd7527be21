"""The ``sarvessel synth`` command."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``synth`` to the ``sarvessel`` parser."""
    from sarvessel.synth.generate import register_cli

    register_cli(sub)
