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
from typing import Literal, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor

from qkv.attention.scores import default_scale, dot
from qkv.masks import Causal, Mask

ScoreFn: TypeAlias = Callable[[Tensor, Tensor], Tensor]
Score: TypeAlias = Literal["dot", "scaled_dot"] | ScoreFn
MaskLike: TypeAlias = Tensor | Mask | None
BackendName: TypeAlias = str


@dataclass
class Problem:
    """A validated attention problem, as handed to a backend.

    Attributes:
        q: ``(..., h, s_q, d)`` queries.
        k: ``(..., h_kv, s_k, d)`` keys (``h_kv`` divides ``h`` for grouped heads).
        v: ``(..., h_kv, s_k, d_v)`` values.
        mask: ``None``, a lazy :class:`~qkv.masks.Mask` (causal already folded in), a bool
            tensor (True = may attend) or a float additive bias, broadcastable to
            ``(..., h, s_q, s_k)``.
        scale: multiplier applied to the scores.
        score: ``"dot"`` or a callable ``(q, k) -> scores``.
        dropout_p: dropout probability on the attention weights.
        return_weights: whether the caller wants the weights.
        groups: ``h // h_kv`` (1 without grouped heads).
    """

    q: Tensor
    k: Tensor
    v: Tensor
    mask: Tensor | Mask | None
    scale: float
    score: str | ScoreFn
    dropout_p: float
    return_weights: bool
    groups: int

    @property
    def s_q(self) -> int:
        return self.q.shape[-2]

    @property
    def s_k(self) -> int:
        return self.k.shape[-2]

    @property
    def batch_shape(self) -> torch.Size:
        """Broadcast leading shape of the output, ``(...)`` before ``(s_q, d_v)``."""
        return self.q.shape[:-2]


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
# validation
# ---------------------------------------------------------------------------------------
def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy broadcasting of two shapes in plain Python (``torch.broadcast_shapes`` goes
    through symbolic-shape code that costs ~0.1 ms a call: too much per decoding step).

    Raises:
        RuntimeError: shapes that do not broadcast, as ``torch.broadcast_shapes`` does.
    """
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise RuntimeError(f"shapes {a} and {b} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)


def _check_qkv(q: object, k: object, v: object) -> tuple[Tensor, Tensor, Tensor, int]:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.ndim < 2:
            raise ValueError(f"{name} must have shape (..., s, d), got {_shape(t)}")
    assert isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"k and v must agree on all dims but the last (..., s_k), got k {_shape(k)} "
            f"and v {_shape(v)}"
        )
    groups = 1
    qh = q.shape[-3] if q.ndim >= 3 else 1
    kh = k.shape[-3] if k.ndim >= 3 else 1
    if q.ndim >= 3 and k.ndim == q.ndim and qh != kh and kh > 1 and qh % kh == 0:
        groups = qh // kh  # grouped-query attention: head i reads kv head i // groups
    lead_q = list(q.shape[:-2])
    lead_k = list(k.shape[:-2])
    if groups > 1:
        lead_k[-1] = lead_q[-1]
    try:
        _broadcast(tuple(lead_q), tuple(lead_k))
    except RuntimeError:
        raise ValueError(
            f"q {_shape(q)} and k {_shape(k)} have leading (batch/head) dims that do not "
            f"broadcast; for grouped heads the key heads must divide the query heads"
        ) from None
    return q, k, v, groups


def _check_mask(mask: object, target: tuple[int, ...], q: Tensor) -> Tensor | Mask | None:
    if mask is None or isinstance(mask, Mask):
        return mask
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"mask must be a bool tensor, a float tensor, a qkv.masks.Mask or None, "
            f"got {type(mask).__name__}"
        )
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(
            f"mask must be bool (True = may attend) or a float additive bias, got dtype "
            f"{mask.dtype}; convert integer masks with mask.bool()"
        )
    try:
        ok = _broadcast(_shape(mask), target) == tuple(target)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"mask of shape {_shape(mask)} does not broadcast to (..., s_q, s_k) = {target}"
        )
    if mask.is_floating_point() and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)
    return mask


def _target_shape(q: Tensor, k: Tensor, groups: int) -> tuple[int, ...]:
    lead_k = list(k.shape[:-2])
    if groups > 1:
        lead_k[-1] = q.shape[-3]
    lead = _broadcast(tuple(q.shape[:-2]), tuple(lead_k))
    return (*lead, q.shape[-2], k.shape[-2])


# ---------------------------------------------------------------------------------------
# dense materialization shared by the dense backends
# ---------------------------------------------------------------------------------------
def dense_mask(p: Problem) -> Tensor | None:
    """The problem's mask as a dense bool or float tensor aligned to ``(..., s_q, s_k)``."""
    m = p.mask
    if not isinstance(m, Mask):
        return m
    d = m.to_dense(p.s_q, p.s_k, device=p.q.device)
    nd = len(p.batch_shape) + 2
    if d.ndim == 4 and nd < 4:
        if nd == 3 and d.shape[1] == 1:
            d = d[:, 0]
        elif nd == 2 and d.shape[0] == 1:
            d = d[0, 0]
        else:
            raise ValueError(
                f"mask {m!r} is batch-specific ({d.shape[0]} rows) but q has shape "
                f"{_shape(p.q)}: give q a batch dimension"
            )
    return d


