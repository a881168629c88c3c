"""Attention weights ``softmax(f(q, k) * scale + mask)`` of a :class:`Problem`: the
NaN-safe reference and, without gradients, the same computed a few rows at a time.

Scores and softmax are computed in float32 for float16/bfloat16 inputs (as the fused
kernels accumulate): ``q k^T`` in float16 overflows past 65504 and rounds the scores
before the softmax amplifies the error. The weights come back in the input dtype."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

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
    The weights of a causal layer leave the keys above the diagonal at zero, so half of
    them are never touched. Elsewhere it is ``torch.zeros``.
    """
    device = torch.device(device)
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    n_bytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    return torch.from_numpy(np.zeros(n_bytes, dtype=np.uint8)).view(dtype).view(shape)


def attention_weights(p: Problem, out: Tensor | None = None, *, out_zeroed: bool = False) -> Tensor:
    """The attention weights ``softmax(f(q, k) * scale + mask)`` of a problem (no dropout).

    Without gradients and with a dot-product score the rows are computed in chunks
    (:func:`_weights_by_row_chunks`); otherwise in one piece by the reference.

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
    wants_grad = torch.is_grad_enabled() and (
        p.q.requires_grad
        or k.requires_grad
        or (isinstance(p.mask, Tensor) and p.mask.requires_grad)
    )
    if out is not None:
        want = _target_shape(p.q, k, 1)
        if tuple(out.shape) != tuple(want):
            raise ValueError(f"out must have shape {tuple(want)}, got {tuple(out.shape)}")
        if wants_grad:
            raise ValueError("out cannot be used while gradients are wanted (no_grad)")
    if p.score == "dot" and not wants_grad:
        return _weights_by_row_chunks(p, k, out, out_zeroed)
    w = safe_softmax(_masked_scores(p, k))
    return w.to(p.q.dtype) if out is None else out.copy_(w)


#: scores held at once by :func:`_weights_by_row_chunks` (elements): 4 MiB in float32, so a
#: chunk's scores stay in cache from the matmul through the softmax
_CHUNK_ELEMENTS = 1 << 20


def _weights_by_row_chunks(
    p: Problem, k: Tensor, out: Tensor | None = None, out_zeroed: bool = False
) -> Tensor:
    """:func:`attention_weights` for a dot-product score without gradients, a few query
    rows at a time: the scores of a chunk are scaled, masked and normalized while in
    cache, and written once into the result. With a causal mask a chunk computes only
    the keys its last row can see (half the work of a square causal problem) and the
    rest of its rows is zero (left untouched in a result from :func:`zeroed`). Same values
    as the reference up to float rounding (the matmul is blocked differently); the
    reference stays the readable definition.
    """
    q, m = p.q, dense_mask(p) if not isinstance(p.mask, Causal) else None
    target = _target_shape(q, k, 1)
    lead, s_q, s_k = target[:-2], p.s_q, p.s_k
    causal_off = p.mask.key_offset(s_q, s_k) if isinstance(p.mask, Causal) else None
    ctype = compute_dtype(q.dtype)  # float32 scores for half inputs
    if out is None:
        out, out_zeroed = zeroed(target, q.dtype, q.device), True  # (..., s_q, s_k)
    row_ok = None if m is None else rows_with_keys(m)  # (..., s_q, 1), explicit masks
    rows = max(16, min(s_q, _CHUNK_ELEMENTS // max(1, math.prod(lead) * s_k)))
    q, kt = q.to(ctype), k.transpose(-1, -2).to(ctype)  # (..., d, s_k)
    for r0 in range(0, s_q, rows):
        r1 = min(s_q, r0 + rows)
        k_end = s_k if causal_off is None else max(0, min(s_k, r1 + causal_off))
        if k_end < s_k and not out_zeroed:
            out[..., r0:r1, k_end:].zero_()
        if k_end == 0:
            continue
        s = torch.matmul(q[..., r0:r1, :], kt[..., :k_end])  # (..., r, k_end)
        if p.scale != 1.0:
            s.mul_(p.scale)
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
        w = torch.softmax(s, -1)
        if causal_off is not None and r0 + causal_off < 0:
            w[..., : min(r1, -causal_off) - r0, :] = 0.0  # rows before the first key
        elif row_ok is not None:
            ok = row_ok[..., r0:r1, :] if row_ok.ndim >= 2 and row_ok.shape[-2] > 1 else row_ok
            w = w.masked_fill(~ok, 0.0)  # all -inf rows: NaN from softmax -> 0
        out[..., r0:r1, :k_end] = w
    return out
