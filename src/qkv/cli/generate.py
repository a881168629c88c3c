"""``qkv generate``: translate, continue text or classify with a trained checkpoint."""

from __future__ import annotations

import argparse
import sys

from qkv.cli._common import add_device_arg, add_generation_args, generation_kwargs


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="generate with a trained checkpoint (translate, continue text, classify, draw)",
        description="Generate outputs for INPUT arguments, or for each line of stdin when none "
        "is given: a translation (encoder-decoders), the prompt and its continuation "
        "(language models), or the top classes (classifiers; an input is an image file or "
        "SPLIT:N, e.g. test:0, for image tasks), or the path of a PNG drawn from the "
        "caption (text2image, in --out-dir).",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="texts (or, for image classifiers, image files or SPLIT:N); default: stdin lines",
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="an input text, after the INPUT arguments (repeatable)",
    )
    p.add_argument(
        "--out-dir",
        default=".",
        metavar="DIR",
        help="where tasks that make images (text2image) write their PNGs (default: .)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint or run directory")
    source.add_argument(
        "--hf",
        metavar="DIR",
        help="a Hugging Face model directory (config.json, weights, tokenizer.json)",
    )
    add_device_arg(p)
    add_generation_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    inputs = [*args.inputs, *args.prompt] or [
        line.rstrip("\n") for line in sys.stdin if line.strip()
    ]
    kw = generation_kwargs(args)
    if args.hf:
        from qkv.tasks.hf import generate_text

        for out in generate_text(args.hf, inputs, device=args.device, **kw):
            print(out)
        return 0
    from qkv.tasks import load_trained

    model, task = load_trained(args.checkpoint, device=args.device)
    if task.kind == "classify":
        print(f"{task.name} classifier: top classes of each input", file=sys.stderr)
    if task.kind == "image":
        print(f"{task.name}: the PNG written for each input", file=sys.stderr)
        kw["out_dir"] = args.out_dir
    outputs = task.predict(model, inputs, **kw)
    for prompt, out in zip(inputs, outputs):
        print(prompt + out if task.kind == "lm" else out)  # a language model echoes its prompt
    return 0
