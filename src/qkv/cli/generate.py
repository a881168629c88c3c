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
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint or run directory")
    source.add_argument(
        "--hf",
        metavar="DIR",
        help="a Hugging Face model directory (config.json, weights, tokenizer.json)",
    )
    p.add_argument("--device", default="cpu")
    add_generation_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    inputs = args.inputs or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if args.hf:
        from qkv.tasks.hf import generate_text

        for out in generate_text(args.hf, inputs, device=args.device, **generation_kwargs(args)):
            print(out)
        return 0
    from qkv.tasks import load_trained

    model, task = load_trained(args.checkpoint, device=args.device)
    for out in task.predict(model, inputs, **generation_kwargs(args)):
        print(out)
    return 0
