"""CTC prefix scores for joint CTC/attention decoding (Watanabe et al. 2017, "Hybrid
CTC/Attention Architecture for End-to-End Speech Recognition", sec. III-B and Algorithm 2).

The CTC prefix score of a label prefix ``h`` is the probability that the CTC head's output
*begins* with ``h``: ``psi(h) = sum over every path whose collapse starts with h``. Beam
search adds ``lambda * (psi(h + c) - psi(h))`` to the attention decoder's
``(1 - lambda) * log p_att(c | h)`` for every candidate ``c``, and for the end of sentence
``lambda * (log p_ctc(h | x) - psi(h))``, so a hypothesis that skips audio, repeats a word or
stops early loses the CTC head's support at once, not only at its end.

Per hypothesis the scorer keeps the forward variables ``r_t^n(h)`` / ``r_t^b(h)`` (log
probability of the first ``t + 1`` encoder positions emitting ``h``, the last of them a
label / a blank) for every position ``t``; extending by ``c`` is one pass over ``t``:

    phi_t     = r_t^b(h) + [c != last(h)] r_t^n(h)                 (logaddexp)
    r_t^n(hc) = logaddexp(r_{t-1}^n(hc), phi_{t-1}) + log p_t(c)
    r_t^b(hc) = logaddexp(r_{t-1}^b(hc), r_{t-1}^n(hc)) + log p_t(blank)
    psi(hc)   = logsumexp_t (phi_{t-1} + log p_t(c))                  (phi_{-1} = [h empty])

The readable reference it is tested against is the brute-force sum over every alignment.
"""

from __future__ import annotations

import torch
from torch import Tensor

NEG_INF = float("-inf")


