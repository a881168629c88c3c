"""What a person watching a training run sees: a header (what trains on what, where, for how
long), a progress bar or, with ``progress=False``, a plain line every ``log_every`` steps, and
each evaluation with a few sample outputs. Everything goes to standard error, so standard
output stays free for results (``qkv train`` prints its summary there as JSON)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from tqdm.auto import tqdm


def format_duration(seconds: float) -> str:
    """``4:05`` (m:ss) or ``1:02:03`` (h:mm:ss)."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def parse_duration(text: str) -> float:
    """Seconds in ``"30m"``, ``"600s"``, ``"1h"``, ``"1h30m"``, ``"90"`` (plain seconds).

    Raises:
        ValueError: not a positive duration.
    """
    raw = text.strip().lower()
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    total, number = 0.0, ""
    try:
        for ch in raw:
            if ch.isdigit() or ch == ".":
                number += ch
            elif ch in units and number:
                total += float(number) * units[ch]
                number = ""
            else:
                raise ValueError
        if number:
            total += float(number)
    except ValueError:
        total = -1.0
    if not total > 0 or total == float("inf"):
        raise ValueError(
            f"expected a duration such as 30m, 600s, 1h30m or 90 (seconds), got {text!r}"
        )
    return total


class Progress:
    """The run's console output (the main process only: others print nothing).

    Args:
        name: what trains (the task), for the bar and the header.
        total_steps: the step budget.
        max_time: the time budget in seconds, or None.
        start_step: the step the run starts (or resumes) from.
        start_elapsed: seconds already trained before (a resumed run).
        bar: a progress bar (else plain lines).
        log_every: steps between plain lines.
        enabled: print at all (False on DDP ranks other than 0).
        stream: where to print (standard error).
        unit: what the throughput counts (the objective's ``unit``: tokens, examples, ...).
    """

    def __init__(
        self,
        name: str,
        *,
        total_steps: int,
        max_time: float | None,
        start_step: int,
        start_elapsed: float,
        bar: bool,
        log_every: int,
        enabled: bool = True,
        stream: TextIO | None = None,
        unit: str = "tok",
    ) -> None:
        self.unit = unit
        self.name, self.total, self.max_time = name, total_steps, max_time
        self.start_step, self.start_elapsed = start_step, start_elapsed
        self.log_every, self.enabled = log_every, enabled
        self.stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        if enabled and bar:
            if max_time is not None:  # a time budget: the bar counts seconds
                self._bar = tqdm(
                    total=round(max_time),
                    initial=min(round(start_elapsed), round(max_time)),
                    desc=f"train {name}",
                    unit="s",
                    file=self.stream,
                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]",
                )
            else:
                self._bar = tqdm(
                    total=total_steps,
                    initial=start_step,
                    desc=f"train {name}",
                    unit="step",
                    file=self.stream,
                )

    def print(self, text: str) -> None:
        """A line above the bar (or on its own without one)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def header(self, facts: Sequence[tuple[str, str]]) -> None:
        """``qkv train: <name>`` and one indented ``label: value`` line per fact."""
        width = max((len(k) for k, _ in facts), default=0)
        self.print(f"qkv train: {self.name}")
        for k, v in facts:
            self.print(f"  {k + ':':<{width + 1}} {v}")

    def remaining(self, step: int, elapsed: float) -> float | None:
        """Seconds left: of the time budget, or at this run's steps per second."""
        if self.max_time is not None:
            return max(0.0, self.max_time - elapsed)
        done, spent = step - self.start_step, elapsed - self.start_elapsed
        if done <= 0 or spent <= 0:
            return None
        return (self.total - step) * spent / done

    def step(self, step: int, elapsed: float, logs: dict[str, float] | None, rate: float) -> None:
        """After every step; ``logs`` (loss, lr) on logging steps, else None."""
        if not self.enabled:
            return
        if self._bar is not None:
            if self.max_time is not None:
                self._bar.update(max(0, min(round(elapsed), self._bar.total) - self._bar.n))
            else:
                self._bar.update(1)
            if logs is not None:
                self._bar.set_postfix(
                    step=step,
                    loss=f"{logs['loss']:.3f}",
                    lr=f"{logs['lr']:.2e}",
                    **{f"{self.unit}_s": f"{rate:,.0f}"},
                )
            return
        if logs is None:
            return
        left = self.remaining(step, elapsed)
        eta = "" if left is None else f", ~{format_duration(left)} left"
        of = f"/{self.total}" if self.max_time is None else ""
        self.print(
            f"step {step}{of}  loss {logs['loss']:.4f}  lr {logs['lr']:.2e}  "
            f"{rate:,.0f} {self.unit}/s  {format_duration(elapsed)} elapsed{eta}"
        )

    def evaluation(self, step: int, metrics: dict[str, float], samples: Sequence[str]) -> None:
        """An evaluation's metrics and sample outputs."""
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.print(f"eval at step {step}: {shown}")
        for s in samples:
            self.print(f"    {s}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


__all__ = ["Progress", "format_duration", "parse_duration"]
