"""Learning-rate schedules as pure functions of the step (stateless: resume is exact)."""

from __future__ import annotations

import math
from typing import Literal

ScheduleName = Literal["noam", "cosine", "constant"]


def noam(step: int, *, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """Vaswani et al. (2017) eq. 3: ``factor * d_model^-0.5 * min(step^-0.5, step *
    warmup^-1.5)``, with ``step`` counted from 1."""
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def cosine(step: int, *, peak: float, warmup: int, total: int, floor: float = 0.0) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine decay to ``floor`` at
    ``total`` (Loshchilov & Hutter 2017)."""
    step = max(step, 1)
    if step <= warmup:
        return peak * step / max(warmup, 1)
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def lr_at(
    step: int,
    schedule: ScheduleName,
    *,
    lr: float,
    warmup: int,
    total: int,
    d_model: int,
) -> float:
    """The learning rate at ``step`` (1-based) for a named schedule.

    ``noam`` uses ``lr`` as its ``factor``; ``cosine`` and ``constant`` use it as the peak.

    Raises:
        ValueError: an unknown schedule name.
    """
    if schedule == "noam":
        return noam(step, d_model=d_model, warmup=warmup, factor=lr)
    if schedule == "cosine":
        return cosine(step, peak=lr, warmup=warmup, total=total)
    if schedule == "constant":
        return lr * min(1.0, max(step, 1) / max(warmup, 1)) if warmup else lr
    raise ValueError(f"schedule must be 'noam', 'cosine' or 'constant', got {schedule!r}")