class CTCPrefixScorer:
    """CTC prefix scores of ``n`` hypotheses, extended one label at a time.

    Args:
        log_probs: ``(n, t, V)`` per-position log-probabilities of the CTC head, one row
            per hypothesis (repeat an input's row for each of its beams).
        lengths: ``(n,)`` real positions of each row (positions past it are padding).
        blank: the blank id (qkv's asr trains CTC with the pad id as blank).
        eos_id: the end-of-sentence id, scored as the whole transcript's CTC probability;
            None: no id ends a hypothesis.

    Raises:
        ValueError: shapes that do not match, or a length outside ``1..t``.
    """

    def __init__(
        self, log_probs: Tensor, lengths: Tensor, *, blank: int, eos_id: int | None
    ) -> None:
        if log_probs.ndim != 3 or lengths.shape != log_probs.shape[:1]:
            raise ValueError(
                f"log_probs must be (n, t, V) and lengths (n,), got {tuple(log_probs.shape)} "
                f"and {tuple(lengths.shape)}"
            )
        n, t, vocab = log_probs.shape
        if n and (int(lengths.min()) < 1 or int(lengths.max()) > t):
            raise ValueError(f"lengths must be in 1..{t}, got {lengths.tolist()}")
        self.blank, self.eos_id, self.vocab = blank, eos_id, vocab
        real = torch.arange(t, device=log_probs.device)[None, :] < lengths[:, None]  # (n, t)
        # past a row's end only the blank is emitted, with probability 1: the forward
        # variables carry r^n + r^b through unchanged and no label can start there
        lp = log_probs.float().masked_fill(~real[..., None], NEG_INF)
        lp[..., blank] = lp[..., blank].masked_fill(~real, 0.0)
        self.log_probs = lp  # (n, t, V)
        self.lengths = lengths
        # the empty prefix: no label yet, every position so far a blank
        self.r = torch.stack(
            [torch.full((n, t), NEG_INF, device=lp.device), lp[..., blank].cumsum(1)], -1
        )  # (n, t, 2): r^n, r^b
        self.psi = torch.zeros(n, device=lp.device)  # psi(h): log 1 for the empty prefix
        self.last = torch.full((n,), -1, dtype=torch.long, device=lp.device)
        self.empty = torch.ones(n, dtype=torch.bool, device=lp.device)
        self.n_labels = 0  # labels in every row's prefix (all beams grow together)
        self._cand: Tensor | None = None
        self._r_new: Tensor | None = None

    @property
    def n_rows(self) -> int:
        """Hypotheses scored."""
        return self.r.shape[0]

    def scores(self, candidates: Tensor | None = None) -> Tensor:
        """``psi(h + c) - psi(h)`` for candidates ``c`` of every hypothesis ``h``; for
        ``eos_id``, ``log p_ctc(h | x) - psi(h)``; ``-inf`` for the blank. Remembers the
        new forward variables for :meth:`select`.

        Args:
            candidates: ``(n, c)`` ids to score per row; None: the whole vocabulary.

        Returns:
            ``(n, c)`` (or ``(n, V)``) float32 score increments.
        """
        n, t, _ = self.log_probs.shape
        if candidates is None:
            candidates = torch.arange(self.vocab, device=self.r.device).expand(n, -1)
        c = candidates.shape[1]
        # (n, t, c): log p_t(c) of each candidate
        x = self.log_probs.gather(2, candidates[:, None, :].expand(n, t, c))
        r_n, r_b = self.r[..., 0], self.r[..., 1]  # (n, t)
        phi = torch.logaddexp(r_n, r_b)[..., None].expand(n, t, c).clone()  # (n, t, c)
        same = candidates == self.last[:, None]  # (n, c): a repeat needs a blank between
        phi = torch.where(same[:, None, :], r_b[..., None].expand(n, t, c), phi)
        new_n = torch.full((n, t, c), NEG_INF, device=x.device)
        new_b = torch.full((n, t, c), NEG_INF, device=x.device)
        start = torch.where(self.empty[:, None], x[:, 0], torch.full_like(x[:, 0], NEG_INF))
        new_n[:, 0] = start
        blank_lp = self.log_probs[..., self.blank]  # (n, t)
        # h's k labels fill positions 0..k-1 at least, so h + c starts at position k: the
        # recursion begins there (the positions before stay -inf), as ESPnet's does
        first = max(1, self.n_labels)
        for i in range(first, t):
            new_n[:, i] = torch.logaddexp(new_n[:, i - 1], phi[:, i - 1]) + x[:, i]
            new_b[:, i] = torch.logaddexp(new_b[:, i - 1], new_n[:, i - 1]) + blank_lp[:, i, None]
        # psi(hc): every position t where c is first emitted after the prefix ended
        terms = phi[:, first - 1 : -1] + x[:, first:]  # (n, t - first, c)
        psi = torch.logsumexp(torch.cat([start[:, None], terms], 1), 1)
        if self.eos_id is not None:  # the whole transcript: both endings at the last position
            full = torch.logaddexp(r_n[:, -1], r_b[:, -1])[:, None].expand(n, c)
            psi = torch.where(candidates == self.eos_id, full, psi)
        psi = psi.masked_fill(candidates == self.blank, NEG_INF)
        self._cand, self._r_new, self._psi_new = candidates, torch.stack([new_n, new_b], -1), psi
        # a dead prefix (psi -inf) stays dead: -inf - -inf would be NaN
        return torch.where(torch.isfinite(self.psi)[:, None], psi - self.psi[:, None], psi)

    def select(self, index: Tensor, tokens: Tensor) -> None:
        """Keep hypothesis ``index[j]`` extended by ``tokens[j]`` as row ``j``; the pair
        must be among the last :meth:`scores` call's candidates (else the row is dead)."""
        if self._cand is None or self._r_new is None:
            raise RuntimeError("select() needs a scores() call first")
        cand = self._cand[index]  # (m, c)
        hit = cand == tokens[:, None]
        col = hit.float().argmax(1)  # (m,)
        found = hit.any(1)
        rows = self._r_new[index, :, col]  # (m, t, 2)
        psi = self._psi_new[index, col]
        self.r = torch.where(found[:, None, None], rows, torch.full_like(rows, NEG_INF))
        self.psi = torch.where(found, psi, torch.full_like(psi, NEG_INF))
        self.last = tokens.clone()
        self.empty = torch.zeros_like(found)
        self.n_labels += 1
        self.log_probs = self.log_probs[index]
        self.lengths = self.lengths[index]
        self._cand = self._r_new = None

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` unchanged, in that order (the beams of an input)."""
        for name in ("r", "psi", "last", "empty", "log_probs", "lengths"):
            setattr(self, name, getattr(self, name)[index])
        self._cand = self._r_new = None


def ctc_best_path(log_probs: Tensor, real: Tensor, drop: tuple[int, ...]) -> list[list[int]]:
    """Best-path CTC decoding: the most likely id per position, repeats merged, the ids of
    ``drop`` (the blank first, and any other special ids) removed.

    Args:
        log_probs: ``(b, t, V)`` per-position log-probabilities.
        real: ``(b, t)`` bool, True = a real position (padding is skipped).
        drop: ids never emitted.

    Returns:
        one id list per row.
    """
    out = []
    for ids, keep in zip(log_probs.argmax(-1).tolist(), real.tolist()):
        seq, prev = [], None
        for i, r in zip(ids, keep):
            if r and i != prev and i not in drop:
                seq.append(i)
            prev = i if r else prev
        out.append(seq)
    return out


__all__ = ["CTCPrefixScorer", "ctc_best_path"]
