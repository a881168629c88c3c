"""LSH attention's sorted-chunk core as one autograd Function, FlashAttention-style.

The sorted slots (every position once per hash round, sorted by (round, bucket,
position); :mod:`qkv.attn.lsh`) are cut into chunks of ``c``; each chunk's queries attend
to the keys of their own chunk and of the previous one. Rounds are combined with weights
``softmax_r(lse_r)`` (Kitaev et al. 2020, eq. 5-6), which is attention over the multiset
union of the rounds' windows: with ``M_i``/``Z_i`` the row maximum and normalizer over
every round of position ``i``, every pair's weight is ``P_tj = exp(S_tj - M_i) / Z_i``.

So the forward keeps only ``O(s d)`` tensors (Dao et al. 2022): ``qk``, ``v``, the sorted
positions, the output and ``M``, ``log Z`` per position; the backward recomputes each
group of chunks' scores and uses ``dS = P * (dP - rowsum(dO * O))``. No ``(L, 2c)`` score,
weight or gathered-key tensor outlives its group of chunks. ``M`` and ``log Z`` are kept
apart (not one log-sum-exp) so that a row that sees only itself, at ``-1e5``, recomputes
its weights exactly in float32 (``S - M`` is exact there; ``-1e5 + log 2`` is not).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

#: The score a position gives itself (Kitaev et al. 2020, sec. 3, "shared-QK"): low enough
#: to vanish beside any other allowed key, finite so that a position alone attends to itself.
SELF_SCORE: float = -1e5
#: Epsilon of the keys' length normalization ``x / sqrt(mean(x^2) + eps) / sqrt(d)``.
NORM_EPS: float = 1e-6
#: Most scores of one group of chunks computed at once (4 MiB in float32): bounds the
#: working memory of the forward and backward (a few tensors of this size).
GROUP_ELEMENTS: int = 1 << 20


def unit_keys(qk: Tensor) -> Tensor:
    """Keys from shared-QK vectors: length-normalized, ``x / rms(x) / sqrt(d)``."""
    d = qk.shape[-1]
    return qk * torch.rsqrt(qk.square().mean(-1, keepdim=True) + NORM_EPS) / math.sqrt(d)


def _unit_keys_backward_(x: Tensor, grad: Tensor) -> Tensor:
    """Gradient through :func:`unit_keys`, written over ``grad``: with
    ``r = rsqrt(mean(x^2) + eps)``, ``dx = r / sqrt(d) * (g - x r^2 mean(g x))``."""
    d = x.shape[-1]
    r = torch.rsqrt(x.square().mean(-1, keepdim=True) + NORM_EPS)  # (b, h, s, 1)
    gx = (grad * x).mean(-1, keepdim=True)
    return grad.addcmul_(x, r * r * gx, value=-1.0).mul_(r / math.sqrt(d))


def _rows(x: Tensor, idx: Tensor) -> Tensor:
    """``x`` ``(b, h, s, e)`` at positions ``idx`` ``(b, h, n)``: ``(b, h, n, e)``."""
    return x.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))


class _Group:
    """One group of chunks ``[lo, hi)`` with what forward and backward both recompute:
    positions of the queries ``pq`` ``(b, h, g, c)`` and of the window keys ``pk``
    ``(b, h, g, 2c)``, the raw vectors of the chunks ``lo - 1 .. hi - 1`` and the masked
    scores ``(b, h, g, c, 2c)``."""

    def __init__(
        self,
        qk: Tensor,
        v: Tensor,
        pos: Tensor,
        real: Tensor | None,
        c: int,
        lo: int,
        hi: int,
        causal: bool,
    ) -> None:
        b, h, length = pos.shape
        n_c, g = length // c, hi - lo
        idx = torch.arange(lo - 1, hi, device=pos.device) % n_c  # previous chunk first
        ch = pos.view(b, h, n_c, c).index_select(2, idx)  # (b, h, g + 1, c)
        self.ch = ch
        self.pq = ch[:, :, 1:]  # (b, h, g, c)
        self.pk = torch.cat([ch[:, :, :-1], ch[:, :, 1:]], dim=3)  # (b, h, g, 2c)
        flat = ch.reshape(b, h, (g + 1) * c)
        x = _rows(qk, flat).view(b, h, g + 1, c, -1)  # (b, h, g + 1, c, d) raw vectors
        self.q = x[:, :, 1:]  # (b, h, g, c, d)
        k = unit_keys(x)
        self.k = torch.cat([k[:, :, :-1], k[:, :, 1:]], dim=3)  # (b, h, g, 2c, d)
        vx = _rows(v, flat).view(b, h, g + 1, c, -1)
        self.v = torch.cat([vx[:, :, :-1], vx[:, :, 1:]], dim=3)  # (b, h, g, 2c, d_v)
        s = self.q @ self.k.transpose(-1, -2)  # (b, h, g, c, 2c)
        q_pos, k_pos = self.pq.unsqueeze(-1), self.pk.unsqueeze(-2)
        if causal:
            s.masked_fill_(q_pos < k_pos, float("-inf"))
        if real is not None:
            seen = real[:, None, :].expand(b, h, -1).gather(2, self.pk.flatten(2))
            s.masked_fill_(~seen.view(b, h, g, 1, 2 * c), float("-inf"))
        self.own = q_pos == k_pos  # (b, h, g, c, 2c): the score is a constant there
        self.s = s.masked_fill_(self.own, SELF_SCORE)


def _groups(s: int, length: int, c: int, per_chunk: int) -> list[tuple[int, int]]:
    """Chunk ranges ``[lo, hi)`` of at most :data:`GROUP_ELEMENTS` scores, none crossing a
    round (so a group's queries are distinct positions)."""
    step = max(1, GROUP_ELEMENTS // per_chunk)
    per_round = s // c
    return [
        (lo, min(lo + step, r0 + per_round))
        for r0 in range(0, length // c, per_round)
        for lo in range(r0, r0 + per_round, step)
    ]


def _keep(shape: torch.Size, p: float, gen: torch.Generator | None, like: Tensor) -> Tensor:
    """Dropout's scaled keep mask, drawn from ``gen`` (replayed in the backward)."""
    keep = torch.rand(shape, generator=gen, device=like.device, dtype=like.dtype) >= p
    return keep.to(like.dtype).div_(1.0 - p)


class LSHChunked(torch.autograd.Function):
    """``lsh_chunked(qk, v, pos, real, c, causal, dropout_p)`` (see :func:`lsh_chunked`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        qk: Tensor,
        v: Tensor,
        pos: Tensor,
        real: Tensor | None,
        c: int,
        causal: bool,
        dropout_p: float,
    ) -> Tensor:
        b, h, s, _ = qk.shape
        d_v, length = v.shape[-1], pos.shape[-1]
        seed = int(torch.randint(1 << 62, ())) if dropout_p > 0 else None
        gen = None if seed is None else torch.Generator(qk.device).manual_seed(seed)
        # per position, over the rounds seen so far: the row maximum, the normalizer and
        # the output (unnormalized, relative to the maximum)
        m = qk.new_full((b, h, s), float("-inf"))
        z = qk.new_zeros(b, h, s)
        out = qk.new_zeros(b, h, s, d_v)
        for lo, hi in _groups(s, length, c, b * h * 2 * c * c):
            grp = _Group(qk, v, pos, real, c, lo, hi, causal)
            pq = grp.pq.flatten(2)  # (b, h, g c)
            top = grp.s.amax(-1)  # (b, h, g, c), finite: every row holds its own score
            e = grp.s.sub_(top.unsqueeze(-1)).exp_()  # (b, h, g, c, 2c)
            total = e.sum(-1).flatten(2)  # (b, h, g c) softmax's normalizer (no dropout)
            if gen is not None:
                e.mul_(_keep(e.shape, dropout_p, gen, e))
            o = (e @ grp.v).flatten(2, 3)  # (b, h, g c, d_v)
            top = top.flatten(2)
            if lo < s // c:  # the first round: each position seen for the first time
                m.scatter_(2, pq, top)
                z.scatter_(2, pq, total)
                out.scatter_(2, pq.unsqueeze(-1).expand_as(o), o)
                continue
            m_old = m.gather(2, pq)
            m_new = torch.maximum(m_old, top)
            a, w = torch.exp(m_old - m_new), torch.exp(top - m_new)  # rescale old, new
            z.scatter_(2, pq, z.gather(2, pq) * a + total * w)
            o = _rows(out, pq).mul_(a.unsqueeze(-1)).add_(o * w.unsqueeze(-1))
            out.scatter_(2, pq.unsqueeze(-1).expand_as(o), o)
            m.scatter_(2, pq, m_new)
        out.div_(z.unsqueeze(-1))
        log_z = z.log_()
        ctx.save_for_backward(qk, v, pos, real, m, log_z, out)
        ctx.c, ctx.causal, ctx.dropout_p, ctx.seed = c, causal, dropout_p, seed
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor):  # type: ignore[override]
        qk, v, pos, real, m, log_z, out = ctx.saved_tensors
        c, p = ctx.c, ctx.dropout_p
        b, h, s, _ = qk.shape
        length = pos.shape[-1]
        gen = None if ctx.seed is None else torch.Generator(qk.device).manual_seed(ctx.seed)
        delta = (d_out * out).sum(-1)  # (b, h, s) rowsum(dO * O)
        dq, dk, dv = torch.zeros_like(qk), torch.zeros_like(qk), torch.zeros_like(v)
        for lo, hi in _groups(s, length, c, b * h * 2 * c * c):
            grp = _Group(qk, v, pos, real, c, lo, hi, causal=ctx.causal)
            g = hi - lo
            pq = grp.pq.flatten(2)  # (b, h, g c)
            rows = (b, h, g, c, 1)
            # P = exp((S - M) - log Z), in this order (see the module docstring)
            probs = grp.s.sub_(m.gather(2, pq).view(rows)).sub_(log_z.gather(2, pq).view(rows))
            probs = probs.exp_()  # (b, h, g, c, 2c)
            do = _rows(d_out, pq).view(b, h, g, c, -1)  # (b, h, g, c, d_v)
            dp = do @ grp.v.transpose(-1, -2)  # (b, h, g, c, 2c)
            if gen is not None:
                keep = _keep(probs.shape, p, gen, probs)
                dvw = (probs * keep).transpose(-1, -2) @ do  # (b, h, g, 2c, d_v)
                dp.mul_(keep)
            else:
                dvw = probs.transpose(-1, -2) @ do
            ds = dp.sub_(delta.gather(2, pq).view(rows)).mul_(probs)
            ds.masked_fill_(grp.own, 0.0)  # a position's own score is a constant
            _add_rows(dq, pq, (ds @ grp.k).flatten(2, 3))
            dkw = ds.transpose(-1, -2) @ grp.q  # (b, h, g, 2c, d) to the unit keys
            keys = grp.ch.flatten(2)  # (b, h, (g + 1) c): the previous chunk, then the group
            _add_rows(dk, keys, _fold(dkw, c))
            _add_rows(dv, keys, _fold(dvw, c))
        dq += _unit_keys_backward_(qk, dk)
        return dq, dv, None, None, None, None, None


def _add_rows(dst: Tensor, idx: Tensor, src: Tensor) -> None:
    """``dst[.., idx[j], :] += src[.., j, :]`` (repeated positions add up)."""
    dst.scatter_add_(2, idx.unsqueeze(-1).expand(-1, -1, -1, dst.shape[-1]), src)


def _fold(x: Tensor, c: int) -> Tensor:
    """Window gradients ``(b, h, g, 2c, e)`` onto the chunks ``lo - 1 .. hi - 1``:
    ``(b, h, (g + 1) c, e)`` (chunk ``j`` is the first half of window ``j + 1`` and the
    second half of window ``j``)."""
    b, h, g, _, e = x.shape
    y = x.new_zeros(b, h, g + 1, c, e)
    y[:, :, :-1] += x[:, :, :, :c]
    y[:, :, 1:] += x[:, :, :, c:]
    return y.flatten(2, 3)


def lsh_chunked(
    qk: Tensor,
    v: Tensor,
    pos: Tensor,
    real: Tensor | None,
    c: int,
    causal: bool,
    dropout_p: float,
) -> Tensor:
    """LSH attention over sorted slots, rounds combined (module docstring).

    Args:
        qk: ``(b, h, s, d)`` shared query/key vectors (keys normalized here).
        v: ``(b, h, s, d_v)``.
        pos: ``(b, h, n_hashes s)`` long: the position of each sorted slot, round by round
            (every position once per round; rounds contiguous, ``s`` a multiple of ``c``).
        real: ``(b, s)`` bool, True = real token (keys that are False are never seen), or
            None.
        c: chunk length.
        causal: no attention to later positions.
        dropout_p: dropout on the weights (each round's, after its normalization).

    Returns:
        ``(b, h, s, d_v)``.
    """
    return LSHChunked.apply(qk, v, pos, real, c, causal, dropout_p)  # type: ignore[no-any-return]


__all__ = ["GROUP_ELEMENTS", "NORM_EPS", "SELF_SCORE", "lsh_chunked", "unit_keys"]
