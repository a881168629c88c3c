"""``qkv train``: train a model on a task (single process, or DDP under torchrun)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qkv.cli import CLIError
from qkv.cli._common import parse_overrides


def register(sub: argparse._SubParsersAction, name: str) -> None:
    from qkv.tasks import TASKS

    p = sub.add_parser(
        name,
        help="train a model on a task",
        description="Train a model on a task. Under `torchrun --nproc_per_node=N -m qkv train "
        "...` the global batch is split over N processes (DDP; gloo on CPU, nccl on GPU).",
    )
    p.add_argument("--task", default="synthetic", help=f"one of: {', '.join(sorted(TASKS))}")
    p.add_argument("--data", help="data file (translate: pairs.tsv; lm: text file)")
    p.add_argument("--out", default=None, help="run directory (default: runs/TASK)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--preset", help="model preset sized to the task (default: the task's own)")
    p.add_argument("--model", action="append", metavar="KEY=VALUE", help="model config override")
    p.add_argument("--attention", help="attention pattern for tasks that take one (listops)")
    d = p.add_argument_group("data")
    d.add_argument("--data-seed", type=int, default=0)
    d.add_argument("--n-train", type=int)
    d.add_argument("--max-len", type=int)
    d.add_argument("--tokenizer", choices=["char", "word", "bpe"])
    d.add_argument("--vocab-size", type=int)
    t = p.add_argument_group("optimization")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--grad-accum", type=int, default=1)
    t.add_argument("--optimizer", choices=["adam", "adamw"], default="adam")
    t.add_argument("--lr", type=float, default=1.0, help="peak lr, or the noam factor")
    t.add_argument("--schedule", choices=["noam", "cosine", "constant"], default="noam")
    t.add_argument("--warmup", type=int, default=400)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--adam-eps", type=float, default=1e-9, help="Adam epsilon (paper: 1e-9)")
    t.add_argument("--clip-norm", type=float, default=1.0)
    t.add_argument("--label-smoothing", type=float, default=0.1)
    t.add_argument("--seed", type=int, default=0)
    e = p.add_argument_group("evaluation and checkpoints")
    e.add_argument("--eval-every", type=int, default=0)
    e.add_argument("--eval-limit", type=int)
    e.add_argument("--eval-beam", type=int, default=1)
    e.add_argument("--save-every", type=int, default=0)
    e.add_argument("--keep-last", type=int, default=5)
    e.add_argument("--average-last", type=int, default=1)
    e.add_argument("--patience", type=int, default=0)
    e.add_argument("--log-every", type=int, default=10)
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default="auto")
    r.add_argument("--amp", choices=["auto", "bf16", "off"], default="auto")
    r.add_argument("--threads", type=int)
    r.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qkv.tasks import TaskOptions, build_trainer
    from qkv.training import TrainConfig

    out = Path(args.out or f"runs/{args.task}")
    if not args.resume and (out / "latest").exists():
        raise CLIError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        optimizer=args.optimizer,
        lr=args.lr,
        schedule=args.schedule,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        eps=args.adam_eps,
        clip_norm=args.clip_norm,
        label_smoothing=args.label_smoothing,
        eval_every=args.eval_every,
        eval_limit=args.eval_limit,
        eval_beam=args.eval_beam,
        save_every=args.save_every,
        keep_last=args.keep_last,
        average_last=args.average_last,
        patience=args.patience,
        log_every=args.log_every,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        progress=not args.no_progress,
        threads=args.threads,
    )
    extra = {"attention": args.attention} if args.attention else {}
    options = TaskOptions(
        data=args.data,
        seed=args.data_seed,
        n_train=args.n_train,
        max_len=args.max_len,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        extra=extra,
    )
    trainer = build_trainer(
        args.task,
        cfg,
        out,
        options=options,
        preset=args.preset,
        model_overrides=parse_overrides(args.model),
        resume=args.resume,
    )
    summary = trainer.fit()
    if trainer.dist.is_main:
        print(json.dumps(summary, indent=2, default=str))
    return 0
