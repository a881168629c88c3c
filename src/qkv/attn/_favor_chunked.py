"""FAVOR+ in ``O(s d)`` live memory: a chunked forward and a hand-written chunked backward.

The reference (:func:`qkv.attn.favor._favor_core`, autograd over whole tensors) keeps the
``(s, m)`` random features of the queries and the keys and, for causal attention, a
``(s / chunk, m, d)`` prefix state per chunk: at 16k tokens and ``m = 266`` that is several
times the memory of exact attention through SDPA's fused kernel. Here nothing of size
``s * m`` ever exists: the features of one chunk of ``c`` rows are computed, used and freed,
and the backward pass recomputes them instead of saving them (as FlashAttention recomputes
its scores). What is kept between the passes is the inputs, the output and one normalizer
per query: ``O(s d)``.

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

A first sweep in query order rebuilds ``S_t`` and gives ``dQ``; a second in reverse order
accumulates ``G_t`` and gives ``dK`` and ``dV``. Bidirectional attention is the case with no
``tril`` and one state for every query. The features' own backward is that of
``exp(x W^T - |x|^2 / 2 - c)``, with the stabilizers ``c`` constants (they cancel, and the
reference detaches them too). Tested equal to the reference, forward and backward, in
``tests/attn/test_attention_favor.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: the smallest value of the ``exp`` argument's maximum used as a stabilizer when every
#: key is padding (then every feature is zero and the value does not matter)
_NO_KEY = 0.0


def _logits(x: Tensor, w: Tensor, valid: Tensor | None) -> Tensor:
    """``x W^T - |x|^2 / 2`` with padded rows at ``-inf``: ``(..., c, m)``."""
    logits = x @ w.T - x.square().sum(-1, keepdim=True) / 2
    return logits if valid is None else logits.masked_fill(~valid.unsqueeze(-1), float("-inf"))


def _features(
    x: Tensor, w: Tensor, c: Tensor | None, valid: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    """The positive features of one chunk and ``exp(l - c) / sqrt(m)`` (their derivative in
    ``l``); ``c`` None: the row maximum (queries).

    For queries ``c = max_i (w_i . x) - |x|^2 / 2``, so the ``|x|^2`` terms cancel and the
    exponent is ``x W^T - max(x W^T)``; the ``1 / sqrt(m)`` enters the exponent too, so the
    ``(c, m)`` block is touched by one subtraction and one ``exp`` in place.
    """
    m = w.shape[0]
    raw = x @ w.T  # (..., c, m)
    if c is None:
        shift = raw.amax(-1, keepdim=True)
    else:
        shift = x.square().sum(-1, keepdim=True) / 2 + c
    e = raw.sub_(shift + 0.5 * math.log(m)).exp_()
    phi = e + eps / math.sqrt(m)
    if valid is not None:
        pad = ~valid.unsqueeze(-1)
        e.masked_fill_(pad, 0.0)
        phi.masked_fill_(pad, 0.0)
    return phi, e


def _features_backward(dphi: Tensor, e: Tensor, x: Tensor, w: Tensor) -> Tensor:
    """``d/dx`` of the features from their gradient: ``dl = dphi * e`` through
    ``l = x W^T - |x|^2 / 2`` (``e`` is zero on padded rows, so they get no gradient)."""
    dl = dphi * e  # (..., c, m)
    return dl @ w - x * dl.sum(-1, keepdim=True)


def _key_stabilizer(k: Tensor, root: float, w: Tensor, valid: Tensor | None, chunk: int) -> Tensor:
    """The maximum of every key's logits, one per head ``(b, h, 1, 1)``, chunk by chunk."""
    best = torch.full((*k.shape[:-2], 1, 1), float("-inf"), dtype=k.dtype, device=k.device)
    for i in range(0, k.shape[-2], chunk):
        part = None if valid is None else valid[..., i : i + chunk]
        logits = _logits(k[..., i : i + chunk, :] * root, w, part)
        best = torch.maximum(best, logits.amax((-1, -2), True))
    return torch.where(torch.isinf(best), torch.full_like(best, _NO_KEY), best)


def _ones_column(v: Tensor) -> Tensor:
    return F.pad(v, (0, 1), value=1.0)  # (..., c, d_v + 1): v' = [v, 1]


