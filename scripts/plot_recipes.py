"""Plot the learning curves of recipe runs: the headline validation metric against minutes
of training on the machine that ran them, from each run's ``metrics.jsonl``.

    python scripts/plot_recipes.py RUN_DIR [RUN_DIR ...] --out docs/recipes.png

Each run is one panel (its task's headline metric: BLEU, bpc, accuracy); a dashed line marks
the goal when ``--goal TASK=VALUE`` is given (e.g. ``--goal translate=10``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure


def curve(run: Path) -> tuple[str, str, list[float], list[float]]:
    """``(task, metric, minutes, values)`` of a run's evaluations."""
    task = json.loads((run / "checkpoints" / (run / "latest").read_text().strip()
                       / "task.json").read_text())["name"]  # fmt: skip
    minutes, values, metric = [], [], ""
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "eval" in rec and "elapsed" in rec and "averaged_over" not in rec:
            metric = metric or next(iter(rec["eval"]))
            minutes.append(rec["elapsed"] / 60)
            values.append(rec["eval"][metric])
    return task, metric, minutes, values


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--goal", action="append", default=[], metavar="TASK=VALUE")
    p.add_argument("--machine", default="2 CPU cores", help="what ran them, for the x label")
    args = p.parse_args()
    goals = {k: float(v) for k, v in (g.split("=") for g in args.goal)}
    fig = Figure(figsize=(4.2 * len(args.runs), 3.4), layout="constrained")
    axes = fig.subplots(1, len(args.runs), squeeze=False)[0]
    for ax, run in zip(axes, args.runs):
        task, metric, minutes, values = curve(run)
        ax.plot(minutes, values, marker="o", markersize=3)
        if task in goals:
            ax.axhline(goals[task], linestyle="--", color="gray", label=f"goal {goals[task]:g}")
            ax.legend(loc="best", fontsize=8)
        ax.set_title(f"{task}", fontsize=10)
        ax.set_xlabel(f"minutes of training ({args.machine})")
        ax.set_ylabel(f"valid {metric}")
        ax.grid(alpha=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
