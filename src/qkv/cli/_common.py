"""Argument helpers shared by subcommands: flags generated from config dataclasses, model
overrides, decoding options."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal

#: The namespace attribute holding the config fields a user set explicitly.
GIVEN = "_given_fields"


def _arg_type(tp: Any) -> tuple[Callable[[str], Any] | None, tuple[Any, ...] | None, bool]:
    """``(type, choices, is_bool)`` for a dataclass field's annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _arg_type(args[0])
    if origin is Literal:
        return str, typing.get_args(tp), False
    if tp is bool:
        return None, None, True
    if origin is tuple:
        inner = typing.get_args(tp)[0]

        def parse(text: str) -> tuple[Any, ...]:
            try:
                return tuple(inner(x) for x in text.split(","))
            except ValueError as e:
                raise argparse.ArgumentTypeError(
                    f"expected comma-separated numbers, got {text!r}"
                ) from e

        return parse, None, False
    if tp is int:
        return _int, None, False
    return tp, None, False


def _int(text: str) -> int:
    """An int flag that also reads ``1e6`` (an exact integer in float notation)."""
    try:
        return int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if not f.is_integer():
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        return int(f)


def _show_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def add_config_args(
    parser: argparse.ArgumentParser, cls: type, *, skip: Sequence[str] = ()
) -> None:
    """Add one flag per field of the dataclass ``cls`` (``eval_every`` -> ``--eval-every``),
    with the type, choices, default and help text from the field and its ``metadata``
    (``help``, ``group``, ``flag``), grouped by ``metadata["group"]``.

    Unset flags stay out of the namespace, so :func:`given_fields` can tell what the user
    chose from what defaulted.
    """
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta = f.metadata
        group_name = meta.get("group", "options")
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        g = groups[group_name]
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{meta.get('help', '')} (default: {_show_default(default)})".strip()
        conv, choices, is_bool = _arg_type(hints[f.name])
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if is_bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if choices is not None:
            kw["choices"] = choices
        g.add_argument(flag, type=conv, metavar=f.name.upper() if choices is None else None, **kw)


def given_fields(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of dataclass ``cls`` that were set on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["d_model=128", "dropout=0.1", "pos=rope"]`` -> a dict with JSON-parsed values."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--model expects KEY=VALUE (e.g. d_model=128), got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def add_generation_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--strategy", choices=["greedy", "beam", "sample"], default="greedy")
    g.add_argument("--beam-size", type=int, default=4)
    g.add_argument("--length-penalty", type=float, default=0.6, help="GNMT alpha (default 0.6)")
    g.add_argument("--max-new-tokens", type=int, default=None)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--no-cache", action="store_true", help="decode without the KV cache")
    g.add_argument("--seed", type=int, default=0)


def generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    kw: dict[str, Any] = {
        "strategy": args.strategy,
        "beam_size": args.beam_size,
        "length_penalty": args.length_penalty,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "use_cache": not args.no_cache,
        "generator": torch.Generator().manual_seed(args.seed),
    }
    if args.max_new_tokens is not None:
        kw["max_new_tokens"] = args.max_new_tokens
    return kw
