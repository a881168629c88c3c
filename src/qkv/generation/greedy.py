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
    drop_finished: bool = False,
) -> tuple[list[list[int]], list[float], list[Tensor]]:
    """Run ``choose(logits) -> tokens`` until every row emits EOS or ``max_new_tokens``.

    Args:
        stepper: the prefilled or fresh :class:`Stepper`.
        choose: ``(b, vocab)`` logits -> ``(b,)`` tokens.
        max_new_tokens: the decoding budget.
        eos_id: the token that ends a row, or None (every row decodes the whole budget).
        pad_id: the filler after a row's EOS.
        keep_logits: also return each step's logits.
        drop_finished: once at most half of the decoding rows are still unfinished, drop
            the finished ones from the stepper (its caches included, with
            :meth:`Stepper.reorder`), so later steps compute only the rows that still
            decode. For a ``choose`` whose token per row does not depend on the other rows
            (greedy); halving keeps the copies of the caches to a fraction of the work
            they save. Ignored with ``keep_logits`` (its logits are ``(b, vocab)``).

    Returns:
        ``(tokens, scores, logits)``: new tokens per row (EOS excluded), the summed log
        probability of each row's choices (EOS included), and per-step ``(b, vocab)`` logits
        when ``keep_logits``.
    """
    b = stepper.batch_size
    drop_finished = drop_finished and not keep_logits and eos_id is not None
    done = torch.zeros(b, dtype=torch.bool, device=stepper.device)  # over the stepper's rows
    row_of: Tensor | None = None  # the stepper's row i is output row row_of[i]; None: i
    out = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=stepper.device)
    score = torch.zeros(b, device=stepper.device)
    kept: list[Tensor] = []
    n = 0
    for t in range(max_new_tokens):
        logits = stepper.logits()  # (b_live, vocab)
        if keep_logits:
            kept.append(logits)
        tok = choose(logits)
        # log softmax at the chosen token only: one reduction over the vocabulary instead
        # of a (b, vocab) log_softmax written out every step
        logp = logits.gather(1, tok[:, None]).squeeze(1) - logits.logsumexp(-1)  # (b_live,)
        if eos_id is not None:
            logp = logp.masked_fill(done, 0.0)
            tok = tok.masked_fill(done, pad_id)
            done = done | (tok == eos_id)
        if row_of is None:
            score += logp
            out[:, t] = tok
        else:
            score.index_add_(0, row_of, logp)
            out[row_of, t] = tok
        n = t + 1
        if t == max_new_tokens - 1:
            break
        if eos_id is not None:  # one host sync per step, only when rows can finish
            live = int(done.numel() - done.sum())
            if live == 0:
                break
            if drop_finished and 2 * live <= done.numel():
                keep = (~done).nonzero().squeeze(1)  # (live,)
                stepper.reorder(keep)
                row_of = keep if row_of is None else row_of[keep]
                tok, done = tok[keep], done[keep]
        stepper.append(tok)
    rows: list[list[int]] = []
    for row in out[:, :n].tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id)]
        rows.append(row)
    return rows, score.tolist(), kept
