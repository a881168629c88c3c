"""Token choice from logits: greedy, temperature, top-k (Fan et al. 2018) and nucleus /
top-p (Holtzman et al. 2020) sampling."""

from __future__ import annotations

import torch
from torch import Tensor


def filter_logits(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """Scale by ``1/temperature`` and set logits outside top-k / top-p to ``-inf``.

    Top-p keeps the smallest set of most likely tokens whose probability mass reaches
    ``top_p`` (always at least one token).

    Args:
        logits: ``(b, vocab)``.

    Raises:
        ValueError: temperature <= 0, top_k < 1, top_p outside (0, 1].
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, idx = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass strictly before each token
        drop_sorted = before >= top_p  # the first token always has before == 0: kept
        drop = drop_sorted.scatter(-1, idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample(
    logits: Tensor, generator: torch.Generator | None = None, **filters: float | int | None
) -> Tensor:
    """Draw one token per row from ``softmax(filter_logits(logits))``: ``(b,)``.

    The draw happens on the generator's device: a CPU generator with GPU logits moves the
    probabilities to the CPU, so one seed gives the same tokens on every device.
    """
    probs = filter_logits(logits, **filters).softmax(-1)  # type: ignore[arg-type]
    if generator is not None and generator.device != probs.device:
        return (
            torch.multinomial(probs.to(generator.device), 1, generator=generator)
            .squeeze(-1)
            .to(probs.device)
        )
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def greedy_choice(logits: Tensor) -> Tensor:
    """The most likely token per row ``(b,)`` (ties: the lowest id)."""
    return logits.argmax(-1)
