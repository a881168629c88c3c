"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
import json
from typing import Any


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["d_model=128", "dropout=0.1", "pos=rope"]`` -> a dict with JSON-parsed values."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--model expects KEY=VALUE, got {item!r}")
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
