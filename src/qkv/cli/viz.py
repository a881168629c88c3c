"""``qkv viz``: an interactive HTML attention report (and heatmaps) for a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from qkv.cli import CLIError
from qkv.cli._common import (
    add_device_arg,
    apply_threads,
    check_question_text,
    check_takes_question,
    path_arg,
    refuse_unless,
)


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="write an interactive attention report for a checkpoint and an input",
        description="Run a trained checkpoint on INPUT, record every attention head "
        "(qkv.interp.record_attention) and write a self-contained HTML report: head view, "
        "model view, heatmap and head statistics, for encoder self-, decoder self- and "
        "cross-attention. Encoder-decoders read INPUT as the source and their own greedy "
        "output (or --target) as the target. Image models (ViT, Swin, DETR) also get "
        "figures of attention on the image and an image panel: hover a patch to see where "
        "it attends (click to pin; a class-token button; DETR's object queries from a list).",
    )
    p.add_argument(
        "input",
        metavar="INPUT",
        help="the input text; for image tasks (ViT, Swin, DETR, clip, vqa) an image file or "
        "SPLIT:N (test:0)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=path_arg, help="checkpoint or run directory")
    source.add_argument(
        "--hf",
        type=path_arg,
        metavar="DIR",
        help="a Hugging Face model directory (config.json, weights, tokenizer.json)",
    )
    p.add_argument(
        "--out", type=path_arg, default="report.html", help="HTML file (default: report.html)"
    )
    p.add_argument("--png", type=path_arg, metavar="DIR", help="also save PNG heatmaps into DIR")
    p.add_argument(
        "--target",
        help="the decoder's target text of an encoder-decoder (translation, summaries, asr; "
        "default: the model's own output); refused by the other models",
    )
    p.add_argument("--title", help="page title")
    p.add_argument(
        "--question",
        help="vqa: the question about the image INPUT (default: the scene's first generated one)",
    )
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    apply_threads(args, "viz")
    out, png = Path(args.out), Path(args.png) if args.png else None
    if out.is_dir():
        raise CLIError(f"--out {out} is a directory; give the HTML file to write")
    if not out.parent.is_dir():  # checked before the model runs, not after
        raise CLIError(f"--out {out}: the directory {out.parent} does not exist")
    if png is not None and png.exists() and not png.is_dir():
        raise CLIError(f"--png {png} is a file; give a directory for the figures")
    check_question_text(args.question)
    if args.hf:
        if args.question is not None:
            raise CLIError("--question needs a vqa --checkpoint; a --hf model takes none")
        from qkv.cli._hf import viz_hf

        path = viz_hf(
            args.hf,
            args.input,
            args.out,
            png_dir=args.png,
            target=args.target,
            device=args.device,
            title=args.title,
        )
        print(f"wrote {path}" + (f" and figures in {args.png}" if args.png else ""))
        return 0
    from qkv.tasks import load_trained, report_for_task

    model, task = load_trained(args.checkpoint, device=args.device)
    if args.question is not None:
        check_takes_question(task)
    if args.target is not None:
        refuse_unless(task, "--target", lambda cls: cls.viz_target, "has no decoder target")
    path = report_for_task(
        model,
        task,
        args.input,
        args.out,
        target=args.target,
        png_dir=args.png,
        title=args.title,
        question=args.question,
    )
    print(f"wrote {path}" + (f" and figures in {args.png}" if args.png else ""))
    return 0
