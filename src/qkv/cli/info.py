"""``qkv info PRESET``: parameter count and FLOPs per token of a model preset."""

from __future__ import annotations

import argparse
import json

import torch

from qkv.cli import CLIError
from qkv.models import (
    build,
    count_parameters,
    family,
    flops_per_token,
    non_embedding_parameters,
    preset_config,
    preset_names,
)


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="parameter count and FLOPs per token of a model preset",
        description="Build a model preset on the meta device (no memory for weights) and "
        "print its parameter count and forward FLOPs per token "
        "(2N + 2 n_attn n_ctx d_attn, Kaplan et al. 2020). Presets: " + ", ".join(preset_names()),
    )
    p.add_argument("preset", metavar="PRESET", help="a preset name, e.g. gpt2-small")
    p.add_argument("--seq-len", type=int, default=None, help="context n_ctx (default: max_len)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _flops(cfg: object, seq_len: int | None) -> tuple[int | None, str]:
    """FLOPs per token, or None and why not."""
    found = family.family_of(cfg)
    if found is not None and not found.per_token_flops:
        return None, "the stages have different token counts"  # hierarchical
    if seq_len is None:
        return None, "the model reads no sequence"
    return flops_per_token(cfg, seq_len), ""  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    names = preset_names()
    if args.preset not in names:
        raise CLIError(f"unknown preset {args.preset!r}; known presets: {', '.join(names)}")
    if args.seq_len is not None and args.seq_len <= 0:
        raise CLIError(f"--seq-len must be positive, got {args.seq_len}")
    cfg = preset_config(args.preset)
    with torch.device("meta"):
        model = build(cfg)
    seq_len = args.seq_len if args.seq_len is not None else getattr(cfg, "max_len", None)
    flops, why_not = _flops(cfg, seq_len)
    info = {
        "preset": args.preset,
        "model": type(model).__name__,
        "family": cfg.family,
        "summary": family.get(cfg.family).summary,
        "parameters": count_parameters(model),
        "non_embedding_parameters": non_embedding_parameters(model),
        "seq_len": seq_len,
        "flops_per_token": flops,
        "config": cfg.to_dict(),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.preset}: {info['model']} (family {cfg.family!r})")
    if info["summary"]:
        print(f"  {info['summary']}")
    print(f"  parameters:               {info['parameters']:>15,}")
    print(f"  non-embedding parameters: {info['non_embedding_parameters']:>15,}")
    if info["flops_per_token"] is None:
        print(f"  forward FLOPs per token:  n/a ({why_not})")
    else:
        print(
            f"  forward FLOPs per token:  {info['flops_per_token']:>15,}  "
            f"(2N + 2 n_attn n_ctx d_attn, n_ctx={seq_len}; Kaplan et al. 2020)"
        )
    fields = ", ".join(f"{k}={v!r}" for k, v in cfg.to_dict().items() if k != "family")
    print(f"  config: {fields}")
    return 0
