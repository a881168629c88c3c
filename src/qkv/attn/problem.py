"""An attention problem: validated ``q``, ``k``, ``v``, mask and settings, and the dense
views every backend shares (:func:`make_problem`, :func:`dense_mask`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

import torch
from torch import Tensor

from qkv.attn.scores import default_scale
from qkv.masks import Causal, Mask

ScoreFn: TypeAlias = Callable[[Tensor, Tensor], Tensor]
Score: TypeAlias = Literal["dot", "scaled_dot"] | ScoreFn
MaskLike: TypeAlias = Tensor | Mask | None
BackendName: TypeAlias = str

#: dtypes attention computes in (float8 formats have no matmul or softmax on every device)
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype scores and softmax are computed in: float32 for float16/bfloat16 inputs
    (as the fused kernels accumulate; ``q k^T`` overflows float16 past 65504), else the
    input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


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
        if t.shape[-1] == 0:
            raise ValueError(
                f"{name} must have a non-empty feature dim (d > 0), got shape {_shape(t)}"
            )
    assert isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in DTYPES:
        names = ", ".join(str(t).removeprefix("torch.") for t in DTYPES)
        raise TypeError(f"q, k, v must be one of {names}, got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(
            f"q, k, v must be on one device, got q on {q.device}, k on {k.device}, v on {v.device}"
        )
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"k and v must agree on all dims but the last (..., s_k), got k {_shape(k)} "
            f"and v {_shape(v)}"
        )
    groups = 1
    qh = q.shape[-3] if q.ndim >= 3 else 1
    kh = k.shape[-3] if k.ndim >= 3 else 1
    if q.ndim >= 3 and k.ndim == q.ndim and qh > kh > 1 and qh % kh == 0:
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


def _check_scale(scale: object, score: Score, d: int) -> float:
    if scale is None:
        return default_scale(d) if score == "scaled_dot" else 1.0
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite positive number, got {scale!r}")
    return float(scale)


def _lazy_mask_shape(mask: Mask, target: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape :func:`dense_mask` gives a lazy mask in a problem of output shape
    ``target`` (``None`` where it cannot: a batch-specific mask without a batch dim)."""
    s_q, s_k = target[-2:]
    b = mask.batch_size
    if b is None:
        return (s_q, s_k)
    if len(target) >= 4:
        return (b, 1, s_q, s_k)
    if len(target) == 3:
        return (b, s_q, s_k)
    return (s_q, s_k) if b == 1 else None


def _check_mask(mask: object, target: tuple[int, ...], q: Tensor) -> Tensor | Mask | None:
    if mask is None:
        return mask
    if isinstance(mask, Mask):
        shape = _lazy_mask_shape(mask, target)
        if shape is None or not _broadcast_to(shape, target):
            raise ValueError(
                f"mask {mask!r} has batch size {mask.batch_size} but the problem's batch "
                f"shape is {target[:-2]} (q {_shape(q)}): "
                + ("give q a batch dimension" if shape is None else "they do not broadcast")
            )
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
    if not _broadcast_to(_shape(mask), target):
        raise ValueError(
            f"mask of shape {_shape(mask)} does not broadcast to (..., s_q, s_k) = {target}"
        )
    if mask.device != q.device:
        raise ValueError(f"mask must be on q's device {q.device}, got a mask on {mask.device}")
    if mask.is_floating_point() and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)
    return mask


def _broadcast_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """True when ``shape`` broadcasts to exactly ``target``."""
    try:
        return _broadcast(shape, target) == tuple(target)
    except RuntimeError:
        return False


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
    if m.batch_size == 0:  # an empty batch: no row to evaluate the mask on
        d = torch.zeros(0, 1, p.s_q, p.s_k, dtype=torch.bool, device=p.q.device)
    else:
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


def rows_with_keys(mask: Tensor) -> Tensor:
    """``(..., s_q, 1)`` bool: the rows of a dense bool mask or additive bias that leave at
    least one key to attend to (the others give zeros, never NaN)."""
    if mask.dtype == torch.bool:
        return mask.any(dim=-1, keepdim=True)
    return ~torch.isneginf(mask).all(dim=-1, keepdim=True)


