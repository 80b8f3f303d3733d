"""The ``convviz-check`` command: an argparse tree whose subcommands live with the code
they drive. Each subcommand module provides ``add_parser(subparsers)`` (registering a
``func``); importing them is light (no Keras) so ``--help`` is fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module defines add_parser(subparsers).
SUBCOMMANDS: list[str] = [
    "convviz_check.examples.demo",  # demo
    "convviz_check.cli.explain",  # explain
    "convviz_check.cli.golden",  # golden list/show/diff/accept/prune
    "convviz_check.cli.agree",  # agree
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convviz-check",
        description="Make what a convnet looks at testable: activations, filter patterns "
        "and Grad-CAM, golden files and cross-backend agreement.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"convviz_check {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in SUBCOMMANDS:
        importlib.import_module(mod_name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ..errors import ConvvizError

    try:
        return int(args.func(args) or 0)
    except ConvvizError as e:
        print(f"convviz-check: error: {e}", file=sys.stderr)
        return 2
