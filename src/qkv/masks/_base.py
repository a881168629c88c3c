"""The mask algebra shared by every mask family.

Convention (the one of ``F.scaled_dot_product_attention`` and FlexAttention): a boolean
``True`` means *query may attend to key*.

A :class:`Mask` is a lazy description. ``mask.mod(s_q, s_k)`` returns a FlexAttention-style
``mask_mod(b, h, q_idx, kv_idx) -> bool`` closure that works on broadcastable index tensors,
so one definition serves the dense materializer here and the block-sparse and FlexAttention
backends elsewhere.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from qkv.masks import _tiles
from qkv.masks._tiles import BlockBounds, MaskMod, check_len, register_bounds

if TYPE_CHECKING:  # pragma: no cover
    from torch.nn.attention.flex_attention import BlockMask


class Mask:
    """Base class of all lazy masks. Combine masks with ``&``, ``|`` and ``~``.

    Subclasses implement :meth:`mod`. The batch size of a mask, when it depends on the batch
    (padding, documents), is :attr:`batch_size`; otherwise it is ``None``.
    """

    #: Number of batch rows this mask is specific to, or ``None`` when batch-independent.
    batch_size: int | None = None

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        """Return ``mask_mod(b, h, q_idx, kv_idx) -> bool`` for a ``(s_q, s_k)`` problem."""
        raise NotImplementedError

    # -- algebra -------------------------------------------------------------------------
    def __and__(self, other: Mask) -> Mask:
        return And(self, _as_mask(other, "&"))

    def __or__(self, other: Mask) -> Mask:
        return Or(self, _as_mask(other, "|"))

    def __invert__(self) -> Mask:
        return Not(self)

    # -- materialization -----------------------------------------------------------------
    def to_dense(self, s_q: int, s_k: int, device: torch.device | str | None = None) -> Tensor:
        """Materialize as a boolean tensor (True = may attend).

        Returns:
            ``(s_q, s_k)`` for batch-independent masks, ``(b, 1, s_q, s_k)`` for masks that
            depend on the batch row (padding, documents).
        """
        check_len("s_q", s_q)
        check_len("s_k", s_k)
        device = device if device is not None else self._device()
        b = self.batch_size
        rows = b if b is not None else 1  # b = 0 (an empty batch) gives an empty mask
        bi = torch.arange(rows, device=device).view(-1, 1, 1, 1)
        hi = torch.zeros(1, 1, 1, 1, dtype=torch.long, device=device)
        qi = torch.arange(s_q, device=device).view(1, 1, -1, 1)
        ki = torch.arange(s_k, device=device).view(1, 1, 1, -1)
        dense = self.mod(s_q, s_k)(bi, hi, qi, ki)
        dense = torch.as_tensor(dense, device=device).expand(rows, 1, s_q, s_k)
        return dense if b is not None else dense[0, 0]

    def to_bias(
        self,
        s_q: int,
        s_k: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Materialize as an additive float bias: 0 where allowed, ``-inf`` elsewhere."""
        dense = self.to_dense(s_q, s_k, device)
        zero = torch.zeros((), dtype=dtype, device=dense.device)
        return torch.where(
            dense, zero, torch.tensor(float("-inf"), dtype=dtype, device=dense.device)
        )

    def block_bounds(
        self, s_q: int, s_k: int, block: int, device: torch.device | str | None = None
    ) -> BlockBounds:
        """Conservative per-tile summary ``(maybe, full)``, each ``(b_m, n_qb, n_kb)`` bool;
        see :func:`qkv.masks.block_bounds`."""
        return _tiles.block_bounds(self, s_q, s_k, block, device)

    def seen_keys(self, s_q: int, s_k: int, device: torch.device | str | None = None) -> Tensor:
        """``(b, s_k)`` bool (``b`` = 1 for batch-independent masks): keys at least one query
        may attend to; see :func:`qkv.masks._tiles.seen_keys`."""
        return _tiles.seen_keys(self, s_q, s_k, device)

    def to_block_layout(
        self,
        s_q: int,
        s_k: int,
        block: int = 128,
        *,
        exact: bool = True,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Tiles of the score matrix with at least one allowed pair.

        Returns:
            ``(n_qb, n_kb)`` bool, or ``(b, n_qb, n_kb)`` for batch-specific masks, with
            ``n_qb = ceil(s_q / block)``, ``n_kb = ceil(s_k / block)``. Computed from the
            family's analytic bounds where it has them (no dense mask), else by a chunked
            dense reduction; see :func:`qkv.masks.to_block_layout`.
        """
        return _tiles.to_block_layout(self, s_q, s_k, block, exact=exact, device=device)

    def to_block_mask(
        self, s_q: int, s_k: int, block: int = 128, device: torch.device | str | None = None
    ) -> BlockMask:
        """A FlexAttention ``BlockMask``; see :func:`qkv.masks.to_block_mask`."""
        return _tiles.to_block_mask(self, s_q, s_k, block, device)

    def draw(self, s_q: int, s_k: int, *, batch: int = 0, max_size: int = 64) -> str:
        """A small text picture of the mask; see :func:`qkv.masks.draw`."""
        return _tiles.draw(self, s_q, s_k, batch=batch, max_size=max_size)

    def _device(self) -> torch.device:
        return torch.device("cpu")

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"{type(self).__name__}()"


def _as_mask(other: object, op: str) -> Mask:
    if isinstance(other, Mask):
        return other
    if isinstance(other, Tensor) and other.dtype == torch.bool:
        return DenseMask(other)
    raise TypeError(f"cannot combine a qkv Mask with {type(other).__name__} using '{op}'")


def _merge_batch(*masks: Mask) -> int | None:
    sizes = {m.batch_size for m in masks if m.batch_size is not None}
    if len(sizes) > 1:
        raise ValueError(f"cannot combine masks with different batch sizes {sorted(sizes)}")
    return sizes.pop() if sizes else None


class _Combine(Mask):
    """Parts joined by one boolean operator (``&`` or ``|``)."""

    symbol: str
    op: Callable[[Tensor, Tensor], Tensor]

    def __init__(self, *parts: Mask) -> None:
        self.parts = parts
        self.batch_size = _merge_batch(*parts)

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        mods = [p.mod(s_q, s_k) for p in self.parts]
        op = type(self).op

        def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            out = mods[0](b, h, q, k)
            for m in mods[1:]:
                out = op(out, m(b, h, q, k))
            return out

        return mask_mod

    def _device(self) -> torch.device:
        return self.parts[0]._device()

    def __repr__(self) -> str:
        return "(" + f" {self.symbol} ".join(map(repr, self.parts)) + ")"


class And(_Combine):
    """Attend only where every part allows it."""

    symbol = "&"
    op = staticmethod(operator.and_)


class Or(_Combine):
    """Attend where any part allows it."""

    symbol = "|"
    op = staticmethod(operator.or_)


class Not(Mask):
    """Attend exactly where the inner mask forbids it."""

    def __init__(self, inner: Mask) -> None:
        self.inner = inner
        self.batch_size = inner.batch_size

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        inner = self.inner.mod(s_q, s_k)
        return lambda b, h, q, k: ~inner(b, h, q, k)

    def _device(self) -> torch.device:
        return self.inner._device()

    def __repr__(self) -> str:
        return f"~{self.inner!r}"


class DenseMask(Mask):
    """Wrap an explicit boolean tensor ``(s_q, s_k)`` or ``(b, 1|h, s_q, s_k)`` as a Mask."""

    def __init__(self, dense: Tensor) -> None:
        if not isinstance(dense, Tensor) or dense.dtype != torch.bool:
            raise TypeError(
                f"DenseMask needs a bool tensor, got {getattr(dense, 'dtype', type(dense))}"
            )
        if dense.ndim not in (2, 4):
            raise ValueError(
                f"DenseMask needs shape (s_q, s_k) or (b, h, s_q, s_k), got {tuple(dense.shape)}"
            )
        self.dense = dense
        self.batch_size = dense.shape[0] if dense.ndim == 4 and dense.shape[0] > 1 else None

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        d = self.dense
        if tuple(d.shape[-2:]) != (s_q, s_k):
            raise ValueError(f"DenseMask of shape {tuple(d.shape)} used for s_q={s_q}, s_k={s_k}")
        d4 = d if d.ndim == 4 else d[None, None]

        def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            bb = b if d4.shape[0] > 1 else torch.zeros_like(b)
            hh = h if d4.shape[1] > 1 else torch.zeros_like(h)
            return d4[bb, hh, q, k]

        return mask_mod

    def _device(self) -> torch.device:
        return self.dense.device

    def __repr__(self) -> str:
        return f"DenseMask(shape={tuple(self.dense.shape)})"


# ---------------------------------------------------------------------------------------
# block bounds of the algebra (each family registers its own in its file)
# ---------------------------------------------------------------------------------------
@register_bounds(And)
def _and_bounds(mask: Mask, s_q: int, s_k: int, block: int, device: torch.device) -> BlockBounds:
    assert isinstance(mask, And)
    parts = [_tiles.block_bounds(p, s_q, s_k, block, device) for p in mask.parts]
    maybe, full = parts[0]
    for m, f in parts[1:]:
        maybe, full = maybe & m, full & f
    return BlockBounds(maybe, full)


@register_bounds(Or)
def _or_bounds(mask: Mask, s_q: int, s_k: int, block: int, device: torch.device) -> BlockBounds:
    assert isinstance(mask, Or)
    parts = [_tiles.block_bounds(p, s_q, s_k, block, device) for p in mask.parts]
    maybe, full = parts[0]
    for m, f in parts[1:]:
        maybe, full = maybe | m, full | f
    return BlockBounds(maybe, full)


@register_bounds(Not)
def _not_bounds(mask: Mask, s_q: int, s_k: int, block: int, device: torch.device) -> BlockBounds:
    assert isinstance(mask, Not)
    maybe, full = _tiles.block_bounds(mask.inner, s_q, s_k, block, device)
    return BlockBounds(~full, ~maybe)


def is_structured(mask: Mask) -> bool:
    """True when the bounds of every part of ``mask`` come without a dense pass."""
    if isinstance(mask, (And, Or)) and _tiles.has_bounds(type(mask)):
        return all(is_structured(p) for p in mask.parts)
    if isinstance(mask, Not) and type(mask) is Not:
        return is_structured(mask.inner)
    return _tiles.has_bounds(type(mask))


def head_dependent(mask: Mask) -> bool:
    """True when some part of ``mask`` is a :class:`DenseMask` with more than one head."""
    if isinstance(mask, (And, Or)):
        return any(head_dependent(p) for p in mask.parts)
    if isinstance(mask, Not):
        return head_dependent(mask.inner)
    return isinstance(mask, DenseMask) and mask.dense.ndim == 4 and mask.dense.shape[1] > 1