def unseen_keys(mask: Tensor) -> Tensor:
    """``(..., s_k, 1)`` bool: the key positions of a dense bool mask or additive bias that
    no query may attend to (padding, for instance), in the mask's own leading dims."""
    if mask.ndim == 1:  # (s_k,): one row that every query shares
        mask = mask[None]
    if mask.dtype == torch.bool:
        return ~mask.any(dim=-2).unsqueeze(-1)
    return torch.isneginf(mask).all(dim=-2).unsqueeze(-1)


def hide_unseen(x: Tensor, unseen: Tensor) -> Tensor:
    """Keys or values ``x (..., s_k, e)`` with the positions no query sees set to 0.

    The numerics contract (docs/architecture.md): a masked-out position never influences
    the output or a gradient, whatever it holds. Masking the scores alone does not give
    that: a NaN key still reaches the query gradient and a NaN value the output through
    ``0 * NaN = NaN`` in the matrix products, so those positions are *selected* away
    (``torch.where``, never a product) before any product.

    Args:
        x: keys or values ``(..., s_k, e)``.
        unseen: :func:`unseen_keys` of the mask, broadcastable against ``x``'s leading
            dims, or with ``g`` times more heads than ``x`` (grouped-query attention).

    Returns:
        A tensor of ``x``'s shape: where ``x`` serves several mask rows (a broadcast dim,
        a group of query heads), a position is zeroed only when none of them sees it.
    """
    u = unseen
    while u.ndim > x.ndim:  # mask dims x broadcasts over: unseen by every one of them
        u = u.all(dim=0)
    u = u.reshape((1,) * (x.ndim - u.ndim) + tuple(u.shape))
    for dim in range(x.ndim - 2):
        n, m = x.shape[dim], u.shape[dim]
        if m == n or m == 1:
            continue
        if n == 1:
            u = u.all(dim=dim, keepdim=True)
        elif m % n == 0:  # (h,) mask heads over (h_kv,) kv heads: head j*g+i uses kv head j
            u = u.unflatten(dim, (n, m // n)).all(dim=dim + 1)
        else:  # pragma: no cover - shapes were checked when the problem was built
            return x
    return torch.where(u, torch.zeros((), dtype=x.dtype, device=x.device), x)


def connected_zeros(shape: tuple[int, ...], *inputs: Tensor) -> Tensor:
    """Zeros of ``shape`` in the first input's dtype and device, still in the inputs' graph
    (their gradients are zeros): the answer of a problem with no keys or no rows."""
    out = inputs[0].new_zeros(shape)
    for x in inputs:
        out = out + x.reshape(-1)[:0].sum()  # an empty sum: 0 even for inf inputs
    return out


def _expand_kv(p: Problem) -> tuple[Tensor, Tensor]:
    if p.groups == 1:
        return p.k, p.v
    # (..., h_kv, s_k, d) -> (..., h, s_k, d): kv head j serves query heads j*g .. j*g+g-1
    return (
        p.k.repeat_interleave(p.groups, dim=-3),
        p.v.repeat_interleave(p.groups, dim=-3),
    )


# ---------------------------------------------------------------------------------------
# building a problem
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

    Everything a backend could trip over is refused here, before any backend runs.

    Raises:
        TypeError: non-tensor q/k/v or a dtype other than float16/bfloat16/float32/float64,
            mismatched dtypes, a mask or scale of a wrong type.
        ValueError: mismatched shapes, an empty feature dim (``d = 0``), q/k/v or a tensor
            mask on different devices, a mask (tensor or lazy, e.g. a padding mask of
            another batch size) that does not broadcast to ``(..., s_q, s_k)``, a scale that
            is not finite and positive, a bad score or dropout.
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
    scale = _check_scale(scale, score, q.shape[-1])
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
        scale=scale,
        score="dot" if isinstance(score, str) else score,
        dropout_p=float(dropout_p),
        return_weights=bool(return_weights),
        groups=groups,
    )