def _expand_kv(p: Problem) -> tuple[Tensor, Tensor]:
    if p.groups == 1:
        return p.k, p.v
    # (..., h_kv, s_k, d) -> (..., h, s_k, d): kv head j serves query heads j*g .. j*g+g-1
    return (
        p.k.repeat_interleave(p.groups, dim=-3),
        p.v.repeat_interleave(p.groups, dim=-3),
    )


def _masked_scores(p: Problem, k: Tensor) -> Tensor:
    score = p.score
    s = dot(p.q, k) if score == "dot" else score(p.q, k)  # type: ignore[operator]
    if not isinstance(s, Tensor) or s.shape[-2:] != (p.s_q, p.s_k):
        got = _shape(s) if isinstance(s, Tensor) else type(s).__name__
        raise ValueError(
            f"score function must return (..., s_q, s_k) = (..., {p.s_q}, {p.s_k}), got {got}"
        )
    if p.scale != 1.0:
        s = s * p.scale
    m = dense_mask(p)
    if m is None:
        return s
    if m.dtype == torch.bool:
        return s.masked_fill(~m, float("-inf"))
    return s + m


def safe_softmax(scores: Tensor) -> Tensor:
    """Softmax over the last dim that gives all-zero rows (and zero gradients) where every
    score is ``-inf``, instead of NaN. Computed in float32 for half inputs."""
    x = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    m = x.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m).detach()
    e = torch.exp(x - m)
    z = e.sum(dim=-1, keepdim=True)
    # z == 0 only for rows that see nothing; dividing those by 1 keeps 0 and a finite grad
    w = e / torch.where(z > 0, z, torch.ones_like(z))
    return w.to(scores.dtype)


def attention_weights(p: Problem) -> Tensor:
    """The attention weights ``softmax(f(q, k) * scale + mask)`` of a problem (no dropout).

    Without gradients and with a dot-product score the rows are computed in chunks
    (:func:`_weights_by_row_chunks`); otherwise in one piece by the reference.

    Returns:
        ``(..., h, s_q, s_k)`` weights; rows with nothing to attend to are all zero.
    """
    k, _ = _expand_kv(p)
    wants_grad = torch.is_grad_enabled() and (
        p.q.requires_grad
        or k.requires_grad
        or (isinstance(p.mask, Tensor) and p.mask.requires_grad)
    )
    if p.score == "dot" and not wants_grad:
        return _weights_by_row_chunks(p, k)
    return safe_softmax(_masked_scores(p, k))


#: scores held at once by :func:`_weights_by_row_chunks` (elements): 4 MiB in float32, so a
#: chunk's scores stay in cache from the matmul through the softmax
_CHUNK_ELEMENTS = 1 << 20


