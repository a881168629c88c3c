"""``qkv generate``: translate / continue text with a trained checkpoint."""

from __future__ import annotations

import argparse
import sys

from qkv.cli._common import add_generation_args, generation_kwargs


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="generate with a trained checkpoint",
        description="Generate outputs for INPUT arguments, or for each line of stdin when none "
        "is given.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT")
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    p.add_argument("--device", default="cpu")
    add_generation_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qkv.training import load_trained

    model, task = load_trained(args.checkpoint, device=args.device)
    inputs = args.inputs or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for out in task.predict(model, inputs, **generation_kwargs(args)):
        print(out)
    return 0
