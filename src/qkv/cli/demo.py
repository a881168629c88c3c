"""``qkv demo``: the main job. Train a Transformer translator on the built-in synthetic
two-language grammar on CPU, then show what it learned."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from qkv.cli import CLIError
from qkv.tasks.synthetic import SyntheticTask

#: marks a directory written by ``qkv demo`` (which it may replace)
DEMO_MARKER = ".qkv-demo"

#: the demo trains the synthetic task with its recipe (qkv.tasks.SyntheticTask.recipe)
DEMO_STEPS: int = SyntheticTask.recipe["steps"]


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="train a translator on CPU and show what it learned (the main job)",
        description="Train a small Transformer (Vaswani et al. 2017) on qkv's synthetic "
        "two-language grammar (word reordering and agreement), report BLEU on held-out "
        "sentences, print sample translations (greedy and beam search), save the checkpoint "
        "and metrics.json, and write an attention report.",
    )
    p.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    p.add_argument(
        "--steps",
        type=int,
        default=DEMO_STEPS,
        help=f"training steps (default: {DEMO_STEPS}, the synthetic task's recipe)",
    )
    p.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: this 247k-parameter model gains little from more, "
        "and one thread cannot be slowed down by OpenMP oversubscription)",
    )
    p.add_argument(
        "--samples", type=int, default=8, help="sample translations to print (default: 8)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace --out even when it holds something other than a demo run (a previous "
        "demo's output is always replaced)",
    )
    p.set_defaults(func=run)


def _table(rows: list[tuple[str, ...]], headers: tuple[str, ...]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    import shutil

    from qkv.tasks import build_trainer, get_task

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()):
        if not ((out / DEMO_MARKER).is_file() or args.force):
            raise CLIError(
                f"--out {out} holds files that are not a qkv demo run; choose another --out "
                f"or pass --force to replace them"
            )
        shutil.rmtree(out)  # the previous demo: the main job runs afresh every time
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("a qkv demo run (qkv demo replaces this directory)\n")
    t0 = time.perf_counter()
    task = get_task("synthetic")
    cfg = task.train_config(
        {
            "steps": args.steps,
            "seed": args.seed,
            "threads": args.threads,
            "progress": not args.no_progress,
        }
    )
    trainer = build_trainer(task, cfg, out)
    model = trainer.model
    print(
        f"qkv demo: training a {sum(p.numel() for p in model.parameters()):,}-parameter "
        f"Transformer on {len(trainer.train_examples):,} synthetic sentence pairs "
        f"for {cfg.steps} steps (CPU, fp32)\n"
    )
    summary = trainer.fit()
    train_s = time.perf_counter() - t0
    greedy = task.evaluate(model, "test", beam_size=1)
    beam = task.evaluate(model, "test", beam_size=4)
    test = task.examples("test")
    n = min(args.samples, len(test))
    srcs = [ex[0] for ex in test[:n]]
    refs = [ex[1] for ex in test[:n]]
    hyp_g = task.predict(model, srcs, strategy="greedy")
    hyp_b = task.predict(model, srcs, strategy="beam", beam_size=4)
    rows = [(s, r, g, b) for s, r, g, b in zip(srcs, refs, hyp_g, hyp_b)]
    print("\nSample translations of held-out sentences:\n")
    print(_table(rows, ("source", "reference", "greedy", "beam (k=4, alpha=0.6)")))
    wall = time.perf_counter() - t0
    metrics = {
        "task": "synthetic",
        "steps": summary["step"],
        "train_loss": summary["train_loss"],
        "test_greedy": greedy,
        "test_beam4": beam,
        "train_seconds": round(train_s, 1),
        "wall_seconds": round(wall, 1),
        "checkpoint": str(out / "checkpoints"),
    }
    report = _write_report(model, task, srcs[0], out)
    if report:
        metrics["report"] = str(report)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"\nTest BLEU: greedy {greedy['bleu']:.2f}, beam {beam['bleu']:.2f}  "
        f"(chrF {beam.get('chrf', float('nan')):.2f}, exact match "
        f"{beam.get('exact_match', float('nan')):.1f}%)"
    )
    print(
        f"Wall time {wall:.0f} s. Checkpoint: {out}/checkpoints, metrics: {out}/metrics.json"
        + (f", attention report: {report}" if report else "")
    )
    print(f'Try: {_qkv_command()} generate --checkpoint {out} "{srcs[0]}"')
    return 0


def _qkv_command() -> str:
    """How this shell calls the running qkv: ``qkv`` when that is on the ``PATH``, else the
    script's path (``.venv/bin/qkv`` after ``make demo``), else ``python -m qkv``."""
    running = Path(sys.argv[0])
    on_path = shutil.which("qkv")
    if on_path and running.name == "qkv" and Path(on_path).resolve() == running.resolve():
        return "qkv"
    script = Path(sys.executable).parent / "qkv"
    if script.is_file():
        rel = os.path.relpath(script)
        rel = rel if os.sep in rel else f".{os.sep}{rel}"
        return shlex.quote(str(script) if rel.startswith("..") else rel)
    return f"{shlex.quote(sys.executable)} -m qkv"


def _write_report(model: Any, task: Any, sentence: str, out: Path) -> Path | None:
    try:
        from qkv.tasks import report_for_task
    except ImportError:
        return None
    return report_for_task(model, task, sentence, out / "attention.html")
