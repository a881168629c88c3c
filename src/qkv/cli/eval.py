"""``qkv eval``: a checkpoint's metrics on a split of its task."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="evaluate a checkpoint on its task")
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--limit", type=int, help="at most this many examples")
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qkv.tasks import load_task, load_trained
    from qkv.training import check_checkpoint

    model, _ = load_trained(args.checkpoint, device=args.device)
    task = load_task(check_checkpoint(args.checkpoint), rebuild_data=True)
    metrics = task.evaluate(
        model, args.split, batch_size=args.batch_size, limit=args.limit, beam_size=args.beam_size
    )
    print(json.dumps(metrics, indent=2))
    return 0