class FavorChunked(torch.autograd.Function):
    """``D^-1 phi(q) (phi(k)^T v)`` chunk by chunk (see the module docstring).

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
        c_k = _key_stabilizer(k, root, w, valid, chunk)
        keys = _KeyChunks(k, root, v, w, c_k, valid, eps)
        state = keys.state(0, past if causal else k.shape[-2])  # (b, h, m, d_v + 1)
        out = v.new_empty(*q.shape[:-1], v.shape[-1])  # (b, h, s_q, d_v)
        den = q.new_empty(q.shape[:-1])  # (b, h, s_q)
        tril = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
        for i in range(0, s_q, chunk):
            phi_q, _ = _features(q[..., i : i + chunk, :] * root, w, None, None, eps)
            n = phi_q @ state  # (b, h, c, d_v + 1)
            if causal:
                phi_k, _, v1 = keys.chunk(past + i, past + i + phi_q.shape[-2])
                t = tril[: phi_q.shape[-2], : phi_q.shape[-2]]
                n = n + (phi_q @ phi_k.transpose(-2, -1)).masked_fill(~t, 0.0) @ v1
                state = state + phi_k.transpose(-2, -1) @ v1
            d = n[..., -1]
            den[..., i : i + chunk] = d
            out[..., i : i + chunk, :] = n[..., :-1] / torch.where(d > 0, d, 1.0).unsqueeze(-1)
        ctx.save_for_backward(q, k, v, w, c_k, out, den, *(() if valid is None else (valid,)))
        ctx.root, ctx.causal, ctx.chunk, ctx.eps = root, causal, chunk, eps
        return out

    @staticmethod
    def backward(ctx: Any, d_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, w, c_k, out, den, *rest = ctx.saved_tensors
        valid = rest[0] if rest else None
        root, causal, chunk, eps = ctx.root, ctx.causal, ctx.chunk, ctx.eps
        s_q, s_k = q.shape[-2], k.shape[-2]
        past = s_k - s_q
        keys = _KeyChunks(k, root, v, w, c_k, valid, eps)

        def grad_n(i: int) -> Tensor:
            """The gradient of ``N' = [numerator, denominator]`` of queries ``i:i+chunk``;
            rows that see no key (den 0) were divided by 1 and give the denominator no
            gradient, as the reference's ``where``."""
            d, g = den[..., i : i + chunk], d_out[..., i : i + chunk, :]
            safe = torch.where(d > 0, d, 1.0).unsqueeze(-1)  # (b, h, c, 1)
            d_den = torch.where(d > 0, -(g * out[..., i : i + chunk, :]).sum(-1), 0.0)
            return torch.cat([g, d_den.unsqueeze(-1)], dim=-1) / safe  # (b, h, c, d_v + 1)

        tril = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
        dq = torch.empty_like(q)
        # sweep 1, query order: the state before each chunk, and dQ
        state = keys.state(0, past if causal else s_k)
        for i in range(0, s_q, chunk):
            qs = q[..., i : i + chunk, :] * root
            phi_q, e_q = _features(qs, w, None, None, eps)
            g = grad_n(i)  # (b, h, c, d_v + 1)
            dphi_q = g @ state.transpose(-2, -1)  # (b, h, c, m)
            if causal:
                phi_k, _, v1 = keys.chunk(past + i, past + i + phi_q.shape[-2])
                t = tril[: phi_q.shape[-2], : phi_q.shape[-2]]
                dphi_q = dphi_q + (g @ v1.transpose(-2, -1)).masked_fill(~t, 0.0) @ phi_k
                state = state + phi_k.transpose(-2, -1) @ v1
            dq[..., i : i + chunk, :] = _features_backward(dphi_q, e_q, qs, w) * root
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        # sweep 2, reverse order: G = sum of Q_u^T dN'_u over the chunks after this one
        grad_state = w.new_zeros(*q.shape[:-2], w.shape[0], v.shape[-1] + 1)  # (b, h, m, d_v+1)
        if causal:
            for i in reversed(range(0, s_q, chunk)):
                phi_q, _ = _features(q[..., i : i + chunk, :] * root, w, None, None, eps)
                g = grad_n(i)
                lo, hi = past + i, past + i + phi_q.shape[-2]
                phi_k, e_k, v1 = keys.chunk(lo, hi)
                t = tril[: phi_q.shape[-2], : phi_q.shape[-2]]
                a = (phi_q @ phi_k.transpose(-2, -1)).masked_fill(~t, 0.0)  # (b, h, c, c)
                da = (g @ v1.transpose(-2, -1)).masked_fill(~t, 0.0)
                dphi_k = da.transpose(-2, -1) @ phi_q + v1 @ grad_state.transpose(-2, -1)
                dv1 = a.transpose(-2, -1) @ g + phi_k @ grad_state
                dk[..., lo:hi, :] = keys.backward(dphi_k, e_k, lo, hi)
                dv[..., lo:hi, :] = dv1[..., :-1]
                grad_state = grad_state + phi_q.transpose(-2, -1) @ g
            prefix = past  # the keys before the first query see every chunk's gradient
        else:
            for i in range(0, s_q, chunk):
                phi_q, _ = _features(q[..., i : i + chunk, :] * root, w, None, None, eps)
                grad_state = grad_state + phi_q.transpose(-2, -1) @ grad_n(i)
            prefix = s_k
        for j in range(0, prefix, chunk):
            hi = min(j + chunk, prefix)
            phi_k, e_k, v1 = keys.chunk(j, hi)
            dphi_k = v1 @ grad_state.transpose(-2, -1)
            dk[..., j:hi, :] = keys.backward(dphi_k, e_k, j, hi)
            dv[..., j:hi, :] = (phi_k @ grad_state)[..., :-1]
        return dq, dk, dv, None, None, None, None, None, None


class _KeyChunks:
    """The keys' features, ``[v, 1]`` and their states, one chunk at a time."""

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

    def chunk(self, lo: int, hi: int) -> tuple[Tensor, Tensor, Tensor]:
        """Features ``(b, h, c, m)``, their ``exp`` part and ``[v, 1]`` of keys ``lo:hi``."""
        part = None if self.valid is None else self.valid[..., lo:hi]
        ks = self.k[..., lo:hi, :] * self.root
        phi, e = _features(ks, self.w, self.c_k, part, self.eps)
        return phi, e, _ones_column(self.v[..., lo:hi, :])

    def backward(self, dphi: Tensor, e: Tensor, lo: int, hi: int) -> Tensor:
        """The gradient of keys ``lo:hi`` from that of their features."""
        ks = self.k[..., lo:hi, :] * self.root
        return _features_backward(dphi, e, ks, self.w) * self.root

    def state(self, lo: int, hi: int, step: int = 512) -> Tensor:
        """``sum_j phi(k_j) [v_j, 1]^T`` over keys ``lo:hi``: ``(b, h, m, d_v + 1)``."""
        b_h = self.k.shape[:-2]
        total = self.v.new_zeros(*b_h, self.w.shape[0], self.v.shape[-1] + 1)
        for j in range(lo, hi, step):
            phi, _, v1 = self.chunk(j, min(j + step, hi))
            total = total + phi.transpose(-2, -1) @ v1
        return total


__all__ = ["FavorChunked"]
