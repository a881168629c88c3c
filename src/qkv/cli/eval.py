"""``qkv eval``: a checkpoint's metrics on a split of its task, or several checkpoints of one
task (and its baseline) side by side on the same split."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from qkv.cli import CLIError
from qkv.cli._common import (
    _positive_int,
    add_device_arg,
    add_oov_penalty_arg,
    apply_threads,
    number_arg,
    oov_penalty_kwargs,
    path_arg,
    refuse_unless,
)


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="evaluate a checkpoint on its task",
        description="Evaluate a checkpoint on a split of the task it was trained on (BLEU, "
        "chrF and exact match for translation, bits per character for language models, "
        "accuracy for classifiers) and print the metrics.",
    )
    p.add_argument(
        "--checkpoint",
        type=path_arg,
        required=True,
        action="append",
        help="checkpoint or run directory; repeat it to compare models of one task on the "
        "same split in one table",
    )
    p.add_argument(
        "--baseline",
        action="store_true",
        help="add the task's baseline to the table, trained on the same training split "
        "(classify: TF-IDF + logistic regression)",
    )
    p.add_argument("--split", choices=["valid", "test"], default="test", help="(default: test)")
    p.add_argument(
        "--limit",
        type=_positive_int,
        help="at most this many examples, for every row (default: the split)",
    )
    p.add_argument(
        "--beam-size",
        type=_positive_int,
        help="beam search width of the tasks that decode in evaluation (translation, "
        "summaries, captions, transcripts; default: 1, greedy; asr: 8)",
    )
    p.add_argument(
        "--ctc-prefix-weight",
        type=_weight,
        metavar="W",
        help="asr: joint CTC/attention decoding, the weight of the CTC head's prefix score "
        "(0: the attention decoder alone; default: the run's --ctc-prefix-weight)",
    )
    p.add_argument(
        "--lm-weight",
        type=_weight,
        metavar="W",
        help="asr: shallow fusion, the weight of the training transcripts' n-gram "
        "(0: none; default: the run's --lm-weight)",
    )
    add_oov_penalty_arg(p)
    p.add_argument("--batch-size", type=_positive_int, default=64, help="(default: 64)")
    p.add_argument(
        "--json", action="store_true", help="print the metrics as one JSON object on stdout"
    )
    add_device_arg(p)
    p.set_defaults(func=run)


def _weight(text: str) -> float:
    """A ``--ctc-prefix-weight`` or ``--lm-weight`` value: a number in [0, 1]."""
    return number_arg(text, lambda w: 0.0 <= w <= 1.0, "in [0, 1]")


#: The decoding weights ``qkv eval`` takes, and what a task that refuses one lacks.
_WEIGHTS = {
    "ctc_prefix_weight": "has no joint CTC/attention decoding",
    "lm_weight": "has no language model to fuse",
}


def _decoding(task: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The decoding keywords of ``evaluate``: ``beam_size`` (1 when not given, refused for
    a task whose evaluation decodes nothing), and ``ctc_prefix_weight`` and ``lm_weight``
    when given (refused for a task without joint CTC/attention decoding or a language
    model to fuse)."""
    kw: dict[str, Any] = {"beam_size": _check_beam(task, args)}
    for name, does_not in _WEIGHTS.items():
        if getattr(args, name) is None:
            continue
        refuse_unless(
            task,
            "--" + name.replace("_", "-"),
            lambda cls, name=name: cls.eval_beam and cls.predict_takes(name),
            does_not,
        )
        kw[name] = getattr(args, name)
    return kw | oov_penalty_kwargs(task, args)


def _check_beam(task: Any, args: argparse.Namespace) -> int:
    """The ``--beam-size`` to evaluate with (the task's ``default_beam`` when not given: 1,
    asr's 8), refused for a task whose evaluation decodes nothing (a classifier, a
    language model's bits per character)."""
    if args.beam_size is None:
        return task.default_beam
    refuse_unless(task, "--beam-size", lambda cls: cls.eval_beam, "does not decode in evaluation")
    return int(args.beam_size)


def run(args: argparse.Namespace) -> int:
    apply_threads(args, "eval")
    if len(args.checkpoint) > 1 or args.baseline:
        return _compare(args)
    args.checkpoint = args.checkpoint[0]
    return _one(args)


def _compare(args: argparse.Namespace) -> int:
    """One row per checkpoint (and the baseline) on the same split."""
    from qkv.tasks import load_task, load_trained
    from qkv.training import check_checkpoint

    rows: dict[str, dict[str, float]] = {}
    first = None
    for directory in args.checkpoint:
        model, _ = load_trained(directory, device=args.device)
        task = load_task(check_checkpoint(directory), rebuild_data=True)
        if first is None:
            first = task
        mine, theirs = task.split_options(), first.split_options()
        if task.name != first.name or mine != theirs:
            differ = [f"{k}={mine[k]!r} vs {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]
            raise CLIError(
                f"--checkpoint {directory}: another task or split than {args.checkpoint[0]} "
                f"({task.name} vs {first.name}; {'; '.join(differ) or 'same options'})"
            )
        rows[directory] = task.evaluate(
            model,
            args.split,
            batch_size=args.batch_size,
            limit=args.limit,
            **_decoding(task, args),
        )
    assert first is not None
    if args.baseline:  # scored on the same examples as the rows above
        rows["baseline"] = first.baseline(args.split, limit=args.limit)
    if args.json:
        print(json.dumps({"split": args.split, "rows": rows}))
        return 0
    keys = list(dict.fromkeys(k for metrics in rows.values() for k in metrics))
    width = max(len(k) for k in rows)
    print(f"{first.name}, {args.split} split:", file=sys.stderr)
    cols = {k: max(9, len(k)) for k in keys}
    print(f"{'model':<{width}}  " + "  ".join(f"{k:>{cols[k]}}" for k in keys))
    for name, metrics in rows.items():
        cells = (
            f"{metrics[k]:{cols[k]}.2f}" if k in metrics else f"{'-':>{cols[k]}}" for k in keys
        )
        print(f"{name:<{width}}  " + "  ".join(cells))
    return 0


def _one(args: argparse.Namespace) -> int:
    from qkv.tasks import load_task, load_trained
    from qkv.training import check_checkpoint

    t0 = time.perf_counter()
    model, _ = load_trained(args.checkpoint, device=args.device)
    task = load_task(check_checkpoint(args.checkpoint), rebuild_data=True)
    decoding = _decoding(task, args)
    metrics = task.evaluate(
        model, args.split, batch_size=args.batch_size, limit=args.limit, **decoding
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
