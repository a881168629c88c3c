"""``qkv.attention``: ``softmax(f(Q, K) * scale + mask) V`` with pluggable backends.

Backends:
    ``"math"``  the readable eager reference and correctness oracle (every score, weights).
    ``"sdpa"``  ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels).
    ``"auto"``  the fastest registered backend that gives the exact answer.

More backends (block-sparse, FlexAttention) register themselves with
:func:`register_backend`. Every backend agrees with ``"math"``: rows of the mask with no
key to attend to give zeros in the output and in the weights, never NaN, in forward and
backward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from qkv.attn.problem import (
    BackendName,
    MaskLike,
    Problem,
    Score,
    ScoreFn,
    _expand_kv,
    _target_shape,
    connected_zeros,
    dense_mask,
    hide_unseen,
    make_problem,
    rows_with_keys,
    unseen_keys,
)
from qkv.attn.scores import default_scale
from qkv.attn.weights import _masked_scores, attention_weights, safe_softmax
from qkv.masks import Causal

__all__ = [
    "Backend",
    "BackendName",
    "MaskLike",
    "Problem",
    "Score",
    "ScoreFn",
    "attention",
    "attention_weights",
    "available_backends",
    "dense_mask",
    "make_problem",
    "pick_backend",
    "register_backend",
    "safe_softmax",
    "unmasked_sdpa",
]


@dataclass(frozen=True)
class Backend:
    """A registered attention backend.

    Attributes:
        name: the ``backend=`` string.
        run: ``run(problem) -> out`` or ``(out, weights)`` when ``problem.return_weights``.
        why_not: ``why_not(problem) -> str | None``: a reason the backend cannot give the
            exact answer for this problem, or ``None`` when it can.
        auto_priority: higher runs first under ``"auto"``; ``None`` keeps it out of ``"auto"``.
    """

    name: str
    run: Callable[[Problem], Tensor | tuple[Tensor, Tensor]]
    why_not: Callable[[Problem], str | None]
    auto_priority: int | None = 0


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    """Add (or replace) an attention backend selectable by name and, optionally, by auto."""
    _BACKENDS[backend.name] = backend


def available_backends() -> list[str]:
    """Names accepted by ``backend=``."""
    return ["auto", *sorted(_BACKENDS)]


# ---------------------------------------------------------------------------------------
# the math backend: the reference
# ---------------------------------------------------------------------------------------
def _run_math(p: Problem) -> Tensor | tuple[Tensor, Tensor]:
    k, v = _expand_kv(p)
    m = dense_mask(p)
    if m is not None:  # values no query sees: selected away, as 0 * NaN would be NaN
        v = hide_unseen(v, unseen_keys(m))
    # float32 scores, softmax and weighted sum for half inputs, as in the fused kernels
    weights = safe_softmax(_masked_scores(p, k, m))  # (..., s_q, s_k)
    w = F.dropout(weights, p=p.dropout_p, training=True) if p.dropout_p > 0 else weights
    out = (w @ v.to(w.dtype)).to(p.q.dtype)  # (..., s_q, d_v)
    return (out, weights.to(p.q.dtype)) if p.return_weights else out


register_backend(Backend("math", _run_math, lambda p: None, auto_priority=0))


# ---------------------------------------------------------------------------------------
# the sdpa backend
# ---------------------------------------------------------------------------------------
def _sdpa_why_not(p: Problem) -> str | None:
    if not isinstance(p.score, str):
        return "a custom score function needs the math backend"
    if p.return_weights and p.dropout_p > 0:
        return "fused kernels cannot return the weights they dropped out"
    return None


def _to_4d(t: Tensor, lead: int) -> Tensor:
    """Reshape ``(*lead_dims, s, d)`` with ``lead`` leading dims to ``(B, H, s, d)``."""
    if lead == 2:
        return t
    if lead < 2:
        return t.reshape((1,) * (2 - lead) + tuple(t.shape))
    return t.reshape(-1, *t.shape[-3:])


def unmasked_sdpa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    score: str = "scaled_dot",
    scale: float | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> Tensor:
    """The ``sdpa`` backend's answer for an unmasked (or plainly causal) problem, without
    validation or a :class:`Problem`. The backend runs such problems through it, and
    :class:`~qkv.MultiHeadAttention` calls it directly when there is nothing to mask, where
    per-op overhead dominates a decoding step.

    Args:
        q: ``(b, h, s_q, d)``; k, v: ``(b, h_kv, s_k, d)`` with ``h_kv`` dividing ``h``
            (already checked by the caller).
        score: ``"scaled_dot"`` or ``"dot"``.
        scale, dropout_p: as in :func:`attention`.
        is_causal: causal, aligned to the end of the keys; only for ``s_q == s_k`` (the
            kernels' own mask) or ``s_q == 1`` (a decoding step, which sees every key).

    Raises:
        ValueError: ``is_causal`` with ``1 < s_q != s_k`` (use :func:`attention`).
    """
    s_q, s_k = q.shape[-2], k.shape[-2]
    if is_causal and s_q != s_k and s_q != 1:
        raise ValueError(
            f"unmasked_sdpa: is_causal needs s_q == s_k or s_q == 1, got s_q={s_q}, s_k={s_k}"
        )
    if s_k == 0:  # no key to attend to: zeros, like a fully masked row
        return connected_zeros((*q.shape[:-1], v.shape[-1]), q, k, v)
    if scale is None:
        scale = default_scale(q.shape[-1]) if score == "scaled_dot" else 1.0
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        dropout_p=dropout_p,
        is_causal=is_causal and s_q > 1,
        scale=scale,
        enable_gqa=q.shape[-3] != k.shape[-3],
    )


def _run_sdpa(p: Problem) -> Tensor | tuple[Tensor, Tensor]:
    target = _target_shape(p.q, p.k, p.groups)
    lead = len(target) - 2
    q, k, v = p.q, p.k, p.v
    if 0 in target:  # no rows, or no key to attend to: zeros, like a fully masked row
        out = connected_zeros((*target[:-1], v.shape[-1]), q, k, v)
        return (out, attention_weights(p)) if p.return_weights else out
    if q.shape[:-2] != torch.Size(target[:-2]) or (
        p.groups == 1 and k.shape[:-2] != torch.Size(target[:-2])
    ):
        q = q.expand(*target[:-2], *q.shape[-2:])
        kv_lead = list(target[:-2])
        if p.groups > 1:
            kv_lead[-1] = k.shape[-3]
        k = k.expand(*kv_lead, *k.shape[-2:])
        v = v.expand(*kv_lead, *v.shape[-2:])
    q4, k4, v4 = _to_4d(q, lead), _to_4d(k, lead), _to_4d(v, lead)

    # causality the kernels express: a square problem (their top-left mask is then the
    # bottom-right one), or one query aligned to the end of the keys (a decoding step)
    mask = p.mask
    kernel_causal = isinstance(mask, Causal) and (
        (p.s_q == p.s_k and mask.offset in (None, 0)) or (p.s_q == 1 and mask.offset is None)
    )
    row_ok: Tensor | None = None
    if mask is None or kernel_causal:
        out = unmasked_sdpa(
            q4, k4, v4, score="dot", scale=p.scale, is_causal=kernel_causal, dropout_p=p.dropout_p
        )
    else:
        m = dense_mask(p)
        assert m is not None
        # keys and values no query sees are zeroed (numerics contract): the kernels add the
        # mask to the scores (NaN + -inf is NaN) and multiply weights by values (0 * NaN)
        unseen = _to_4d(unseen_keys(m).expand(*target[:-2], p.s_k, 1), lead)
        k4, v4 = hide_unseen(k4, unseen), hide_unseen(v4, unseen)
        row_ok = rows_with_keys(m)
        if m.dtype == torch.bool:
            m = m | ~row_ok  # let empty rows attend anywhere, then zero them below
        else:
            m = m.masked_fill(~row_ok, 0.0)
        m = m.expand(target)
        m = _to_4d(m, lead) if lead != 2 else m
        out = F.scaled_dot_product_attention(
            q4,
            k4,
            v4,
            attn_mask=m,
            dropout_p=p.dropout_p,
            scale=p.scale,
            enable_gqa=p.groups > 1,
        )
    out = out.reshape(*target[:-1], v.shape[-1])  # (..., s_q, d_v)
    if row_ok is not None:
        out = out.masked_fill(~row_ok, 0.0)
    if p.return_weights:
        return out, attention_weights(p)
    return out


register_backend(Backend("sdpa", _run_sdpa, _sdpa_why_not, auto_priority=10))


# ---------------------------------------------------------------------------------------
# the public function
# ---------------------------------------------------------------------------------------
def pick_backend(p: Problem, backend: BackendName = "auto") -> Backend:
    """Resolve ``backend=`` for a problem.

    Raises:
        ValueError: an unknown backend name, or a named backend that cannot give the answer.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        ranked = sorted(
            (b for b in _BACKENDS.values() if b.auto_priority is not None),
            key=lambda b: -b.auto_priority,  # type: ignore[operator]
        )
        for b in ranked:
            if b.why_not(p) is None:
                return b
        return _BACKENDS["math"]
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {available_backends()}, got {backend!r}")
    b = _BACKENDS[backend]
    reason = b.why_not(p)
    if reason is not None:
        raise ValueError(f"backend={backend!r} cannot run this problem: {reason}")
    return b


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: MaskLike = None,
    *,
    score: Score = "scaled_dot",
    scale: float | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    backend: BackendName = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Attention: :math:`\mathrm{softmax}(f(Q, K) \cdot \mathrm{scale} + M)\, V`.

    Args:
        q: queries ``(..., s_q, d)``.
        k: keys ``(..., s_k, d)``. With 3+ dims, ``k.shape[-3]`` may be a divisor of
            ``q.shape[-3]`` (grouped-query / multi-query heads).
        v: values ``(..., s_k, d_v)``.
        mask: ``None``; a bool tensor where ``True`` means *may attend* (the convention of
            ``F.scaled_dot_product_attention``), broadcastable to ``(..., s_q, s_k)``; a float
            additive bias; or a :mod:`qkv.masks` object.
        score: ``"scaled_dot"`` (Vaswani et al. 2017), ``"dot"`` (Luong et al. 2015), or a
            callable/module ``(q, k) -> (..., s_q, s_k)`` such as
            :class:`qkv.scores.Bilinear` or :class:`qkv.scores.Additive`.
        scale: score multiplier; default ``1/sqrt(d)`` for ``"scaled_dot"``, else 1.
        is_causal: add a causal mask (queries aligned to the end of the keys).
        dropout_p: dropout on the attention weights (applied whenever > 0).
        return_weights: also return the (pre-dropout) weights ``(..., s_q, s_k)``.
        backend: ``"auto"``, ``"math"``, ``"sdpa"`` or another registered backend.

    Returns:
        ``out`` of shape ``(..., s_q, d_v)``, or ``(out, weights)``. A query row with no key
        to attend to gives zeros in both.

    Raises:
        TypeError: wrong types or dtypes (the message names the argument).
        ValueError: mismatched shapes, a mask that does not broadcast, an unknown score or
            backend, or a backend that cannot run the problem.
    """
    p = make_problem(
        q,
        k,
        v,
        mask,
        score=score,
        scale=scale,
        is_causal=is_causal,
        dropout_p=dropout_p,
        return_weights=return_weights,
    )
    if backend == "auto" and p.return_weights:
        backend = "math"  # one pass gives both; a fused kernel would need a second
    return pick_backend(p, backend).run(p)
