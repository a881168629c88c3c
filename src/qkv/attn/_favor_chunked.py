"""FAVOR+ in ``O(s d)`` live memory: a chunked forward and a hand-written chunked backward.

The reference (:func:`qkv.attn.favor._favor_core`, autograd over whole tensors) keeps the
``(s, m)`` random features of the queries and the keys and, for causal attention, a
``(s / chunk, m, d)`` prefix state per chunk: at 16k tokens and ``m = 266`` that is several
times the memory of exact attention through SDPA's fused kernel. Here nothing of size
``s * m`` ever exists: the features of one segment of rows are computed, used and freed,
and the backward pass recomputes them instead of saving them (as FlashAttention recomputes
its scores). What is kept between the passes is the inputs, the output, one normalizer
per query and, for causal attention, the ``(m, d + 1)`` prefix state before each segment
of rows (a few hundred rows: :data:`SEGMENT_ELEMENTS`): ``O(s d)``.

The normalizer rides along as an extra value column: with ``v' = [v, 1]`` the numerator and
the denominator of ``D^-1 phi_q (phi_k^T v)`` are one product ``phi_q (phi_k^T v')``. For
chunk ``t`` of the queries (and its diagonal chunk of keys), with ``S_t`` the state of every
earlier key (``sum_j phi(k_j) v'_j^T``, ``(m, d + 1)``) and ``A_t = tril(Q_t K_t^T)``::

    N_t = Q_t S_t + A_t V'_t,           out_t = N_t[:, :d] / N_t[:, d]

and its gradients, with ``dN'_t`` the gradient of ``N_t`` (the last column from the
normalizer) and ``G_t = sum_{u > t} Q_u^T dN'_u`` the gradient of every later state::

    dQ_t  = dN'_t S_t^T + tril(dN'_t V'_t^T) K_t
    dK_t  = tril(dN'_t V'_t^T)^T Q_t + V'_t G_t^T
    dV'_t = A_t^T dN'_t + K_t G_t

The rows run in segments of whole chunks, every chunk of a segment one matrix of a batched
product. The backward pass is one sweep in reverse order: each segment recomputes its
features, rebuilds its chunks' ``S_t`` from the state kept before it, and accumulates
``G_t``; the chunk scans run in place, so a segment holds at most five ``(rows, m)``
blocks. Bidirectional attention is the case with no ``tril`` and one state for every
query (kept for the backward pass, which needs one sweep over the queries for ``dQ`` and
``G`` and one over the keys). The features' own backward is that of
``exp(x W^T - |x|^2 / 2 - c)``, with the stabilizers ``c`` constants (they cancel, and the
reference detaches them too). Tested equal to the reference, forward and backward, in
``tests/attn/test_attention_favor_chunked.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: the value of the key stabilizer when every key is padding (then every feature is zero
#: and the value does not matter)
_NO_KEY = 0.0
#: elements of one ``(b, h, rows, m)`` feature block: a segment holds about as many rows as
#: fit (a whole number of chunks, at least one). The backward pass keeps about ten such
#: blocks alive, and each segment keeps one ``(b, h, m, d_v + 1)`` state for the backward
#: pass: larger segments mean fewer saved states and fewer, larger products.
SEGMENT_ELEMENTS: int = 2**19


def _segments(n: int, chunk: int, rows: int) -> Iterator[tuple[int, int, int]]:
    """``(lo, hi, c)``: rows ``0:n`` in segments of ``rows`` (a multiple of ``chunk``),
    each a whole number of chunks of ``c`` rows: ``c = chunk`` except in the last segment,
    whose leftover ``n % chunk`` rows form a chunk of their own."""
    full = n - n % chunk
    for lo in range(0, full, rows):
        yield lo, min(lo + rows, full), chunk
    if full < n:
        yield full, n, n - full


def _segment_rows(k: Tensor, m: int, chunk: int) -> int:
    """Rows per segment: :data:`SEGMENT_ELEMENTS` over ``b h m``, in whole chunks."""
    per_row = max(1, k.shape[:-2].numel() * m)
    return chunk * max(1, SEGMENT_ELEMENTS // (per_row * chunk))


def _features(x: Tensor, w: Tensor, c: Tensor | None, valid: Tensor | None, eps: float) -> Tensor:
    """The positive features ``exp(x W^T - |x|^2 / 2 - c) / sqrt(m) + eps / sqrt(m)`` of
    rows ``x`` ``(..., r, d)``: ``(..., r, m)``; ``c`` None: the row maximum (queries).

    For queries ``c = max_i (w_i . x) - |x|^2 / 2``, so the ``|x|^2`` terms cancel and the
    exponent is ``x W^T - max(x W^T)``; the ``1 / sqrt(m)`` enters the exponent too, so the
    ``(r, m)`` block is touched by one subtraction, one ``exp`` and one addition, in place.
    """
    m = w.shape[0]
    raw = x @ w.T  # (..., r, m)
    if c is None:
        shift = raw.amax(-1, keepdim=True)
    else:
        shift = x.square().sum(-1, keepdim=True) / 2 + c
    phi = raw.sub_(shift + 0.5 * math.log(m)).exp_().add_(eps / math.sqrt(m))
    return phi if valid is None else phi.masked_fill_(~valid.unsqueeze(-1), 0.0)


def _exp_part(phi: Tensor, eps: float) -> Tensor:
    """``exp(l - c) / sqrt(m)`` (the features' derivative in their logits ``l``) from the
    features, in place: ``phi - eps / sqrt(m)``. Exact where it matters: a feature within a
    factor 2 of ``eps / sqrt(m)`` is subtracted exactly (Sterbenz), and never below 0; padded
    rows (features 0) would go negative and are clamped back to 0 (no gradient)."""
    return phi.sub_(eps / math.sqrt(phi.shape[-1])).clamp_(min=0.0)


def _features_backward(dphi: Tensor, e: Tensor, x: Tensor, w: Tensor) -> Tensor:
    """``d/dx`` of the features from their gradient (``dphi`` is overwritten): ``dl = dphi
    * e`` through ``l = x W^T - |x|^2 / 2`` (``e`` is zero on padded rows: no gradient)."""
    dl = dphi.mul_(e)  # (..., r, m)
    return dl @ w - x * dl.sum(-1, keepdim=True)


def _key_stabilizer(k: Tensor, root: float, w: Tensor, valid: Tensor | None, rows: int) -> Tensor:
    """The maximum of every key's logits, one per head ``(b, h, 1, 1)``, segment by segment."""
    best = torch.full((*k.shape[:-2], 1, 1), float("-inf"), dtype=k.dtype, device=k.device)
    for i in range(0, k.shape[-2], rows):
        x = k[..., i : i + rows, :] * root
        logits = x @ w.T - x.square().sum(-1, keepdim=True) / 2  # (b, h, r, m)
        if valid is not None:
            logits.masked_fill_(~valid[..., i : i + rows].unsqueeze(-1), float("-inf"))
        best = torch.maximum(best, logits.amax((-1, -2), True))
    return torch.where(torch.isinf(best), torch.full_like(best, _NO_KEY), best)


def _seq_major(like: Tensor, s: int, storage: Tensor | None = None) -> Tensor:
    """A new ``(b, h, s, like.shape[-1])`` tensor stored as ``(b, s, h, .)`` (in ``storage``,
    a flat tensor of that many elements, if given): the layout of heads split from a
    ``(b, s, h d)`` projection, and of SDPA's CPU output. The layer's
    ``transpose(1, 2).reshape(b, s, h d)`` of the output, and the heads' view back to the
    projection of each gradient, are then views, not ``(b, s, h d)`` copies (the output
    projection would keep one beside the output this Function keeps, until its backward:
    before the attention backward's peak, which the layout does not change)."""
    b, h, x = like.shape[0], like.shape[1], like.shape[-1]
    t = like.new_empty(b, s, h, x) if storage is None else storage.view(b, s, h, x)
    return t.transpose(1, 2)


def _ones_column(v: Tensor) -> Tensor:
    return F.pad(v, (0, 1), value=1.0)  # (..., r, d_v + 1): v' = [v, 1]


def _chunks(t: Tensor, c: int) -> Tensor:
    """``(b, h, r, x)`` as ``(b, h, r / c, c, x)``: one matrix per chunk."""
    return t.view(*t.shape[:-2], t.shape[-2] // c, c, t.shape[-1])


def _anchors(n: int) -> dict[int, int]:
    """The segments whose starting state the forward pass keeps: ``0`` and the powers of 2
    (``{segment: slot}``). The backward pass, in reverse order, gets any other segment's
    start from the one after it minus the segment's own keys: from the next kept state
    down, at most as many subtractions as additions made it (segment ``j`` in
    ``[2^i, 2^(i+1))`` is a sum of ``j`` segments and is at least half of the state it is
    subtracted from), so its rounding stays within a small factor of the forward's, with
    ``log2(n)`` states kept instead of ``n``."""
    kept = [0, *(1 << i for i in range(max(0, n - 1).bit_length()))]
    return {j: slot for slot, j in enumerate(j for j in kept if j < n)}


def _flat(t: Tensor) -> Tensor:
    """``(b, h, n, x, y)`` as ``(b h n, x, y)``, for the in-place ``baddbmm_``."""
    return t.view(-1, *t.shape[-2:])


def _exclusive_scan_(t: Tensor, start: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """``t`` ``(b, h, n, ...)`` overwritten, in place, by ``start + sum_{u < i} t_u`` for
    every ``i`` along dim 2 (``u > i`` if ``reverse``), and the whole ``start + sum_u t_u``.
    In place: a segment never holds two tensors of this size."""
    acc = start
    for i in reversed(range(t.shape[2])) if reverse else range(t.shape[2]):
        here = t[:, :, i]
        nxt = acc + here
        here.copy_(acc)
        acc = nxt
    return t, acc


def _tril(c: int, device: torch.device) -> Tensor:
    return torch.ones(c, c, dtype=torch.bool, device=device).tril()  # (c, c)


def _causal_segment(
    phi_q: Tensor, phi_k: Tensor, v1: Tensor, state: Tensor, c: int
) -> tuple[Tensor, Tensor]:
    """``N' = [numerator, denominator]`` of the queries of one segment ``(b, h, r, d_v + 1)``
    from its features (chunks of ``c`` rows) and the state before it, and the state after.
    Every chunk of the segment is one matrix of a batched product."""
    qc, kc, vc = _chunks(phi_q, c), _chunks(phi_k, c), _chunks(v1, c)  # (b, h, n, c, .)
    states = kc.transpose(-2, -1) @ vc  # (b, h, n, m, d_v + 1): each chunk's own sum
    states, after = _exclusive_scan_(states, state)  # the state before each chunk
    a = (qc @ kc.transpose(-2, -1)).masked_fill_(~_tril(c, qc.device), 0.0)  # (b, h, n, c, c)
    num = qc @ states  # (b, h, n, c, d_v + 1)
    _flat(num).baddbmm_(_flat(a), _flat(vc))
    return num.view(v1.shape), after


class FavorChunked(torch.autograd.Function):
    """``D^-1 phi(q) (phi(k)^T v)`` segment by segment (see the module docstring).

    ``forward(q, k, v, w, valid, root, causal, chunk, eps)``: ``q`` ``(b, h, s, d)``, ``k``
    ``(b, h, s + past, d)`` (``past >= 0`` keys before the first query, seen by all),
    ``v`` ``(b, h, s + past, d_v)``, ``w`` ``(m, d)`` features (no gradient), ``valid``
    ``(b, 1, s + past)`` bool or None, every input already in the compute dtype.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        w: Tensor,
        valid: Tensor | None,
        root: float,
        causal: bool,
        chunk: int,
        eps: float,
    ) -> Tensor:
        s_q, past = q.shape[-2], k.shape[-2] - q.shape[-2]
        rows = _segment_rows(k, w.shape[0], chunk)
        c_k = _key_stabilizer(k, root, w, valid, rows)
        keys = _Keys(k, root, v, w, c_k, valid, eps)
        state = keys.state(0, past if causal else k.shape[-2], rows)  # (b, h, m, d_v + 1)
        out = _seq_major(v, q.shape[-2])  # (b, h, s_q, d_v), stored (b, s_q, h, d_v)
        den = q.new_empty(q.shape[:-1])  # (b, h, s_q)
        segments = list(_segments(s_q, chunk, rows))
        # causal: the states kept for the backward pass (_anchors); one tensor made before
        # the loop, so that the kept states do not pin the freed blocks between them
        anchors = _anchors(len(segments)) if causal else {}
        starts = state.new_empty(len(anchors) + int(causal), *state.shape)
        for i, (lo, hi, c) in enumerate(segments):
            phi_q = _features(q[..., lo:hi, :] * root, w, None, None, eps)  # (b, h, r, m)
            if causal:
                if i in anchors:
                    starts[anchors[i]] = state
                phi_k, v1 = keys.rows(past + lo, past + hi)
                n, state = _causal_segment(phi_q, phi_k, v1, state, c)
            else:
                n = phi_q @ state  # (b, h, r, d_v + 1)
            d = n[..., -1]
            den[..., lo:hi] = d
            out[..., lo:hi, :] = n[..., :-1] / torch.where(d > 0, d, 1.0).unsqueeze(-1)
        if causal:
            starts[-1] = state  # after the last segment
        ctx.save_for_backward(q, k, v, w, c_k, out, den, starts if causal else state, valid)
        ctx.rows = rows
        ctx.root, ctx.causal, ctx.chunk, ctx.eps = root, causal, chunk, eps
        return out

    @staticmethod
    def backward(ctx: Any, d_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, w, c_k, out, den, kept, valid = ctx.saved_tensors
        root, causal, chunk, eps, rows = ctx.root, ctx.causal, ctx.chunk, ctx.eps, ctx.rows
        s_q, s_k = q.shape[-2], k.shape[-2]
        past = s_k - s_q
        keys = _Keys(k, root, v, w, c_k, valid, eps)

        def grad_n(lo: int, hi: int) -> Tensor:
            """The gradient of ``N' = [numerator, denominator]`` of queries ``lo:hi``;
            rows that see no key (den 0) were divided by 1 and give the denominator no
            gradient, as the reference's ``where``."""
            d, g = den[..., lo:hi], d_out[..., lo:hi, :]
            safe = torch.where(d > 0, d, 1.0).unsqueeze(-1)  # (b, h, r, 1)
            d_den = torch.where(d > 0, -(g * out[..., lo:hi, :]).sum(-1), 0.0)
            return torch.cat([g, d_den.unsqueeze(-1)], dim=-1).div_(safe)  # (b, h, r, d_v+1)

        # one buffer for the three gradients: at long lengths it is above malloc's mmap
        # threshold, so it never fragments the heap the segments' blocks come from
        sizes = (q.numel(), k.numel(), v.numel())
        dq, dk, dv = (
            _seq_major(like, like.shape[-2], t)
            for t, like in zip(q.new_empty(sum(sizes)).split(sizes), (q, k, v), strict=True)
        )
        # G: the gradient of the state, sum of Q_u^T dN'_u over the queries that saw it
        grad_state = w.new_zeros(*q.shape[:-2], w.shape[0], v.shape[-1] + 1)  # (b, h, m, d_v+1)
        segments = list(_segments(s_q, chunk, rows))
        if causal:  # reverse order: G of the later segments is known
            anchors, above = _anchors(len(segments)), kept[-1]
            for j in reversed(range(len(segments))):
                lo, hi, c = segments[j]
                start = kept[anchors[j]] if j in anchors else None
                xq = q[..., lo:hi, :] * root
                phi_q = _features(xq, w, None, None, eps)  # (b, h, r, m)
                phi_k, v1 = keys.rows(past + lo, past + hi)
                g = grad_n(lo, hi)  # (b, h, r, d_v + 1)
                dphi_q, dphi_k, dv1, grad_state, above = _causal_segment_backward(
                    phi_q, phi_k, v1, g, start, above, grad_state, c
                )
                dv[..., past + lo : past + hi, :] = dv1[..., :-1]
                dk[..., past + lo : past + hi, :] = keys.backward(dphi_k, phi_k, past + lo)
                e_q = _exp_part(phi_q, eps)
                dq[..., lo:hi, :] = _features_backward(dphi_q, e_q, xq, w).mul_(root)
            prefix = past  # the keys before the first query see every segment's gradient
        else:
            for lo, hi, _ in segments:
                xq = q[..., lo:hi, :] * root
                phi_q = _features(xq, w, None, None, eps)
                g = grad_n(lo, hi)
                grad_state += phi_q.transpose(-2, -1) @ g
                dphi_q = g @ kept.transpose(-2, -1)  # (b, h, r, m); kept: the one state
                e_q = _exp_part(phi_q, eps)
                dq[..., lo:hi, :] = _features_backward(dphi_q, e_q, xq, w).mul_(root)
            prefix = s_k
        for lo in range(0, prefix, rows):
            hi = min(lo + rows, prefix)
            phi_k, v1 = keys.rows(lo, hi)
            dv[..., lo:hi, :] = (phi_k @ grad_state)[..., :-1]
            dk[..., lo:hi, :] = keys.backward(v1 @ grad_state.transpose(-2, -1), phi_k, lo)
        return dq, dk, dv, None, None, None, None, None, None


def _causal_segment_backward(
    phi_q: Tensor,
    phi_k: Tensor,
    v1: Tensor,
    g: Tensor,
    start: Tensor | None,
    above: Tensor,
    grad_state: Tensor,
    c: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The gradients of one segment's features and ``[v, 1]`` from ``g = dN'``, the state
    before the segment (None: not kept, ``above`` minus the segment's keys) and ``G``, the
    gradient of the state after it; then ``G`` and the state before it."""
    qc, kc, vc, gc = (_chunks(t, c) for t in (phi_q, phi_k, v1, g))  # (b, h, n, c, .)
    upper = ~_tril(c, qc.device)
    kv = kc.transpose(-2, -1) @ vc  # (b, h, n, m, d_v + 1) each chunk's own sum
    if start is None:
        start = above - kv.sum(2)
    states, _ = _exclusive_scan_(kv, start)  # the state before each chunk
    dphi_q = gc @ states.transpose(-2, -1)  # (b, h, n, c, m)
    del states  # the order below keeps at most five (r, m)-sized blocks alive
    da = (gc @ vc.transpose(-2, -1)).masked_fill_(upper, 0.0)  # (b, h, n, c, c)
    _flat(dphi_q).baddbmm_(_flat(da), _flat(kc))
    # G after each chunk: G after the segment plus Q_u^T dN'_u of its later chunks
    grads, before = _exclusive_scan_(qc.transpose(-2, -1) @ gc, grad_state, reverse=True)
    a = (qc @ kc.transpose(-2, -1)).masked_fill_(upper, 0.0)  # (b, h, n, c, c)
    dv1 = a.transpose(-2, -1) @ gc  # (b, h, n, c, d_v + 1)
    _flat(dv1).baddbmm_(_flat(kc), _flat(grads))
    dphi_k = vc @ grads.transpose(-2, -1)  # (b, h, n, c, m)
    del grads
    _flat(dphi_k).baddbmm_(_flat(da).transpose(-2, -1), _flat(qc))
    shapes = phi_q.shape, phi_k.shape, v1.shape
    return dphi_q.view(shapes[0]), dphi_k.view(shapes[1]), dv1.view(shapes[2]), before, start


class _Keys:
    """The keys' features and ``[v, 1]`` rows at a time, and their gradients."""

    def __init__(
        self,
        k: Tensor,
        root: float,
        v: Tensor,
        w: Tensor,
        c_k: Tensor,
        valid: Tensor | None,
        eps: float,
    ) -> None:
        self.k, self.root, self.v, self.w, self.c_k = k, root, v, w, c_k
        self.valid, self.eps = valid, eps

    def rows(self, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """Features ``(b, h, r, m)`` and ``[v, 1]`` ``(b, h, r, d_v + 1)`` of keys ``lo:hi``."""
        part = None if self.valid is None else self.valid[..., lo:hi]
        phi = _features(self.k[..., lo:hi, :] * self.root, self.w, self.c_k, part, self.eps)
        return phi, _ones_column(self.v[..., lo:hi, :])

    def backward(self, dphi: Tensor, phi: Tensor, lo: int) -> Tensor:
        """The gradient of keys ``lo:lo + r`` from that of their features (both overwritten)."""
        ks = self.k[..., lo : lo + phi.shape[-2], :] * self.root
        return _features_backward(dphi, _exp_part(phi, self.eps), ks, self.w).mul_(self.root)

    def state(self, lo: int, hi: int, rows: int) -> Tensor:
        """``sum_j phi(k_j) [v_j, 1]^T`` over keys ``lo:hi``: ``(b, h, m, d_v + 1)``."""
        b_h = self.k.shape[:-2]
        total = self.v.new_zeros(*b_h, self.w.shape[0], self.v.shape[-1] + 1)
        for j in range(lo, hi, rows):
            phi, v1 = self.rows(j, min(j + rows, hi))
            total += phi.transpose(-2, -1) @ v1
        return total


__all__ = ["FavorChunked"]
