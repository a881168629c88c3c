"""Greedy decoding and sampling: one token per step until EOS or the budget."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from qkv.generation._stepper import Stepper


def decode_loop(
    stepper: Stepper,
    choose: Callable[[Tensor], Tensor],
    *,
    max_new_tokens: int,
    eos_id: int | None,
    pad_id: int,
    keep_logits: bool = False,
) -> tuple[list[list[int]], list[float], list[Tensor]]:
    """Run ``choose(logits) -> tokens`` until every row emits EOS or ``max_new_tokens``.

    Returns:
        ``(tokens, scores, logits)``: new tokens per row (EOS excluded), the summed log
        probability of each row's choices (EOS included), and per-step ``(b, vocab)`` logits
        when ``keep_logits``.
    """
    b = stepper.batch_size
    done = torch.zeros(b, dtype=torch.bool, device=stepper.device)
    out = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=stepper.device)
    score = torch.zeros(b, device=stepper.device)
    kept: list[Tensor] = []
    n = 0
    for t in range(max_new_tokens):
        logits = stepper.logits()  # (b, vocab)
        if keep_logits:
            kept.append(logits)
        tok = choose(logits)
        # log softmax at the chosen token only: one reduction over the vocabulary instead
        # of a (b, vocab) log_softmax written out every step
        logp = logits.gather(1, tok[:, None]).squeeze(1) - logits.logsumexp(-1)  # (b,)
        if eos_id is None:  # no row ever finishes: no masking, no sync on done
            score += logp
        else:
            score += logp.masked_fill(done, 0.0)
            tok = tok.masked_fill(done, pad_id)
            done |= tok == eos_id
        out[:, t] = tok
        n = t + 1
        if t == max_new_tokens - 1 or (eos_id is not None and bool(done.all())):
            break
        stepper.append(tok)
    rows: list[list[int]] = []
    for row in out[:, :n].tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id)]
        rows.append(row)
    return rows, score.tolist(), kept
