"""``qkv eval``: a checkpoint's metrics on a split of its task."""

from __future__ import annotations

import argparse
import json
import sys
import time

from qkv.cli._common import _positive_int, add_device_arg


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="evaluate a checkpoint on its task",
        description="Evaluate a checkpoint on a split of the task it was trained on (BLEU, "
        "chrF and exact match for translation, bits per character for language models, "
        "accuracy for classifiers) and print the metrics.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    p.add_argument("--split", choices=["valid", "test"], default="test", help="(default: test)")
    p.add_argument(
        "--limit", type=_positive_int, help="at most this many examples (default: the split)"
    )
    p.add_argument(
        "--beam-size", type=_positive_int, default=1, help="beam search width (default: 1, greedy)"
    )
    p.add_argument("--batch-size", type=_positive_int, default=64, help="(default: 64)")
    p.add_argument(
        "--json", action="store_true", help="print the metrics as one JSON object on stdout"
    )
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qkv.tasks import load_task, load_trained
    from qkv.training import check_checkpoint

    t0 = time.perf_counter()
    model, _ = load_trained(args.checkpoint, device=args.device)
    task = load_task(check_checkpoint(args.checkpoint), rebuild_data=True)
    metrics = task.evaluate(
        model, args.split, batch_size=args.batch_size, limit=args.limit, beam_size=args.beam_size
    )
    seconds = time.perf_counter() - t0
    if args.json:
        print(json.dumps({**metrics, "split": args.split, "seconds": round(seconds, 1)}))
        return 0
    width = max(len(k) for k in metrics)
    print(f"{task.name}, {args.split} split ({seconds:.0f} s):", file=sys.stderr)
    for k, v in metrics.items():
        print(f"  {k:<{width}}  {v:.4f}")
    return 0
