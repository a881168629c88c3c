"""Tiles of the score matrix: the block bounds every mask family registers, and the
materializers built on them (block layouts, FlexAttention ``BlockMask`` objects, a text
picture). Nothing here imports a mask family: each family registers its own bounds with
:func:`register_bounds` in its own file, so the families depend on this module and never the
other way round.

The block-sparse kernels need to know, for a tiling of the ``(s_q, s_k)`` score matrix into
``block x block`` tiles, which tiles can hold an allowed pair and which are allowed
everywhere. :func:`block_bounds` answers both, *conservatively*:

* ``maybe[b, i, j]`` is True whenever tile ``(i, j)`` holds at least one allowed pair
  (it may also be True for an empty tile: a superset);
* ``full[b, i, j]`` is True only when every in-range pair of the tile is allowed
  (it may be False for a full tile: a subset).

Both are exact for every built-in family; combinations keep soundness through the rules
``And: (m1 & m2, f1 & f2)``, ``Or: (m1 | m2, f1 | f2)``, ``Not: (~f, ~m)``. A family
registers its own bounds with :func:`register_bounds` (exact type match, so a user subclass
that overrides ``mod`` falls back to the always-correct dense reduction).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from torch.nn.attention.flex_attention import BlockMask

MaskMod: TypeAlias = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


class TiledMask(Protocol):
    """What the materializers read of a mask (:class:`qkv.masks.Mask` has it all)."""

    batch_size: int | None

    def mod(self, s_q: int, s_k: int) -> MaskMod: ...

    def to_dense(self, s_q: int, s_k: int, device: torch.device | str | None = None) -> Tensor: ...

    def _device(self) -> torch.device: ...


def check_len(name: str, value: int) -> None:
    """Validate a sequence length: a non-negative int."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


Device = torch.device | str | None

#: Upper bound on the elements of one dense chunk evaluated by the fallback reductions.
DENSE_CHUNK: int = 1 << 24


class BlockBounds(NamedTuple):
    """Conservative per-tile summary of a mask (see the module docstring).

    Attributes:
        maybe: ``(b_m, n_qb, n_kb)`` bool, a superset of the tiles with an allowed pair.
        full: ``(b_m, n_qb, n_kb)`` bool, a subset of the tiles allowed everywhere.
            ``b_m`` is the mask's batch size, or 1 for batch-independent masks.
    """

    maybe: Tensor
    full: Tensor


BoundsFn = Callable[[Any, int, int, int, torch.device], BlockBounds]
_BOUNDS: dict[type, BoundsFn] = {}


def register_bounds(cls: type) -> Callable[[BoundsFn], BoundsFn]:
    """Decorator: register the block-bounds function of one mask class (exact type)."""

    def deco(fn: BoundsFn) -> BoundsFn:
        _BOUNDS[cls] = fn
        return fn

    return deco


def has_bounds(cls: type) -> bool:
    """True when mask class ``cls`` (exact type) registered its own bounds."""
    return cls in _BOUNDS


def check_block(block: object, name: str = "block") -> int:
    """Validate a block size: a positive int."""
    if not isinstance(block, int) or isinstance(block, bool) or block <= 0:
        raise ValueError(f"{name} must be a positive int, got {block!r}")
    return block


