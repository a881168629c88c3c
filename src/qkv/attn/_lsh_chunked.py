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
#: Most scores of one group of chunks computed at once (1 MiB in float32): bounds the
#: working memory of the forward and backward (a few tensors of this size).
GROUP_ELEMENTS: int = 1 << 18


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


class _Rows:
    """A ``(b, h, s, e)`` tensor read and written a position at a time, as rows of one
    ``(rows, e)`` view of its storage (``index_select``/``index_add_`` move whole rows,
    several times faster than ``gather``/``scatter_add_`` with an expanded index). A
    layout whose rows are not whole rows of its storage is copied first (reads only)."""

    def __init__(self, x: Tensor) -> None:
        b, h, _, e = x.shape
        if x.stride(-1) != 1 or any(st % e for st in x.stride()[:3]):
            x = x.contiguous()
        st = [n // e for n in x.stride()[:3]]
        n_rows = sum((n - 1) * k for n, k in zip(x.shape[:3], st)) + 1
        self.x, self.e = x, e
        self.table = x.as_strided((n_rows, e), (e, 1))
        base = torch.arange(b, device=x.device)[:, None] * st[0]
        self.base = (base + torch.arange(h, device=x.device) * st[1]).view(b, h, 1)  # (b, h, 1)
        self.step = st[2]

    def index(self, pos: Tensor) -> Tensor:
        """Flat row indices of positions ``pos`` ``(b, h, ...)``."""
        return (pos.flatten(2) * self.step + self.base).flatten()

    def take(self, rows: Tensor, shape: tuple[int, ...]) -> Tensor:
        """The rows ``rows`` as a new ``(*shape, e)`` tensor."""
        return self.table.index_select(0, rows).view(*shape, self.e)

    def put(self, rows: Tensor, src: Tensor) -> None:
        self.table.index_copy_(0, rows, src.reshape(-1, self.e))

    def add(self, rows: Tensor, src: Tensor) -> None:
        """``x[row] += src`` (repeated rows add up)."""
        self.table.index_add_(0, rows, src.reshape(-1, self.e))


def _heads_last(b: int, h: int, s: int, e: int, like: Tensor) -> Tensor:
    """Zeros ``(b, h, s, e)`` stored as ``(b, s, h, e)``: the layout of heads split from a
    projection, so merging them back (``transpose(1, 2).reshape``) is a view."""
    return like.new_zeros(b, s, h, e).transpose(1, 2)


class _Group:
    """One group of chunks ``[lo, hi)`` (inside one round) with what the forward and the
    backward both recompute: the positions of the chunks ``lo - 1 .. hi - 1`` ``ch``
    ``(b, h, g + 1, c)`` and their rows, the queries, the window keys and values and the
    masked scores ``(b, h, g, c, 2c)``."""

    def __init__(
        self, qk: _Rows, v: _Rows, pos: Tensor, real: Tensor | None, c: int, lo: int, hi: int
    ) -> None:
        b, h, length = pos.shape
        n_c, g = length // c, hi - lo
        idx = torch.arange(lo - 1, hi, device=pos.device) % n_c  # previous chunk first
        self.ch = ch = pos.view(b, h, n_c, c).index_select(2, idx)  # (b, h, g + 1, c)
        self.pq = ch[:, :, 1:]  # (b, h, g, c)
        self.pk = torch.cat([ch[:, :, :-1], ch[:, :, 1:]], dim=3)  # (b, h, g, 2c)
        self.rows_qk, self.rows_v = qk.index(ch), v.index(ch)
        self.x = qk.take(self.rows_qk, (b, h, g + 1, c))  # (b, h, g + 1, c, d) raw vectors
        self.q = self.x[:, :, 1:]  # (b, h, g, c, d)
        k = unit_keys(self.x)
        self.k = torch.cat([k[:, :, :-1], k[:, :, 1:]], dim=3)  # (b, h, g, 2c, d)
        vx = v.take(self.rows_v, (b, h, g + 1, c))
        self.v = torch.cat([vx[:, :, :-1], vx[:, :, 1:]], dim=3)  # (b, h, g, 2c, d_v)
        self.real, self.c, self.round_start = real, c, lo % (qk.x.shape[2] // c) == 0

    def scores(self, causal: bool) -> Tensor:
        """Masked scores ``(b, h, g, c, 2c)``: later positions (causal) and padding at
        ``-inf``, a position's own score at :data:`SELF_SCORE`."""
        s = self.q @ self.k.transpose(-1, -2)  # (b, h, g, c, 2c)
        if causal:
            s.masked_fill_(self.pq.unsqueeze(-1) < self.pk.unsqueeze(-2), float("-inf"))
        if self.real is not None:
            b, h, g, _, _ = s.shape
            seen = self.real[torch.arange(b, device=s.device).view(b, 1, 1, 1), self.pk]
            s.masked_fill_(~seen.view(b, h, g, 1, 2 * self.c), float("-inf"))
        return self.fill_own(s, SELF_SCORE)

    def fill_own(self, s: Tensor, value: float) -> Tensor:
        """``s`` with ``value`` where a query meets its own position: each slot's own in
        the second half of its window, and, in a round's first chunk, the same position's
        slot of the previous round in the first half (positions are distinct in a round)."""
        c = self.c
        s[..., c:].diagonal(dim1=-2, dim2=-1).fill_(value)
        if self.round_start:
            same = self.ch[:, :, 1, :, None] == self.ch[:, :, 0, None, :]  # (b, h, c, c)
            s[:, :, 0, :, :c].masked_fill_(same, value)
        return s


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
        m = qk.new_full((b * h * s,), float("-inf"))
        z = qk.new_zeros(b * h * s)
        out = _heads_last(b, h, s, d_v, v)  # (b, h, s, d_v)
        rows_qk, rows_v, rows_out = _Rows(qk), _Rows(v), _Rows(out)
        flat = torch.arange(b * h, device=qk.device).view(b, h, 1) * s
        for lo, hi in _groups(s, length, c, b * h * 2 * c * c):
            grp = _Group(rows_qk, rows_v, pos, real, c, lo, hi)
            sc = grp.scores(causal)
            at, rows = (grp.pq.flatten(2) + flat).flatten(), rows_out.index(grp.pq)
            top = sc.amax(-1, keepdim=True)  # (b, h, g, c, 1), finite: a row holds its own
            e = sc.sub_(top).exp_()  # (b, h, g, c, 2c)
            total = e.sum(-1).flatten()  # softmax's normalizer (no dropout)
            if gen is not None:
                e.mul_(_keep(e.shape, dropout_p, gen, e))
            o = e @ grp.v  # (b, h, g, c, d_v)
            top = top.flatten()
            if lo < s // c:  # the first round: each position seen for the first time
                m.index_copy_(0, at, top)
                z.index_copy_(0, at, total)
                rows_out.put(rows, o)
                continue
            m_old = m.index_select(0, at)
            m_new = torch.maximum(m_old, top)
            old, new = torch.exp(m_old - m_new), torch.exp(top - m_new)  # rescalings
            z.index_copy_(0, at, z.index_select(0, at).mul_(old).add_(total * new))
            o = o.view(-1, d_v).mul_(new[:, None])
            rows_out.put(rows, rows_out.take(rows, (-1,)).mul_(old[:, None]).add_(o))
            m.index_copy_(0, at, m_new)
        m, z = m.view(b, h, s), z.view(b, h, s)
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
        b, h, s, d = qk.shape
        length, d_v = pos.shape[-1], v.shape[-1]
        gen = None if ctx.seed is None else torch.Generator(qk.device).manual_seed(ctx.seed)
        delta = (d_out * out).sum(-1).flatten()  # (b h s) rowsum(dO * O)
        # P = exp((S - M) - log Z), in this order (see the module docstring)
        m, log_z = m.flatten(), log_z.flatten()
        dq, dv = _heads_last(b, h, s, d, qk), _heads_last(b, h, s, d_v, v)
        rows_qk, rows_v, rows_do = _Rows(qk), _Rows(v), _Rows(d_out)
        grad_qk, grad_v = _Rows(dq), _Rows(dv)
        flat = torch.arange(b * h, device=qk.device).view(b, h, 1) * s
        for lo, hi in _groups(s, length, c, b * h * 2 * c * c):
            grp = _Group(rows_qk, rows_v, pos, real, c, lo, hi)
            g = hi - lo
            rows = (b, h, g, c, 1)
            at = (grp.pq.flatten(2) + flat).flatten()
            probs = grp.scores(ctx.causal)
            probs = probs.sub_(m[at].view(rows)).sub_(log_z[at].view(rows)).exp_()
            do = rows_do.take(rows_do.index(grp.pq), (b, h, g, c))  # (b, h, g, c, d_v)
            dp = do @ grp.v.transpose(-1, -2)  # (b, h, g, c, 2c)
            if gen is not None:
                keep = _keep(probs.shape, p, gen, probs)
                dvw = (probs * keep).transpose(-1, -2) @ do  # (b, h, g, 2c, d_v)
                dp.mul_(keep)
            else:
                dvw = probs.transpose(-1, -2) @ do
            ds = grp.fill_own(dp.sub_(delta[at].view(rows)).mul_(probs), 0.0)  # own: constant
            dx = _fold(ds.transpose(-1, -2) @ grp.q, c)  # (b, h, g + 1, c, d) to unit keys
            dx = _unit_keys_backward_(grp.x, dx)  # to the raw vectors
            dx[:, :, 1:] += ds @ grp.k  # as queries
            grad_qk.add(grad_qk.index(grp.ch), dx)
            grad_v.add(grad_v.index(grp.ch), _fold(dvw, c))
        return dq, dv, None, None, None, None, None


def _fold(x: Tensor, c: int) -> Tensor:
    """Window gradients ``(b, h, g, 2c, e)`` onto the chunks ``lo - 1 .. hi - 1``:
    ``(b, h, g + 1, c, e)`` (chunk ``j`` is the first half of window ``j + 1`` and the
    second half of window ``j``)."""
    b, h, g, _, e = x.shape
    y = x.new_zeros(b, h, g + 1, c, e)
    y[:, :, :-1] += x[:, :, :, :c]
    y[:, :, 1:] += x[:, :, :, c:]
    return y


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
        ``(b, h, s, d_v)``, stored as ``(b, s, h, d_v)`` (merging the heads is a view).
    """
    return LSHChunked.apply(qk, v, pos, real, c, causal, dropout_p)  # type: ignore[no-any-return]


__all__ = ["GROUP_ELEMENTS", "NORM_EPS", "SELF_SCORE", "lsh_chunked", "unit_keys"]
