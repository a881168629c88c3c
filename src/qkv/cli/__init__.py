"""The ``qkv`` command line. Each subcommand lives in its own module with ``register``
(adds its parser) and ``run`` (calls the library); this file only wires them."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from qkv import _clock
from qkv._resources import ResourceLimitError, is_exhaustion, start_error
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


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``qkv: error: ...`` (exit 2), instead
    of a usage block and a second line.

    A subcommand whose flags depend on another flag's value (``qkv train --task T`` takes
    the task's own) sets :attr:`prepare`, called with the parser and its argument strings
    before they are parsed; it may add flags, or set :attr:`keep` to the namespace
    attribute that collects the strings no flag took (parsed later, instead of refused).
    """

    prepare: Callable[[Parser, list[str]], None] | None = None
    keep: str | None = None

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        strings = list(sys.argv[1:] if args is None else args)
        if self.prepare is not None:
            self.prepare(self, strings)
        ns, rest = super().parse_known_args(strings, namespace)
        if self.keep is not None and rest:
            setattr(ns, self.keep, [*(getattr(ns, self.keep, None) or []), *rest])
            rest = []
        return ns, rest

    def error(self, message: str) -> NoReturn:
        sub = self.prog.removeprefix("qkv").strip()
        where = f"{sub}: " if sub else ""
        self.exit(2, f"qkv: error: {where}{message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="qkv",
        description="qkv: attention mechanisms and Transformers in PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"qkv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, mod in SUBCOMMANDS.items():
        importlib.import_module(mod).register(sub, name)
    return parser


#: Exceptions that mean bad input (a flag, a file, a checkpoint), not a bug in qkv: printed
#: as one line, exit 2. ``QKV_DEBUG=1`` shows the traceback instead.
USER_ERRORS: tuple[type[BaseException], ...] = (CLIError, ValueError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    # the command's clock (``--max-time`` covers the whole command): from the shell, since
    # qkv was imported; called from Python with arguments, from this call
    started = _clock.STARTED if argv is None else time.monotonic()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    args.started = started
    try:
        code = int(args.func(args) or 0)
    except USER_ERRORS as e:
        if os.environ.get("QKV_DEBUG"):
            raise
        print(f"qkv: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if os.environ.get("QKV_DEBUG"):
            raise
        msg = str(e) or "interrupted"
        print(f"\nqkv: {msg}", file=sys.stderr)
        return 130
    except BaseException as e:  # a thread that could not start: a panic, "can't start new thread"
        if os.environ.get("QKV_DEBUG") or not _could_not_start(e):
            raise
        print(f"qkv: error: {_one_line(e)}", file=sys.stderr)
        return 2
    note = getattr(args, "threads_note", None)  # the default threads, said once it worked
    if note and code == 0:
        print(note, file=sys.stderr)
    return code


def _could_not_start(e: BaseException) -> bool:
    """Whether ``e`` is a process or thread that could not start, raised where qkv did not
    say what it was starting: a Rust panic, ``can't start new thread``, or ``fork``'s bare
    errno 11 (with no file: an ``OSError`` of a file is about that file)."""
    if isinstance(e, ResourceLimitError) or not is_exhaustion(e):
        return False
    return not isinstance(e, OSError) or (e.errno == errno.EAGAIN and e.filename is None)


def _one_line(e: BaseException) -> str:
    if _could_not_start(e):  # "[Errno 11] Resource temporarily unavailable", no word of what
        e = start_error("a process or thread", e, "run with fewer threads (--threads 1)")
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    return " ".join(text.split())


__all__ = ["SUBCOMMANDS", "USER_ERRORS", "CLIError", "Parser", "build_parser", "main"]
