"""Shared pieces of ``qkv bench``'s parsers: list options, the options -> config mapping,
running a benchmark and reporting it, and the option groups every peer benchmark takes."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from qkv.cli import CLIError
from qkv.cli._common import _threads, note_threads
from qkv.cli._threads import choose_threads

ConfigT = TypeVar("ConfigT")


def _csv(cast: Callable[[str], object]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            return tuple(cast(x.strip()) for x in text.split(",") if x.strip())
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list, got {text!r}: {e}"
            ) from e

    return parse


def _add_names(p: argparse.ArgumentParser, flag: str, names: Iterable[str]) -> None:
    """Add ``flag``: a comma-separated subset of ``names``, all of them by default."""
    names = tuple(names)
    p.add_argument(
        flag, type=_csv(str), default=names, help=f"from {','.join(names)} (default: all)"
    )


def _add_modes(p: argparse.ArgumentParser, modes: tuple[str, ...]) -> None:
    """Add ``--mode``: ``fwd`` (inference) and/or ``fwdbwd`` (forward + backward)."""
    p.add_argument(
        "--mode",
        dest="modes",
        metavar="MODE",
        type=_csv(str),
        default=modes,
        help="fwd,fwdbwd (default: both)",
    )


def _bytes(gib: float | None) -> float | None:
    """``--memory-limit`` (GiB) in bytes, as the configs take it."""
    return None if gib is None else gib * 2**30


def _config(cls: type[ConfigT], args: argparse.Namespace, **converted: Any) -> ConfigT:
    """The benchmark config ``cls`` (a dataclass) from the parsed options.

    Each option's ``dest`` is the name of the field it sets, so the options need no list of
    their own here (the tests check that every option names a field); fields without an
    option keep the config's defaults. A ``--threads`` left unset gets the commands' default
    (:func:`~qkv.cli._threads.choose_threads`), said on standard error at the end.

    Args:
        cls: the config class.
        args: the parsed options.
        **converted: fields to set from an option's value converted first, e.g. GiB to bytes.

    Raises:
        CLIError: the config rejects a value (the user's error: no traceback).
    """
    names = {f.name for f in fields(cls)}
    options = {k: v for k, v in vars(args).items() if k in names}
    if "threads" in options and options["threads"] is None:  # --threads not given
        choice = choose_threads()
        options["threads"] = choice.threads
        note_threads(args, "bench", choice)
    try:
        return cls(**(options | converted))
    except ValueError as e:
        raise CLIError(str(e)) from e


def _run_and_report(
    run: Callable[..., Any],
    config: object,
    table: Callable[[Any], str],
    line: Callable[[Any], str],
    path: Path | None,
) -> int:
    """Run a benchmark, printing ``line(row)`` as each row finishes (runs take minutes),
    then print ``table(result)`` and, given a ``path`` (``--json``), write the result there.

    Returns:
        The exit code, 0.
    """
    result = run(config, progress=lambda row: print(line(row), flush=True))
    print()
    print(table(result))
    if path is not None:
        from qkv.bench._timing import write_json

        write_json(path, result.to_json())
        print(f"\nwrote {path}")
    return 0


def _add_timing_args(
    p: argparse.ArgumentParser, *, repeats: int, min_repeats: int, warmup: int, budget: float
) -> None:
    """Add the "timing" group (:func:`~qkv.bench._timing.time_interleaved`'s settings, with
    this benchmark's defaults), then ``--seed`` and ``--json``."""
    g = p.add_argument_group("timing (all implementations interleaved in one process)")
    g.add_argument(
        "--threads",
        type=_threads,
        default=2,
        help="torch.set_num_threads for every peer (default: 2)",
    )
    g.add_argument(
        "--repeats", type=int, default=repeats, help=f"timed rounds (default: {repeats})"
    )
    g.add_argument(
        "--min-repeats",
        type=int,
        default=min_repeats,
        help=f"rounds every implementation runs whatever the budget (default: {min_repeats})",
    )
    g.add_argument("--warmup", type=int, default=warmup, help=f"default: {warmup}")
    g.add_argument(
        "--time-budget",
        type=float,
        default=budget,
        help=f"seconds of timed calls per group, shared by its implementations; slow ones "
        f"then sit out later rounds (default: {budget:g})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs (default: 0)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")


def _add_shape_args(p: argparse.ArgumentParser) -> None:
    """Add the "model shape" group: the fields of :class:`~qkv.bench._twins.ModelShape`
    that the train, generate and record configs share."""
    g = p.add_argument_group("model shape (identical for qkv and its peers)")
    g.add_argument("--d-model", type=int, default=256, help="default: 256")
    g.add_argument("--n-heads", type=int, default=4, help="default: 4")
    g.add_argument("--n-layers", type=int, default=6, help="decoder layers (default: 6)")
    g.add_argument("--vocab-size", type=int, default=8192, help="default: 8192")
    g.add_argument("--d-ff", type=int, help="feed-forward width (default: 4 d)")
