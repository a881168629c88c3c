"""A time budget over a whole command: what ``qkv train --max-time`` covers.

A library :class:`~qkv.training.Trainer` spends ``max_time`` in its loop and evaluates once
more after it. A command (``qkv train``, or any caller that passes ``started=`` to the
trainer) asks for more: its budget starts when the command starts, so everything before the
loop counts against it (building the corpus, training tokenizers, a task's own training
stage such as ``text2image``'s VQ-VAE, building the model), and the final evaluation is
bounded to the time that is left:

* a task's own training stage may take at most :data:`STAGE_SHARE` of the budget
  (:attr:`qkv.tasks.Task.stage_time`);
* before the loop, the final evaluation's cost per example is measured on
  :data:`PROBE_EXAMPLES` examples, after an untimed warm-up call on
  :data:`WARMUP_EXAMPLES` (a model's first call pays for thread pools, caches and lazy
  set-up, which made the probe alone keep 2:20 of a 12-minute budget for a 7-second
  evaluation), and the loop stops early enough to leave the whole
  evaluation its time (with a margin, :data:`EVAL_MARGIN`), but never more than
  :data:`EVAL_SHARE` of what preparation left; each whole evaluation in the loop measures
  the cost again, on the warm model, and the reserve shrinks to it when it is less;
* the final evaluation then takes as many examples as fit in the time that is left (at
  least the probe's count, so a run always ends with metrics).

What cannot be bounded (the preparation itself, a step or evaluation that overruns) is
reported: the run's header says how long the data took, the summary holds
``prepare_seconds`` and ``eval_seconds``.
"""

from __future__ import annotations

from qkv.training.progress import format_duration

#: The largest share of the time left after preparation that the final evaluation may keep
#: for itself (the loop stops that much early at most).
EVAL_SHARE = 0.2
#: The examples the final evaluation's cost is measured on before the loop starts.
PROBE_EXAMPLES = 16
#: The examples of the untimed call before the probe, which warms the model up.
WARMUP_EXAMPLES = 4
#: The loop keeps this times the whole final evaluation's measured cost for it, and the final
#: evaluation stays whole when its cost is within this times the time left: a loop whose
#: last step ran past its end does not cut the evaluation it kept time for.
EVAL_MARGIN = 1.25
#: The largest share of the budget a task's own training stage (text2image's VQ-VAE) may
#: take while the data is prepared.
STAGE_SHARE = 0.25


def format_seconds(seconds: float) -> str:
    """``0.8 s``, ``41 s`` under a minute; ``m:ss`` or ``h:mm:ss`` above."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f} s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    return format_duration(seconds)


class BudgetSpentError(ValueError):
    """Preparing the data used up the whole time budget before the first step.

    Attributes:
        max_time: the budget, in seconds.
        spent: seconds spent before training could start (this command's preparation, and
            a resumed run's earlier commands).
        prepared: this command's preparation, in seconds.
    """

    def __init__(self, max_time: float, spent: float, prepared: float) -> None:
        self.max_time, self.spent, self.prepared = max_time, spent, prepared
        super().__init__(
            f"max_time ({format_seconds(max_time)}) is spent before training starts: "
            f"preparing the data took {format_seconds(prepared)}"
            + (
                f" (and the run had used {format_seconds(spent - prepared)})"
                if spent > prepared
                else ""
            )
        )


__all__ = [
    "EVAL_MARGIN",
    "EVAL_SHARE",
    "PROBE_EXAMPLES",
    "STAGE_SHARE",
    "WARMUP_EXAMPLES",
    "BudgetSpentError",
    "format_seconds",
]
