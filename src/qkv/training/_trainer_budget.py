"""The trainer's time budget (``max_time``): when the loop stops, how the schedule stretches
to the steps that fit, and, for a command's budget (``started`` given), the preparation it
counts and the final evaluation it bounds (:mod:`qkv.training.budget`).

:class:`~qkv.training.Trainer` inherits :class:`TimeBudget`; the loop itself lives in
:mod:`qkv.training.trainer`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from qkv.training import parallel
from qkv.training.budget import (
    EVAL_MARGIN,
    EVAL_SHARE,
    PROBE_EXAMPLES,
    WARMUP_EXAMPLES,
    BudgetSpentError,
    format_seconds,
)
from qkv.training.config import TrainConfig
from qkv.training.distributed import DistInfo, all_reduce_sum


def takes_limit(evaluate: Callable[..., Any]) -> bool:
    """Whether an evaluation callable takes ``limit=`` (so its work can be bounded)."""
    try:
        params = inspect.signature(evaluate).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return False
    return any(p.name == "limit" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class TimeBudget:
    """Mixin of :class:`~qkv.training.Trainer`: the time budget of its loop and, in a
    command, of the preparation before it and the final evaluation after it."""

    cfg: TrainConfig
    dist: DistInfo
    device: torch.device
    model: nn.Module
    step: int
    elapsed: float
    started: float | None
    valid_data: Sequence[Any] | None
    _evaluate: Callable[..., dict[str, float]] | None
    _planned: int
    # the loop's (qkv.training.trainer.Trainer)
    evaluate: Callable[..., dict[str, float]]

    def _reset_budget(self) -> None:
        #: this command's seconds before its loop (counted in a command's budget)
        self.prepared = 0.0
        #: seconds the loop leaves for the final evaluation
        self.eval_reserve = 0.0
        #: seconds per evaluated example, as last measured (None: not measured)
        self.eval_cost: float | None = None

    @property
    def counts_command(self) -> bool:
        """Whether ``max_time`` bounds the whole command (``started`` given), not only the
        loop."""
        return self.started is not None and self.cfg.max_time is not None

    def eval_size(self) -> int | None:
        """The examples a whole evaluation covers: ``eval_limit`` or the validation data's
        length, whichever is smaller (None: not known)."""
        n = len(self.valid_data) if self.valid_data is not None else None
        limit = self.cfg.eval_limit
        if n is None:
            return limit
        return n if limit is None else min(n, limit)

    def _agree(self, value: float) -> float:
        """Rank 0's value on every rank (the budget is decided there)."""
        if not self.dist.enabled:
            return value
        return all_reduce_sum(value if self.dist.is_main else 0.0, self.dist, self.device)

    def measured_eval(self, limit: int | None = None) -> dict[str, float]:
        """:meth:`evaluate`, its time per example kept in :attr:`eval_cost` (rank 0, inside
        FSDP's gathered parameters: where the trainer evaluates)."""
        start = time.perf_counter()
        metrics = self.evaluate(limit=limit)
        seconds = time.perf_counter() - start
        n = self.eval_size()
        count = limit if limit is not None and (n is None or limit < n) else n
        if metrics and count:
            self.eval_cost = seconds / count
        return metrics

    def _start_budget(self) -> None:
        """Before the loop, in a command: count the preparation (refused when it spent the
        whole budget), measure the final evaluation's cost on a few examples of a warmed-up
        model (an untimed call on :data:`WARMUP_EXAMPLES` first) and keep its time (at most
        :data:`EVAL_SHARE` of what is left).

        Raises:
            BudgetSpentError: preparing took the whole budget.
        """
        self._reset_budget()
        if not self.counts_command:
            return
        assert self.started is not None and self.cfg.max_time is not None  # counts_command
        max_time = self.cfg.max_time
        prepared = self._agree(time.monotonic() - self.started)
        if self.elapsed + prepared >= max_time:
            raise BudgetSpentError(max_time, self.elapsed + prepared, prepared)
        n = self.eval_size()
        boundable = takes_limit(self._evaluate) if self._evaluate is not None else bool(n)
        if boundable and n != 0:
            with parallel.full_parameters(self.model):  # FSDP: rank 0 evaluates alone
                if self.dist.is_main:
                    self.evaluate(limit=min(n or WARMUP_EXAMPLES, WARMUP_EXAMPLES))  # warm-up
                    self.measured_eval(limit=min(n or PROBE_EXAMPLES, PROBE_EXAMPLES))
        self.prepared = self._agree(time.monotonic() - self.started)
        left = max(0.0, max_time - self.elapsed - self.prepared)
        reserve = 0.0
        if self.eval_cost is not None:
            whole = EVAL_MARGIN * self.eval_cost * n if n is not None else float("inf")
            reserve = min(whole, EVAL_SHARE * left)
        self.eval_reserve = self._agree(reserve)

    def _refit_reserve(self) -> None:
        """After a whole evaluation in the loop (every rank calls it; rank 0's value is
        agreed): the final evaluation's reserve from that evaluation's cost, when it is less
        than what the probe before the loop gave. The probe times a few examples, which may
        still carry start-up costs its warm-up call did not pay (before the warm-up, on
        ``classify`` it kept 2:20 of a 12-minute budget for a final evaluation that took
        7 s). The reserve only shrinks; the schedule
        stretches over the time it frees (:meth:`_replan`)."""
        if not self.counts_command or self.eval_reserve <= 0:
            return
        n = self.eval_size()
        refit = self.eval_reserve
        if self.dist.is_main and self.eval_cost is not None and n:
            refit = min(refit, EVAL_MARGIN * self.eval_cost * n)
        self.eval_reserve = self._agree(refit)

    def _time_up(self) -> bool:
        """Whether the loop's time is spent: the budget less the final evaluation's
        reserve (decided by rank 0, agreed by all)."""
        if self.cfg.max_time is None:
            return False
        up = float(self.dist.is_main and self.elapsed >= self.cfg.max_time - self.eval_reserve)
        if self.dist.enabled:
            up = all_reduce_sum(up, self.dist, self.device)
        return up > 0

    def _replan(self, steps: int, seconds: float) -> None:
        """Under a time budget, stretch the schedule to the steps that fit: its total is the
        current step plus what this command's pace (``steps`` in ``seconds``) reaches by the
        loop's end (at most ``config.steps``)."""
        if self.cfg.max_time is None or steps <= 0 or seconds <= 0:
            return
        end = self.cfg.max_time - self.eval_reserve
        more = steps / seconds * max(0.0, end - self.elapsed)
        self._planned = max(self.step + 1, min(self.cfg.steps, round(self.step + more)))

    def final_eval_limit(self, spent: float) -> int | None:
        """The examples the final evaluation takes when ``spent`` seconds of a command's
        budget are gone: all of them (None) when they fit in the time left at the measured
        cost (with :data:`EVAL_MARGIN`: a loop that overran its end by a step still gets
        the whole evaluation it kept time for), else as many as fit, at least
        :data:`PROBE_EXAMPLES`."""
        if not self.counts_command or not self.eval_cost:
            return None
        assert self.cfg.max_time is not None  # counts_command
        n = self.eval_size()
        left = max(0.0, self.cfg.max_time - spent)
        if n is not None and self.eval_cost * n <= EVAL_MARGIN * left:
            return None
        fit = int(left / self.eval_cost)  # < n: the whole evaluation did not fit
        return max(min(n or PROBE_EXAMPLES, PROBE_EXAMPLES), fit)

    def budget_note(self) -> str:
        """What the header adds to a command's budget: the preparation counted in it and the
        time kept for the final evaluation ("" for a loop's budget)."""
        if not self.counts_command:
            return ""
        note = f" for the whole command: data ready in {format_seconds(self.prepared)} (counted)"
        if self.eval_reserve > 0:
            note += f", {format_seconds(self.eval_reserve)} kept for the final evaluation"
        return note


__all__ = ["TimeBudget", "takes_limit"]
