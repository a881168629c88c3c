"""The ``qkv`` command line. Each subcommand lives in its own module with ``register``
(adds its parser) and ``run`` (calls the library); this file only wires them."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from qkv._version import __version__

#: subcommand name -> module under qkv.cli implementing ``register(subparsers)``
SUBCOMMANDS: dict[str, str] = {
    "demo": "qkv.cli.demo",
    "info": "qkv.cli.info",
    "train": "qkv.cli.train",
    "generate": "qkv.cli.generate",
    "eval": "qkv.cli.eval",
    "viz": "qkv.cli.viz",
    "bench": "qkv.cli.bench",
}


class CLIError(Exception):
    """A user error: printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qkv",
        description="qkv: attention mechanisms and Transformers in PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"qkv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in SUBCOMMANDS.items():
        importlib.import_module(mod).register(sub, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError) as e:
        # bad input (unknown task, missing/ill-formed data, bad checkpoint): no traceback
        if os.environ.get("QKV_DEBUG"):
            raise
        print(f"qkv {args.command}: error: {e}", file=sys.stderr)
        return 2


__all__ = ["SUBCOMMANDS", "CLIError", "build_parser", "main"]
