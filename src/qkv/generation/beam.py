"""Beam search with the GNMT length penalty (Wu et al. 2016, eq. 14).

A hypothesis ``Y`` is ranked by ``log P(Y | X) / lp(Y)`` with
``lp(Y) = ((5 + |Y|) / 6) ** alpha``, where ``|Y|`` counts the generated tokens including the
final EOS; ``alpha = 0.6`` as in Vaswani et al. (2017). ``alpha = 0`` ranks by raw log
probability.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.generation._stepper import Stepper
from qkv.generation.ctc import CTCPrefixScorer
from qkv.generation.ngram import NGramScorer


def length_penalty(length: int, alpha: float) -> float:
    """GNMT ``lp = ((5 + length) / 6) ** alpha``."""
    return ((5.0 + length) / 6.0) ** alpha


def joint_scores(logp: Tensor, ctc: CTCPrefixScorer, weight: float, pre_beam: int) -> Tensor:
    """One step's ``(1 - w) log p_att(c | h) + w (psi(hc) - psi(h))`` for every beam ``h``
    and token ``c`` (``-inf`` outside the pre-beam), the scorer's new states kept for its
    ``select``.

    Args:
        logp: ``(n, V)`` the attention decoder's log-probabilities.
        ctc: the beams' prefix scorer (``n`` rows).
        weight: ``w`` in ``[0, 1]``.
        pre_beam: tokens CTC-scored per beam when the vocabulary is larger.

    Returns:
        ``(n, V)`` joint score increments.
    """
    vocab = logp.shape[-1]
    cand = None if vocab <= pre_beam else logp.topk(pre_beam, dim=-1).indices  # (n, pre_beam)
    psi = ctc.scores(cand)  # the scorer steps even at weight 0 (its states follow the beams)
    # weight 0 adds nothing (not 0 * -inf = NaN for the blank)
    ctc_part = psi * weight if weight > 0 else torch.zeros_like(psi)
    if cand is None:
        return (1 - weight) * logp + ctc_part
    joint = (1 - weight) * logp.gather(1, cand) + ctc_part
    return torch.full_like(logp, float("-inf")).scatter(1, cand, joint)


def beam_search(
    stepper: Stepper,
    *,
    beam_size: int,
    max_new_tokens: int,
    eos_id: int | None,
    alpha: float = 0.6,
    early_stopping: bool = True,
    ctc: CTCPrefixScorer | None = None,
    ctc_weight: float = 0.0,
    pre_beam: int = 32,
    lm: NGramScorer | None = None,
    lm_weight: float = 0.0,
) -> tuple[list[list[int]], list[float]]:
    """Batched beam search over a :class:`Stepper` made with ``beams=beam_size`` (``b``
    inputs, ``b * k`` rows).

    Each step expands the ``k`` live beams of every row with every token, keeps the best
    ``2k`` candidates, moves those ending in EOS among the best ``k`` of them to the row's
    finished list and keeps the best ``k`` others alive. A row stops once it has ``k`` finished hypotheses
    (``early_stopping=True``, as in GNMT and Hugging Face), or (``early_stopping=False``)
    once no live beam can still beat its worst finished one. At the budget, live beams are
    finished as they are (scored with the penalty at their length). Without an ``eos_id``
    (a language model on running text) no hypothesis ends early: every row runs to
    ``max_new_tokens`` and the best beam at the budget wins.

    Args:
        stepper: the model and its batch of prompts or sources.
        beam_size: beams per row ``k``.
        max_new_tokens: the decoding budget.
        eos_id: the token that finishes a hypothesis, or None.
        alpha: the GNMT length penalty exponent.
        early_stopping: see above.
        ctc: joint CTC/attention decoding (Watanabe et al. 2017): a
            :class:`~qkv.generation.ctc.CTCPrefixScorer` with one row per beam (``b * k``);
            a hypothesis then scores ``(1 - w) log p_att(h) + w psi_ctc(h)`` (its CTC prefix
            score; at EOS, the CTC probability of the whole transcript).
        ctc_weight: ``w``; 0 with a scorer ranks as without one (tested).
        pre_beam: with a scorer and a vocabulary larger than this, only each beam's
            ``pre_beam`` likeliest tokens under the attention decoder are CTC-scored (the
            others are dropped), as ESPnet's pre-beam; a smaller vocabulary is scored whole.
        lm: shallow fusion with an external language model
            (:class:`~qkv.generation.ngram.NGramScorer`, one row per beam): each step adds
            ``lm_weight * log p_lm(c | h)`` to the decoder's (or the joint) score of
            token ``c`` after hypothesis ``h``, EOS included.
        lm_weight: ``beta`` (>= 0) of the language model's log-probability.

    Returns:
        ``(tokens, scores)``: the best hypothesis per row (EOS excluded) and its penalized
        score.

    Raises:
        ValueError: ``beam_size < 1``, or a stepper without ``b * k`` rows.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    filler = 0 if eos_id is None else eos_id  # token of dead (score -inf) beam slots
    k, dev = beam_size, stepper.device
    if stepper.batch_size % k:
        raise ValueError(
            f"the stepper has {stepper.batch_size} rows: make it with beams={k} (b * k rows)"
        )
    b = stepper.batch_size // k  # rows i*k .. i*k + k - 1 are input i's beams
    scores = torch.full((b, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: keep one alive
    seqs = torch.zeros(b, k, 0, dtype=torch.long, device=dev)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    done = [False] * b

    for t in range(max_new_tokens):
        logp = stepper.logits().log_softmax(-1)  # (b*k, V)
        if ctc is not None:
            logp = joint_scores(logp, ctc, ctc_weight, pre_beam)
        if lm is not None and lm_weight > 0:
            lm_logp = lm.scores()
            if lm_logp.shape[-1] != logp.shape[-1]:
                raise ValueError(
                    f"the language model scores {lm_logp.shape[-1]} token ids, the decoder "
                    f"{logp.shape[-1]}: build it over the decoder's vocabulary"
                )
            logp = logp + lm_weight * lm_logp  # -inf (outside the pre-beam) stays
        vocab = logp.shape[-1]
        cand = (scores[:, :, None] + logp.view(b, k, vocab)).view(b, k * vocab)
        n_cand = min(2 * k, k * vocab)
        top, idx = cand.topk(n_cand, dim=-1)  # (b, 2k)
        beam_idx, tok_idx = idx // vocab, idx % vocab
        new_scores = torch.full((b, k), float("-inf"), device=dev)
        new_src = torch.zeros(b, k, dtype=torch.long, device=dev)
        new_tok = torch.full((b, k), filler, dtype=torch.long, device=dev)
        top_l, beam_l, tok_l = top.tolist(), beam_idx.tolist(), tok_idx.tolist()
        prev = seqs.tolist()
        lp_now = length_penalty(t + 1, alpha)
        for r in range(b):
            if done[r]:
                continue
            alive = 0
            for rank, (sc, bi, ti) in enumerate(zip(top_l[r], beam_l[r], tok_l[r])):
                if sc == float("-inf"):
                    break
                if eos_id is not None and ti == eos_id:
                    # only an EOS among the best k candidates finishes a hypothesis (as in
                    # fairseq and transformers): one ranked below k live continuations is
                    # not one of the k best, and kept it would favour short outputs
                    if rank < k:
                        finished[r].append((sc / lp_now, [*prev[r][bi], ti]))
                    continue
                new_scores[r, alive], new_src[r, alive], new_tok[r, alive] = sc, bi, ti
                alive += 1
                if alive == k:
                    break
            finished[r].sort(key=lambda x: -x[0])
            del finished[r][k:]
            if len(finished[r]) >= k and t < max_new_tokens - 1:
                if early_stopping:
                    done[r] = True
                else:
                    # the best any live beam can reach: its score now, penalized at the
                    # longest length (log probs only fall, lp only grows for alpha >= 0)
                    best_live = new_scores[r].max().item()
                    bound = best_live / length_penalty(max_new_tokens, alpha)
                    done[r] = best_live == float("-inf") or bound <= finished[r][-1][0]
        if all(done) or t == max_new_tokens - 1:
            scores = new_scores
            seqs = torch.cat(
                [seqs.gather(1, new_src[:, :, None].expand_as(seqs)), new_tok[:, :, None]], 2
            )
            break
        flat_src = (new_src + torch.arange(b, device=dev)[:, None] * k).view(-1)
        seqs = torch.cat(
            [seqs.gather(1, new_src[:, :, None].expand_as(seqs)), new_tok[:, :, None]], 2
        )
        scores = new_scores
        stepper.reorder(flat_src)
        stepper.append(new_tok.view(-1))
        if ctc is not None:
            ctc.select(flat_src, new_tok.view(-1))
        if lm is not None:
            lm.select(flat_src, new_tok.view(-1))

    lp_end = length_penalty(seqs.shape[2], alpha)
    out_tokens: list[list[int]] = []
    out_scores: list[float] = []
    for r in range(b):
        pool = list(finished[r])
        if not done[r]:  # budget reached: live beams finish as they are
            for j in range(k):
                sc = scores[r, j].item()
                if sc > float("-inf"):
                    pool.append((sc / lp_end, seqs[r, j].tolist()))
        best_score, best = max(pool, key=lambda x: x[0]) if pool else (float("-inf"), [])
        if best and eos_id is not None and best[-1] == eos_id:
            best = best[:-1]
        out_tokens.append(best)
        out_scores.append(best_score)
    return out_tokens, out_scores