def _weights_by_row_chunks(p: Problem, k: Tensor) -> Tensor:
    """:func:`attention_weights` for a dot-product score without gradients, a few query
    rows at a time: the scores of a chunk are scaled, masked and normalized while in
    cache, and written once into the result. With a causal mask a chunk computes only
    the keys its last row can see (half the work of a square causal problem) and the
    rest of its rows is zero. Same values as the reference up to float rounding (the
    matmul is blocked differently); the reference stays the readable definition.
    """
    q, m = p.q, dense_mask(p) if not isinstance(p.mask, Causal) else None
    target = _target_shape(q, k, 1)
    lead, s_q, s_k = target[:-2], p.s_q, p.s_k
    causal_off = None
    if isinstance(p.mask, Causal):
        causal_off = s_k - s_q if p.mask.offset is None else p.mask.offset
    half = q.dtype in (torch.float16, torch.bfloat16)
    out = torch.empty(target, dtype=q.dtype, device=q.device)  # (..., s_q, s_k)
    row_ok = None  # (..., s_q, 1): rows with at least one key, for explicit masks
    if m is not None:
        row_ok = (
            m.any(-1, keepdim=True)
            if m.dtype == torch.bool
            else ~torch.isneginf(m).all(-1, keepdim=True)
        )
    lead_n = 1
    for n in lead:
        lead_n *= n
    rows = max(16, min(s_q, _CHUNK_ELEMENTS // max(1, lead_n * s_k)))
    kt = k.transpose(-1, -2)  # (..., d, s_k)
    for r0 in range(0, s_q, rows):
        r1 = min(s_q, r0 + rows)
        k_end = s_k if causal_off is None else max(0, min(s_k, r1 + causal_off))
        if k_end < s_k:
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
            mc = m[..., r0:r1, :] if m.shape[-2] > 1 else m
            mc = mc[..., :k_end]
            s = s.masked_fill(~mc, float("-inf")) if mc.dtype == torch.bool else s + mc
        w = torch.softmax(s, -1, dtype=torch.float32) if half else torch.softmax(s, -1)
        if causal_off is not None and r0 + causal_off < 0:
            w[..., : min(r1, -causal_off) - r0, :] = 0.0  # rows before the first key
        elif row_ok is not None:
            ok = row_ok[..., r0:r1, :] if row_ok.shape[-2] > 1 else row_ok
            w = w.masked_fill(~ok, 0.0)  # all -inf rows: NaN from softmax -> 0
        out[..., r0:r1, :k_end] = w
    return out


# ---------------------------------------------------------------------------------------
# the math backend: the reference
# ---------------------------------------------------------------------------------------
def _run_math(p: Problem) -> Tensor | tuple[Tensor, Tensor]:
    k, v = _expand_kv(p)
    weights = safe_softmax(_masked_scores(p, k))  # (..., s_q, s_k)
    w = F.dropout(weights, p=p.dropout_p, training=True) if p.dropout_p > 0 else weights
    out = w @ v  # (..., s_q, d_v)
    return (out, weights) if p.return_weights else out


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


def _run_sdpa(p: Problem) -> Tensor | tuple[Tensor, Tensor]:
    target = _target_shape(p.q, p.k, p.groups)
    lead = len(target) - 2
    q, k, v = p.q, p.k, p.v
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

    is_causal = False
    m: Tensor | None
    if isinstance(p.mask, Causal) and p.mask.offset in (None, 0) and p.s_q == p.s_k:
        m, is_causal = None, True  # the kernels' own (top-left) causal path
    elif isinstance(p.mask, Causal) and p.mask.offset is None and p.s_q == 1:
        m = None  # one query aligned to the end sees every key: a decoding step
    else:
        m = dense_mask(p)
    row_ok: Tensor | None = None
    if m is not None:
        if m.dtype == torch.bool:
            row_ok = m.any(dim=-1, keepdim=True)
            m = m | ~row_ok  # let empty rows attend anywhere, then zero them below
        else:
            row_ok = ~torch.isneginf(m).all(dim=-1, keepdim=True)
            m = m.masked_fill(~row_ok, 0.0)
        m = m.expand(target)
        m = _to_4d(m, lead) if lead != 2 else m
    out = F.scaled_dot_product_attention(
        q4,
        k4,
        v4,
        attn_mask=m,
        dropout_p=p.dropout_p,
        is_causal=is_causal,
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
    validation or a :class:`Problem`: the shortcut :class:`~qkv.MultiHeadAttention` takes
    when there is nothing to mask, where per-op overhead dominates a decoding step.

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


# ---------------------------------------------------------------------------------------
# the public function
# ---------------------------------------------------------------------------------------
def _fold_causal(mask: Tensor | Mask | None, is_causal: bool) -> Tensor | Mask | None:
    if not is_causal:
        return mask
    if mask is None:
        return Causal()
    if isinstance(mask, Mask):
        return Causal() & mask
    return mask  # tensors are combined with the causal mask in make_problem


def make_problem(
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
) -> Problem:
    """Validate the arguments of :func:`attention` and build a :class:`Problem`.

    Raises:
        TypeError: non-tensor or non-float q/k/v, mismatched dtypes, a mask of a wrong type.
        ValueError: mismatched shapes, a mask that does not broadcast, bad score or dropout.
    """
    q, k, v, groups = _check_qkv(q, k, v)
    if isinstance(score, str):
        if score not in ("dot", "scaled_dot"):
            raise ValueError(
                f"score must be 'dot', 'scaled_dot' or a callable (q, k) -> scores, got {score!r}"
            )
        if q.shape[-1] != k.shape[-1]:
            raise ValueError(
                f"score={score!r} needs q and k with the same feature size d, got q "
                f"{_shape(q)} and k {_shape(k)}"
            )
    elif not callable(score):
        raise TypeError(f"score must be a string or a callable, got {type(score).__name__}")
    if scale is None:
        scale = default_scale(q.shape[-1]) if score == "scaled_dot" else 1.0
    elif not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p!r}")
    target = _target_shape(q, k, groups)
    m = _check_mask(mask, target, q)
    if is_causal and isinstance(m, Tensor):
        c = Causal().to_dense(q.shape[-2], k.shape[-2], device=q.device)
        m = (m & c) if m.dtype == torch.bool else m.masked_fill(~c, float("-inf"))
    m = _fold_causal(m, is_causal)
    return Problem(
        q=q,
        k=k,
        v=v,
        mask=m,
        scale=float(scale),
        score="dot" if isinstance(score, str) else score,
        dropout_p=float(dropout_p),
        return_weights=bool(return_weights),
        groups=groups,
    )


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
