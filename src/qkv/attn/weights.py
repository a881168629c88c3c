"""Attention weights ``softmax(f(q, k) * scale + mask)`` of a :class:`Problem`: the
NaN-safe reference and, without gradients, the same computed a few rows at a time; and
the weights with the output ``weights @ V`` computed once (:func:`weights_and_output`,
what a recorder of every weight runs instead of a fused kernel).

Scores and softmax are computed in float32 for float16/bfloat16 inputs (as the fused
kernels accumulate): ``q k^T`` in float16 overflows past 65504 and rounds the scores
before the softmax amplifies the error. The weights come back in the input dtype."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from qkv.attn.problem import (
    Problem,
    _expand_kv,
    _shape,
    _target_shape,
    compute_dtype,
    dense_mask,
    hide_unseen,
    rows_with_keys,
    unseen_keys,
)
from qkv.attn.scores import dot
from qkv.masks import Causal


def _masked_scores(p: Problem, k: Tensor, m: Tensor | None = None) -> Tensor:
    """Scaled and masked scores ``(..., s_q, s_k)`` in :func:`compute_dtype` (float32 for
    half inputs; a custom score runs in the input dtype, its result is upcast).

    Keys that no query sees are zeroed first (:func:`hide_unseen`), so that whatever they
    hold cannot reach a gradient; the scores are then masked by selection (``masked_fill``),
    which also hides a non-finite score of a key only some queries see.

    Args:
        p: the problem.
        k: its keys, expanded to the query heads.
        m: ``dense_mask(p)`` when the caller has it already.
    """
    score, ctype = p.score, compute_dtype(p.q.dtype)
    m = dense_mask(p) if m is None else m
    if m is not None:
        k = hide_unseen(k, unseen_keys(m))
    if score == "dot":
        s = dot(p.q.to(ctype), k.to(ctype))  # products of halves are exact in float32
    else:
        s = score(p.q, k)  # type: ignore[operator]
    if not isinstance(s, Tensor) or s.shape[-2:] != (p.s_q, p.s_k):
        got = _shape(s) if isinstance(s, Tensor) else type(s).__name__
        raise ValueError(
            f"score function must return (..., s_q, s_k) = (..., {p.s_q}, {p.s_k}), got {got}"
        )
    s = s.to(ctype)
    if p.scale != 1.0:
        s = s * p.scale
    if m is None:
        return s
    if m.dtype == torch.bool:
        return s.masked_fill(~m, float("-inf"))
    return s + m


def safe_softmax(scores: Tensor) -> Tensor:
    """Softmax over the last dim that gives all-zero rows (and zero gradients) where every
    score is ``-inf``, instead of NaN. Computed in float32 for half inputs; an empty last
    dim (no keys) gives an empty result."""
    if scores.shape[-1] == 0:
        return scores.clone()  # nothing to normalize; keeps the graph (zero gradients)
    x = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    m = x.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m).detach()
    e = torch.exp(x - m)
    z = e.sum(dim=-1, keepdim=True)
    # z == 0 only for rows that see nothing; dividing those by 1 keeps 0 and a finite grad
    w = e / torch.where(z > 0, z, torch.ones_like(z))
    return w.to(scores.dtype)


def zeroed(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """Zeros of ``shape`` whose memory is touched only where it is written.

    On a CPU, first-touching fresh memory costs about as much as computing the weights
    (``docs/performance.md``), and ``torch.zeros`` touches every page to write its zeros.
    This takes the memory from ``calloc`` instead (through NumPy), which leaves fresh pages
    from the OS untouched: they read as zero, and a page is faulted in only when written.
    The weights of a causal layer leave the keys above the diagonal at zero, so the pages
    wholly above it are never touched (a quarter of a square layer's at 2048 keys in
    float32, where a row is two 4 KiB pages; more for longer rows). Elsewhere, and for
    empty shapes, it is ``torch.zeros``.
    """
    device = torch.device(device)
    n_bytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if device.type != "cpu" or n_bytes == 0:
        return torch.zeros(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.zeros(n_bytes, dtype=np.uint8)).view(dtype).view(shape)


def attention_weights(p: Problem, out: Tensor | None = None, *, out_zeroed: bool = False) -> Tensor:
    """The attention weights ``softmax(f(q, k) * scale + mask)`` of a problem (no dropout).

    Without gradients and with a dot-product score the rows are computed in chunks
    (:func:`_by_row_chunks`); otherwise in one piece by the reference.

    Args:
        p: the problem.
        out: where to write the weights (no gradients): a tensor of the result's shape,
            of any floating dtype (a compact one such as bfloat16 halves the memory; the
            softmax still runs in float32 and each chunk is rounded once when written).
            Reusing one buffer across calls spares first-touching fresh memory.
        out_zeroed: ``out`` holds zeros already (from :func:`zeroed`): the keys a causal
            row cannot see are then not written, and their memory is never touched.

    Returns:
        ``(..., h, s_q, s_k)`` weights (``out`` when given); rows with nothing to attend
        to are all zero.

    Raises:
        ValueError: ``out`` of another shape, or ``out`` while gradients are wanted.
    """
    k, _ = _expand_kv(p)
    wants_grad = _wants_grad(p, k)
    _check_out(p, k, out)
    if out is not None and wants_grad:
        raise ValueError("out cannot be used while gradients are wanted (no_grad)")
    if p.score == "dot" and not wants_grad:
        m = None if isinstance(p.mask, Causal) else dense_mask(p)
        return _by_row_chunks(p, k, m, out, out_zeroed)[0]
    w = safe_softmax(_masked_scores(p, k))
    return w.to(p.q.dtype) if out is None else out.copy_(w)


def weights_and_output(
    p: Problem, out: Tensor | None = None, *, out_zeroed: bool = False
) -> tuple[Tensor, Tensor]:
    """The attention output ``softmax(q k^T * scale + mask) V`` and its weights, computed once.

    What the ``math`` backend computes (Vaswani et al. 2017, eq. 1), a few query rows at a
    time (:func:`_by_row_chunks`): each chunk's weights, still in float32 and in cache,
    give the chunk's output rows, then are written (rounded once) into the weights. A
    recorder that wants every weight thus computes attention once instead of computing
    the weights beside a fused kernel. The output equals the ``math`` backend's, and so
    every backend's, up to float rounding (the products are blocked differently): to
    ``1e-5`` (absolute and relative) in float32, forward and backward, the tolerance of the
    numerics contract (``docs/architecture.md``), which it also keeps: keys and values no
    query sees are selected away before any product, rows that see no key give zeros.

    With gradients wanted, the backward is computed from the weights kept for it (the
    softmax's backward ``dS = W * (dW - rowsum(dW * W))``, then ``dQ = dS K * scale``,
    ``dK = dS^T Q * scale``, ``dV = W^T dO``): no second computation of the scores, and
    what the backward holds is the weights themselves (float32 for half inputs).

    Args:
        p: a problem with a dot-product score and no dropout.
        out: where to write the weights: a tensor of their shape, of any floating dtype
            (the output is computed from the float32 weights before they are rounded).
        out_zeroed: ``out`` holds zeros already (see :func:`attention_weights`).

    Returns:
        ``(output, weights)``: ``(..., s_q, d_v)`` in the queries' dtype, and
        ``(..., h, s_q, s_k)`` weights (``out`` when given, else in the queries' dtype),
        pre-dropout and detached.

    Raises:
        ValueError: a custom score, dropout, or ``out`` of another shape.
    """
    if p.score != "dot" or p.dropout_p > 0:
        raise ValueError(
            f"weights_and_output needs a dot-product score and no dropout, got "
            f"score={p.score!r}, dropout_p={p.dropout_p}"
        )
    k, v = _expand_kv(p)
    _check_out(p, k, out)
    m = None if isinstance(p.mask, Causal) else dense_mask(p)
    unseen = _unseen_keys(p, m)
    if unseen is not None:  # selected away before any product (numerics contract)
        k, v = hide_unseen(k, unseen), hide_unseen(v, unseen)  # (..., h, s_k, d)
    if not _wants_grad(p, k, v):
        w, o = _by_row_chunks(p, k, m, out, out_zeroed, v)
        assert o is not None
        return o.to(p.q.dtype), w
    bias = m if m is not None and m.is_floating_point() else None
    o, w = _FromWeights.apply(p.q, k, v, bias, p, m)
    return o, (w.to(p.q.dtype) if out is None else out.copy_(w))


def _unseen_keys(p: Problem, m: Tensor | None) -> Tensor | None:
    """``(..., s_k, 1)`` bool: keys no query sees (:func:`unseen_keys`), None when every
    key is seen; ``m`` is ``dense_mask(p)``, None for a causal mask, whose unseen keys are
    those past its last row's reach (only when it is aligned short of the end)."""
    if m is not None:
        return unseen_keys(m)
    if not isinstance(p.mask, Causal):
        return None
    seen = max(0, min(p.s_k, p.s_q + p.mask.key_offset(p.s_q, p.s_k)))  # keys j <= s_q-1+off
    if seen == p.s_k:
        return None
    return (torch.arange(p.s_k, device=p.q.device) >= seen)[:, None]  # (s_k, 1)


def _wants_grad(p: Problem, *kv: Tensor) -> bool:
    return torch.is_grad_enabled() and (
        p.q.requires_grad
        or any(t.requires_grad for t in kv)
        or (isinstance(p.mask, Tensor) and p.mask.requires_grad)
    )


def _check_out(p: Problem, k: Tensor, out: Tensor | None) -> None:
    if out is not None:
        want = _target_shape(p.q, k, 1)
        if tuple(out.shape) != tuple(want):
            raise ValueError(f"out must have shape {tuple(want)}, got {tuple(out.shape)}")


class _FromWeights(torch.autograd.Function):
    """:func:`weights_and_output` with gradients: the forward is the chunked one, the
    backward starts from the weights it kept (float32 for half inputs)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        bias: Tensor | None,
        p: Problem,
        m: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        ctype = compute_dtype(q.dtype)
        w = zeroed(_target_shape(q, k, 1), ctype, q.device)  # (..., s_q, s_k)
        w, o = _by_row_chunks(p, k, m, w, True, v)
        assert o is not None
        ctx.save_for_backward(q, k, v, w)
        ctx.scale = p.scale
        ctx.bias = None if bias is None else (bias.shape, bias.dtype)
        ctx.mark_non_differentiable(w)
        return o.to(q.dtype), w

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_o: Tensor, _d_w: Tensor | None) -> tuple[Tensor | None, ...]:
        q, k, v, w = ctx.saved_tensors
        ctype = w.dtype
        d_o = d_o.to(ctype)
        d_v = torch.matmul(w.transpose(-1, -2), d_o)  # (..., s_k, d_v)
        d_w = torch.matmul(d_o, v.to(ctype).transpose(-1, -2))  # (..., s_q, s_k)
        d_s = w * (d_w - (d_w * w).sum(-1, keepdim=True))  # the softmax's backward
        d_bias = None
        if ctx.bias is not None and ctx.needs_input_grad[3]:
            d_bias = d_s.sum_to_size(ctx.bias[0]).to(ctx.bias[1])
        if ctx.scale != 1.0:
            d_s = d_s * ctx.scale
        d_q = torch.matmul(d_s, k.to(ctype))  # (..., s_q, d)
        d_k = torch.matmul(d_s.transpose(-1, -2), q.to(ctype))  # (..., s_k, d)
        grads = [g.sum_to_size(t.shape).to(t.dtype) for g, t in ((d_q, q), (d_k, k), (d_v, v))]
        return (*grads, d_bias, None, None)


#: scores held at once by :func:`_by_row_chunks` (elements): 4 MiB in float32, so a
#: chunk's scores stay in cache from the matmul through the softmax
_CHUNK_ELEMENTS = 1 << 20


def _by_row_chunks(
    p: Problem,
    k: Tensor,
    m: Tensor | None,
    out: Tensor | None = None,
    out_zeroed: bool = False,
    v: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`attention_weights` for a dot-product score without gradients (and, given
    values ``v``, the output ``weights @ v``), a few query rows at a time: the scores of a
    chunk are scaled, masked and normalized while in cache, multiplied by the values while
    still in float32, and written once into the result. With a causal mask a chunk
    computes only the keys its last row can see (half the work of a square causal
    problem) and the rest of its rows is zero (left untouched in a result from
    :func:`zeroed`). Same values as the reference up to float rounding (the matmul is
    blocked differently); the reference stays the readable definition.

    Args:
        p: the problem.
        k: its keys expanded to the query heads.
        m: ``dense_mask(p)``, None for a causal mask.
        out, out_zeroed: as in :func:`attention_weights`.
        v: values expanded to the query heads, or None for the weights alone.

    Returns:
        ``(weights, output)``: the weights in ``out`` (or in the queries' dtype), the
        output ``(..., s_q, d_v)`` in the compute dtype (None without ``v``).
    """
    q = p.q
    target = _target_shape(q, k, 1)
    lead, s_q, s_k = target[:-2], p.s_q, p.s_k
    causal_off = p.mask.key_offset(s_q, s_k) if isinstance(p.mask, Causal) else None
    ctype = compute_dtype(q.dtype)  # float32 scores for half inputs
    if out is None:
        out, out_zeroed = zeroed(target, q.dtype, q.device), True  # (..., s_q, s_k)
    o = None if v is None else q.new_zeros((*lead, s_q, v.shape[-1]), dtype=ctype)
    row_ok = None if m is None else rows_with_keys(m)  # (..., s_q, 1), explicit masks
    rows = max(16, min(s_q, _CHUNK_ELEMENTS // max(1, math.prod(lead) * s_k)))
    # the scale goes on the queries (s_q d products, not s_q s_k): one pass less per chunk
    q = q.to(ctype) if p.scale == 1.0 else q.to(ctype) * p.scale  # (..., s_q, d)
    kt = k.transpose(-1, -2).to(ctype)  # (..., d, s_k)
    v = None if v is None else v.to(ctype)  # (..., s_k, d_v)
    direct = out.dtype == ctype  # the softmax writes into the result: no copy
    for r0 in range(0, s_q, rows):
        r1 = min(s_q, r0 + rows)
        k_end = s_k if causal_off is None else max(0, min(s_k, r1 + causal_off))
        if k_end < s_k and not out_zeroed:
            out[..., r0:r1, k_end:].zero_()
        if k_end == 0:
            continue
        s = torch.matmul(q[..., r0:r1, :], kt[..., :k_end])  # (..., r, k_end)
        if causal_off is not None:
            # query i sees key j iff j <= i + off; only keys past r0 + off can be hidden
            c0 = max(0, r0 + causal_off + 1)  # keys before c0 are seen by every row
            if c0 < k_end:
                qi = torch.arange(r0, r1, device=q.device)[:, None] + causal_off
                kj = torch.arange(c0, k_end, device=q.device)
                s[..., c0:] = s[..., c0:].masked_fill(kj > qi, float("-inf"))
        elif m is not None:
            mc = m[..., r0:r1, :] if m.ndim >= 2 and m.shape[-2] > 1 else m  # 1-D: keys only
            mc = mc[..., :k_end]
            s = s.masked_fill(~mc, float("-inf")) if mc.dtype == torch.bool else s + mc
        w = out[..., r0:r1, :k_end] if direct else torch.empty_like(s)  # (..., r, k_end)
        torch.softmax(s, -1, out=w)
        if causal_off is not None and r0 + causal_off < 0:
            w[..., : min(r1, -causal_off) - r0, :] = 0.0  # rows before the first key
        elif row_ok is not None:
            ok = row_ok[..., r0:r1, :] if row_ok.ndim >= 2 and row_ok.shape[-2] > 1 else row_ok
            w.masked_fill_(~ok, 0.0)  # all -inf rows: NaN from softmax -> 0
        if o is not None and v is not None:
            o[..., r0:r1, :] = torch.matmul(w, v[..., :k_end, :])  # (..., r, d_v)
        if not direct:
            out[..., r0:r1, :k_end] = w  # rounded once
    return out, o