def n_blocks(s: int, block: int) -> int:
    """Number of tiles of size ``block`` covering ``s`` positions (the last may be partial)."""
    return -(-s // block)


def block_spans(s: int, block: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """First and last in-range position of every tile: two ``(n_blocks,)`` long tensors."""
    lo = torch.arange(n_blocks(s, block), device=device) * block
    hi = torch.clamp(lo + block, max=s) - 1
    return lo, hi


def relative_span(
    s_q: int, s_k: int, block: int, device: torch.device, offset: int | None = None
) -> tuple[Tensor, Tensor]:
    """Range of ``r = (q + offset) - k`` over every tile, as two ``(n_qb, n_kb)`` tensors.

    ``offset`` defaults to ``s_k - s_q`` (queries aligned to the end of the keys). Every
    integer between the two bounds occurs in the tile, which makes bounds of masks that
    depend only on ``r`` (causal, sliding windows) exact.
    """
    off = s_k - s_q if offset is None else offset
    q_lo, q_hi = block_spans(s_q, block, device)
    k_lo, k_hi = block_spans(s_k, block, device)
    r_min = (q_lo + off)[:, None] - k_hi[None, :]
    r_max = (q_hi + off)[:, None] - k_lo[None, :]
    return r_min, r_max


def interval_bounds(r_min: Tensor, r_max: Tensor, lo: int, hi: int, step: int = 1) -> BlockBounds:
    """Bounds of the mask ``lo <= r <= hi and r % step == 0`` from the range of ``r`` per tile.

    Returns:
        :class:`BlockBounds` with a leading batch dim of 1.
    """
    a = torch.clamp(r_min, min=lo)
    b = torch.clamp(r_max, max=hi)
    first = torch.div(a + step - 1, step, rounding_mode="floor") * step  # first multiple >= a
    maybe = first <= b
    full = (r_min >= lo) & (r_max <= hi)
    if step > 1:  # several r in one tile cannot all be multiples of step > 1
        full = full & (r_min == r_max) & (r_min % step == 0)
    return BlockBounds(maybe[None], full[None])


def vector_bounds(flags: Tensor, s: int, block: int) -> tuple[Tensor, Tensor]:
    """Per-tile ``any`` and ``all`` of a ``(..., s)`` bool vector: two ``(..., n_blocks)``."""
    n = n_blocks(s, block)
    pad = n * block - s
    lead = flags.shape[:-1]  # may hold a 0 (an empty batch): the tile count is explicit
    any_ = torch.nn.functional.pad(flags, (0, pad), value=False).view(*lead, n, block).any(-1)
    all_ = torch.nn.functional.pad(flags, (0, pad), value=True).view(*lead, n, block).all(-1)
    return any_, all_


def value_range(values: Tensor, s: int, block: int) -> tuple[Tensor, Tensor]:
    """Per-tile min and max of a ``(..., s)`` integer vector: two ``(..., n_blocks)``."""
    lead = values.shape[:-1]
    if s == 0:
        empty = values.new_zeros(*lead, 0)
        return empty, empty
    n = n_blocks(s, block)
    pad = n * block - s
    # repeating the last value keeps min and max of the partial last tile unchanged
    v = torch.cat([values, values[..., -1:].expand(*lead, pad)], -1) if pad else values
    v = v.reshape(*lead, n, block)  # n explicit: lead may hold a 0 (an empty batch)
    return v.amin(-1), v.amax(-1)


class DeviceLocal:
    """A tensor copied lazily (once) to each device that reads it, so a mask built from
    Python lists (a table of tiles, global positions) works with indices on any device."""

    def __init__(self, tensor: Tensor) -> None:
        self._copies = {tensor.device: tensor}
        self._source = tensor

    def on(self, device: torch.device) -> Tensor:
        """The tensor on ``device``."""
        t = self._copies.get(device)
        if t is None:
            t = self._copies[device] = self._source.to(device)
        return t


# ---------------------------------------------------------------------------------------
# evaluation of the element mask on listed tiles and the dense fallback
# ---------------------------------------------------------------------------------------
def eval_blocks(
    mod: MaskMod,
    s_q: int,
    s_k: int,
    block: int,
    b_idx: Tensor,
    qb: Tensor,
    kb: Tensor,
) -> Tensor:
    """Evaluate ``mod`` on a list of tiles.

    Args:
        mod: a ``mask_mod`` for an ``(s_q, s_k)`` problem.
        s_q: query length.
        s_k: key length.
        block: tile size.
        b_idx: ``(P,)`` batch row of each tile (0 for batch-independent masks).
        qb: ``(P,)`` query tile index.
        kb: ``(P,)`` key tile index.

    Returns:
        ``(P, block, block)`` bool; positions beyond ``s_q`` or ``s_k`` are False.
    """
    ar = torch.arange(block, device=qb.device)
    q = qb[:, None] * block + ar  # (P, block)
    k = kb[:, None] * block + ar  # (P, block)
    ok = (q < s_q)[:, :, None] & (k < s_k)[:, None, :]  # (P, block, block)
    h = torch.zeros(1, 1, 1, dtype=torch.long, device=qb.device)
    out = mod(
        b_idx[:, None, None],
        h,
        q.clamp(max=max(s_q - 1, 0))[:, :, None],
        k.clamp(max=max(s_k - 1, 0))[:, None, :],
    )
    return torch.as_tensor(out, device=qb.device).expand(ok.shape) & ok


def dense_block_bounds(
    mask: TiledMask, s_q: int, s_k: int, block: int, device: torch.device
) -> BlockBounds:
    """Exact bounds by evaluating the whole mask, ``DENSE_CHUNK`` elements at a time.

    Costs ``O(s_q * s_k)`` time but only a chunk of memory; the fallback for masks with no
    registered bounds.
    """
    mod = mask.mod(s_q, s_k)
    bm = mask.batch_size if mask.batch_size is not None else 1
    n_qb, n_kb = n_blocks(s_q, block), n_blocks(s_k, block)
    maybe = torch.zeros(bm, n_qb, n_kb, dtype=torch.bool, device=device)
    full = torch.zeros(bm, n_qb, n_kb, dtype=torch.bool, device=device)
    if n_qb == 0 or n_kb == 0 or bm == 0:
        return BlockBounds(maybe, full)
    bi = torch.arange(bm, device=device).view(-1, 1, 1, 1)
    hi = torch.zeros(1, 1, 1, 1, dtype=torch.long, device=device)
    ki = torch.arange(s_k, device=device).view(1, 1, 1, -1)
    per = max(1, DENSE_CHUNK // max(1, bm * block * s_k))  # query tiles per chunk
    pad_k = n_kb * block - s_k
    for t0 in range(0, n_qb, per):
        t1 = min(t0 + per, n_qb)
        q0, q1 = t0 * block, min(t1 * block, s_q)
        qi = torch.arange(q0, q1, device=device).view(1, 1, -1, 1)
        d = torch.as_tensor(mod(bi, hi, qi, ki), device=device).expand(bm, 1, q1 - q0, s_k)
        d = d[:, 0]  # (bm, rows, s_k)
        pad_q = (t1 - t0) * block - (q1 - q0)
        pad = torch.nn.functional.pad
        lo = pad(d, (0, pad_k, 0, pad_q), value=False).view(bm, t1 - t0, block, n_kb, block)
        up = pad(d, (0, pad_k, 0, pad_q), value=True).view(bm, t1 - t0, block, n_kb, block)
        maybe[:, t0:t1] = lo.any(4).any(2)
        full[:, t0:t1] = up.all(4).all(2)
    return BlockBounds(maybe, full)


def seen_keys(mask: TiledMask, s_q: int, s_k: int, device: Device = None) -> Tensor:
    """``(b_m, s_k)`` bool: the keys that at least one query may attend to (``b_m`` is the
    mask's batch size, or 1); the others are masked out for every query.

    Evaluated ``DENSE_CHUNK`` elements at a time (``O(s_q * s_k)`` work, a chunk of memory),
    so that a backend without a dense mask can still select away the keys and values no
    query sees (the numerics contract, docs/architecture.md).
    """
    check_len("s_q", s_q)
    check_len("s_k", s_k)
    device = torch.device(device) if device is not None else mask._device()
    bm = mask.batch_size if mask.batch_size is not None else 1
    seen = torch.zeros(bm, s_k, dtype=torch.bool, device=device)
    if bm == 0 or s_q == 0 or s_k == 0:
        return seen
    mod = mask.mod(s_q, s_k)
    bi = torch.arange(bm, device=device).view(-1, 1, 1, 1)
    hi = torch.zeros(1, 1, 1, 1, dtype=torch.long, device=device)
    ki = torch.arange(s_k, device=device).view(1, 1, 1, -1)
    rows = max(1, DENSE_CHUNK // max(1, bm * s_k))
    for q0 in range(0, s_q, rows):
        qi = torch.arange(q0, min(s_q, q0 + rows), device=device).view(1, 1, -1, 1)
        d = torch.as_tensor(mod(bi, hi, qi, ki), device=device)
        seen |= d.expand(bm, 1, qi.shape[2], s_k).any(dim=2)[:, 0]
    return seen


def block_bounds(
    mask: TiledMask, s_q: int, s_k: int, block: int, device: Device = None
) -> BlockBounds:
    """Conservative tile summary of ``mask`` for an ``(s_q, s_k)`` problem.

    Uses the family's registered bounds (no dense materialization) when there is one, and
    :func:`dense_block_bounds` otherwise.

    Raises:
        ValueError: a bad length or block size.
    """
    check_len("s_q", s_q)
    check_len("s_k", s_k)
    check_block(block)
    dev = torch.device(device) if device is not None else mask._device()
    fn = _BOUNDS.get(type(mask))
    if fn is None:
        return dense_block_bounds(mask, s_q, s_k, block, dev)
    return fn(mask, s_q, s_k, block, dev)


# ---------------------------------------------------------------------------------------
# public materializers
# ---------------------------------------------------------------------------------------
def to_block_layout(
    mask: TiledMask,
    s_q: int,
    s_k: int,
    block: int,
    *,
    exact: bool = True,
    device: Device = None,
) -> Tensor:
    """Which ``block x block`` tiles of the score matrix hold at least one allowed pair.

    Args:
        mask: the mask.
        s_q: query length.
        s_k: key length.
        block: tile size; the last tile of each axis may be partial.
        exact: refine the conservative bounds by evaluating the mask on the undecided
            tiles only (those that may hold a pair but are not known full); with
            ``False`` a True tile may turn out empty for ``&``-compositions.
        device: where to compute.

    Returns:
        ``(n_qb, n_kb)`` bool for batch-independent masks, ``(b, n_qb, n_kb)`` otherwise,
        with ``n_qb = ceil(s_q / block)`` and ``n_kb = ceil(s_k / block)``.
    """
    maybe, full = block_bounds(mask, s_q, s_k, block, device)
    layout = maybe.clone()
    if exact:
        undecided = (maybe & ~full).nonzero()  # (P, 3)
        if len(undecided):
            mod = mask.mod(s_q, s_k)
            per = max(1, DENSE_CHUNK // (block * block))
            for c0 in range(0, len(undecided), per):
                b, qb, kb = undecided[c0 : c0 + per].unbind(1)
                hit = eval_blocks(mod, s_q, s_k, block, b, qb, kb).flatten(1).any(1)
                layout[b, qb, kb] = hit
    return layout if mask.batch_size is not None else layout[0]


def flex_mask_mod(mask: TiledMask, s_q: int, s_k: int) -> MaskMod:
    """``mask.mod(s_q, s_k)`` made safe for FlexAttention, which may call it on positions of
    a partial last tile beyond ``s_q``/``s_k``: indices are clamped (so tensor lookups stay
    in range) and out-of-range pairs are disallowed."""
    mod = mask.mod(s_q, s_k)
    q_max, k_max = max(s_q - 1, 0), max(s_k - 1, 0)

    def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
        inside = (q <= q_max) & (k <= k_max)
        return mod(b, h, q.clamp(max=q_max), k.clamp(max=k_max)) & inside

    return mask_mod


def _kv_lists(tiles: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, n_qb, n_kb)`` bool -> FlexAttention's ``(B, 1, n_qb)`` counts and
    ``(B, 1, n_qb, n_kb)`` indices (listed tiles first, in increasing order)."""
    counts = tiles.sum(-1, dtype=torch.int32)
    order = torch.argsort((~tiles).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return counts[:, None].contiguous(), order[:, None].contiguous()


def to_block_mask(
    mask: TiledMask, s_q: int, s_k: int, block: int = 128, device: Device = None
) -> BlockMask:
    """Build a FlexAttention ``BlockMask`` from the mask's block bounds.

    Equivalent to ``torch.nn.attention.flex_attention.create_block_mask(mask_mod, B, None,
    s_q, s_k, BLOCK_SIZE=block)`` (same full and partial tiles), but built from the
    family's analytic bounds, without evaluating the mask on every pair.
    """
    from torch.nn.attention.flex_attention import BlockMask

    maybe, full = block_bounds(mask, s_q, s_k, block, device)
    # create_block_mask counts a tile that runs past s_q or s_k as partial; so do we
    q_lo, _ = block_spans(s_q, block, maybe.device)
    k_lo, _ = block_spans(s_k, block, maybe.device)
    complete = ((q_lo + block) <= s_q)[:, None] & ((k_lo + block) <= s_k)[None, :]
    full = full & complete
    partial = maybe & ~full
    kv_num, kv_idx = _kv_lists(partial)
    full_num, full_idx = _kv_lists(full)
    return BlockMask.from_kv_blocks(
        kv_num,
        kv_idx,
        full_num,
        full_idx,
        BLOCK_SIZE=block,
        mask_mod=flex_mask_mod(mask, s_q, s_k),
        seq_lengths=(s_q, s_k),
    )


def draw(mask: TiledMask, s_q: int, s_k: int, *, batch: int = 0, max_size: int = 64) -> str:
    """A small text picture of the mask (rows are queries, columns keys).

    Up to ``max_size`` positions per axis each cell is one pair: ``█`` may attend, ``·`` may
    not. Longer axes are shown in tiles of ``ceil(max(s_q, s_k) / max_size)`` positions:
    ``█`` every pair allowed, ``▒`` some, ``·`` none.

    Args:
        mask: the mask.
        s_q: query length.
        s_k: key length.
        batch: the batch row to draw, for batch-specific masks.
        max_size: the most cells per axis.
    """
    check_block(max_size, "max_size")
    bm = mask.batch_size if mask.batch_size is not None else 1
    if not 0 <= batch < bm:
        raise ValueError(f"batch must be in [0, {bm}) for {mask!r}, got {batch}")
    if max(s_q, s_k) <= max_size:
        d = mask.to_dense(s_q, s_k)
        d = d[batch, 0] if d.ndim == 4 else d
        rows = ["".join("█" if x else "·" for x in row) for row in d.tolist()]
        head = f"{mask!r}  (s_q={s_q}, s_k={s_k}; █ attend, · masked)"
    else:
        block = n_blocks(max(s_q, s_k), max_size)
        full = block_bounds(mask, s_q, s_k, block).full
        some = to_block_layout(mask, s_q, s_k, block)
        some = some[batch] if some.ndim == 3 else some
        full_b = full[min(batch, full.shape[0] - 1)] & some
        rows = [
            "".join("█" if f else ("▒" if s else "·") for s, f in zip(srow, frow))
            for srow, frow in zip(some.tolist(), full_b.tolist())
        ]
        head = (
            f"{mask!r}  (s_q={s_q}, s_k={s_k}; one cell = {block}x{block} pairs: █ all, "
            f"▒ some, · none)"
        )
    return "\n".join([head, *rows])
