"""Block-sparse attention in eager PyTorch: compute only the tiles the mask needs.

The ``(s_q, s_k)`` score matrix is cut into ``BLOCK_SIZE x BLOCK_SIZE`` tiles. From the
mask's block bounds (:meth:`qkv.masks.Mask.block_bounds`, analytic for every built-in
family, no dense mask) each query tile gets the list of key tiles that may hold an allowed
pair. Query tiles with a similar number of key tiles are grouped and padded to the group's
largest count, so each group runs as a few large batched matmuls over gathered key/value
tiles. The exact element mask is evaluated only on *partial* tiles (tiles known to be
fully allowed skip it). Softmax statistics follow FlashAttention (Dao et al. 2022): the
forward keeps the output and the row log-sum-exp, the backward recomputes the scores tile
by tile, so memory is ``O(s_q * keys per query)`` per chunk, never ``O(s_q * s_k)``.

Lengths that are not multiples of the tile size are padded (zeros) and the padding is
masked out, so any ``s_q``, ``s_k`` work. Rows that see no key give zeros and zero
gradients, like every backend.

Registered twice: ``"blocksparse"`` (explicit use; refuses only what it cannot compute
exactly) and ``"blocksparse-auto"``, the entry ``backend="auto"`` consults, which also
refuses problems where it would not beat ``"sdpa"`` (see :func:`auto_why_not`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from qkv.attn.functional import Backend, Problem, _target_shape, register_backend
from qkv.attn.problem import connected_zeros
from qkv.masks import Mask, MaskMod, eval_blocks
from qkv.masks._base import head_dependent, is_structured
from qkv.masks._tiles import block_spans, check_block, n_blocks

#: Tile size used by the backend (queries and keys). 64 balances matmul efficiency against
#: the work wasted in partial tiles for windows of a few hundred keys.
BLOCK_SIZE: int = 64
#: Most score elements computed at once (per chunk of tiles); bounds the working memory
#: (a few times ``4 * CHUNK_ELEMENTS`` bytes) and sets the number of kernel launches. At 16k
#: tokens (d 256, 4 heads, causal window 256, one thread; 2026-12-07) the live-bytes peak of
#: forward + backward was 214 / 198 / 190 / 185 MiB at 2^20 / 2^19 / 2^18 / 2^17 against
#: SDPA's 178, and the time 1.64 / 1.73 / 1.71 / 1.86 s: 2^18 keeps 1.07x SDPA's memory
#: for about 4% of speed.
CHUNK_ELEMENTS: int = 1 << 18
#: Element masks of partial tiles are kept between forward and backward up to this size.
MASK_CACHE_BYTES: int = 64 << 20
#: ``"auto"`` picks blocksparse only for ``s_q, s_k >= AUTO_MIN_LEN`` ... (measured on 2 CPU
#: cores, window 256, h=8, d_h=64: 0.5-0.8x of sdpa at 1024 tokens, 1.3-2.5x at 2048, from
#: ``qkv bench attention --lengths 1024,2048 --masks window,local,bigbird``)
AUTO_MIN_LEN: int = 2048
#: ... and a fraction of needed tiles at most ``AUTO_MAX_DENSITY``.
AUTO_MAX_DENSITY: float = 0.3
#: Query tiles whose key-tile counts are within this ratio share one padded group.
_GROUP_RATIO = 0.75


@dataclass
class _Unit:
    """One chunk of work: query tiles ``rows`` of batch rows ``n`` and kv heads ``hk``,
    each against its ``C`` key tiles ``kv`` (padded; ``valid`` marks real ones)."""

    n: slice
    hk: slice
    b_mask: int  # mask batch row, for evaluating the element mask
    rows: Tensor  # (G,) query tiles
    kv: Tensor  # (G, C) key tiles
    valid: Tensor  # (G, C) bool
    full: Tensor  # (G, C) bool: real tiles that are allowed everywhere
    all_full: bool
    forbidden: Tensor | None = None  # (G, B, C*B) cached ~element mask, see _forbidden


@dataclass
class _Plan:
    """The work of one call: every unit, the tile size and the element mask to apply."""

    block: int
    s_q: int
    s_k: int
    mod: MaskMod
    units: list[_Unit]
    cache_left: int  # bytes of element masks that may still be kept


def _everything(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
    return torch.ones((), dtype=torch.bool, device=q.device)


def _groups(counts: Tensor) -> list[tuple[Tensor, int]]:
    """Query tiles grouped by their number of key tiles: ``[(rows, padded count), ...]``."""
    distinct = sorted(set(counts.tolist()) - {0}, reverse=True)
    out, i = [], 0
    while i < len(distinct):
        cap, members = distinct[i], [distinct[i]]
        i += 1
        while i < len(distinct) and distinct[i] >= _GROUP_RATIO * cap:
            members.append(distinct[i])
            i += 1
        rows = torch.isin(counts, torch.tensor(members, device=counts.device)).nonzero()[:, 0]
        out.append((rows, cap))
    return out


def _plan(
    mask: Mask | None,
    n: int,
    h_kv: int,
    g: int,
    s_q: int,
    s_k: int,
    block: int,
    device: torch.device,
) -> _Plan:
    """Split the needed tiles into units of at most ``CHUNK_ELEMENTS`` scores each.

    Query tiles are grouped by their count of needed key tiles (:func:`_groups`); a group
    is cut into chunks of query tiles and, when one tile row alone is too large (a global
    row sees every key tile), of key/value heads.
    """
    n_qb, n_kb = n_blocks(s_q, block), n_blocks(s_k, block)
    if mask is None:
        maybe = torch.ones(1, n_qb, n_kb, dtype=torch.bool, device=device)
        full, mod = maybe, _everything
    else:
        maybe, full = mask.block_bounds(s_q, s_k, block, device)
        mod = mask.mod(s_q, s_k)
    k_lo, _ = block_spans(s_k, block, device)
    full = full & maybe & (k_lo + block <= s_k)  # tiles holding padded keys need the mask
    counts = maybe.sum(-1)  # (b_m, n_qb)
    order = torch.argsort((~maybe).to(torch.int8), dim=-1, stable=True)  # needed tiles first
    units: list[_Unit] = []
    for bm in range(maybe.shape[0]):
        n_sl = slice(None) if maybe.shape[0] == 1 else slice(bm, bm + 1)
        n_here = n if maybe.shape[0] == 1 else 1
        for rows, c in _groups(counts[bm]):
            kv = order[bm, rows, :c]  # (G, C)
            valid = torch.arange(c, device=device) < counts[bm, rows, None]
            fl = full[bm, rows[:, None], kv] & valid
            per_row = n_here * h_kv * g * block * c * block  # score elements of one tile row
            step = max(1, CHUNK_ELEMENTS // per_row)
            heads = h_kv if per_row <= CHUNK_ELEMENTS else max(1, h_kv * CHUNK_ELEMENTS // per_row)
            for r0 in range(0, len(rows), step):
                sl = slice(r0, r0 + step)
                for h0 in range(0, h_kv, heads):
                    units.append(
                        _Unit(
                            n_sl,
                            slice(h0, min(h0 + heads, h_kv)),
                            bm,
                            rows[sl],
                            kv[sl],
                            valid[sl],
                            fl[sl],
                            bool(fl[sl].all()),
                        )
                    )
    return _Plan(block, s_q, s_k, mod, units, MASK_CACHE_BYTES)


def _forbidden(plan: _Plan, u: _Unit) -> Tensor | None:
    """``(G, B, C*B)`` bool, True where a gathered pair is masked out (padding slots,
    padded keys, the mask inside partial tiles); None when every tile is fully allowed.
    Kept on the unit for the backward while the plan's cache budget lasts."""
    if u.all_full:
        return None
    if u.forbidden is not None:
        return u.forbidden
    B = plan.block
    G, C = u.kv.shape
    allowed = u.full[:, :, None, None].expand(G, C, B, B).clone()  # (G, C, B, B)
    part = (u.valid & ~u.full).nonzero()
    if len(part):
        i, j = part.unbind(1)
        b = torch.full_like(i, u.b_mask)
        allowed[i, j] = eval_blocks(plan.mod, plan.s_q, plan.s_k, B, b, u.rows[i], u.kv[i, j])
    forbidden = ~allowed.transpose(1, 2).reshape(G, B, C * B)
    if forbidden.numel() <= plan.cache_left:
        plan.cache_left -= forbidden.numel()
        u.forbidden = forbidden
    return forbidden


def _gather_rows(x6: Tensor, u: _Unit, scale: float = 1.0) -> Tensor:
    """``(N, h_kv, g, n_qb, B, e)`` -> the unit's query rows ``(n, hk, G, g*B, e)``, a new
    tensor (times ``scale``)."""
    x = x6[u.n, u.hk].index_select(3, u.rows)  # (n, hk, g, G, B, e)
    n, hk, g, G, B, e = x.shape
    x = x.transpose(2, 3).reshape(n, hk, G, g * B, e)
    return x.mul_(scale) if scale != 1.0 else x


def _gather_keys(x5: Tensor, u: _Unit) -> Tensor:
    """``(N, h_kv, n_kb, B, e)`` -> the unit's key tiles ``(n, hk, G, C*B, e)``."""
    x = x5[u.n, u.hk].index_select(2, u.kv.flatten())  # (n, hk, G*C, B, e)
    G, C = u.kv.shape
    return x.view(x.shape[0], x.shape[1], G, C * x.shape[3], x.shape[4])


def _gather_kv(k5: Tensor, v5: Tensor, u: _Unit, forbidden: Tensor | None) -> tuple[Tensor, Tensor]:
    """The unit's key and value tiles, with the keys that no query row of the unit may see
    set to 0 by selection: whatever they hold (NaN, inf) then reaches neither the output
    (``0 * NaN`` in ``P V``) nor a gradient (numerics contract, docs/architecture.md)."""
    kc, vc = _gather_keys(k5, u), _gather_keys(v5, u)  # new tensors: filled in place
    if forbidden is not None:
        dead = forbidden.all(dim=1)[..., None]  # (G, C*B, 1)
        kc.masked_fill_(dead, 0.0)
        vc.masked_fill_(dead, 0.0)
    return kc, vc


def _scores(qc: Tensor, kc: Tensor, forbidden: Tensor | None, g: int) -> Tensor:
    """Masked scores of pre-scaled queries: ``(n, hk, G, g*B, C*B)``."""
    s = torch.matmul(qc, kc.transpose(-1, -2))  # (n, hk, G, g*B, C*B)
    if forbidden is not None:
        n, hk, G, gB, CB = s.shape
        s.view(n, hk, G, g, gB // g, CB).masked_fill_(forbidden[:, None], float("-inf"))
    return s


def _put_rows(dst6: Tensor, u: _Unit, src: Tensor, g: int) -> None:
    """Write ``(n, hk, G, g*B, e)`` query rows back into ``(N, h_kv, g, n_qb, B, e)``."""
    n, hk, G, gB, e = src.shape
    dst6[u.n, u.hk].index_copy_(3, u.rows, src.view(n, hk, G, g, gB // g, e).transpose(2, 3))


def _heads_last(like: Tensor, n: int, h: int, s: int, e: int) -> Tensor:
    """Zeros ``(n, h, s, e)`` stored as ``(n, s, h, e)``, the layout of heads split from a
    projection: merging the heads of the output is a view, and the gradients of the
    split heads need no copy either. Splitting ``h`` or ``s`` is still a view."""
    return like.new_zeros(n, s, h, e).transpose(1, 2)


def _forward(q: Tensor, k: Tensor, v: Tensor, plan: _Plan, scale: float) -> tuple[Tensor, Tensor]:
    r"""Per unit: :math:`S = \mathrm{scale}\, Q K^\top` on the gathered tiles, masked;
    :math:`O = \mathrm{softmax}(S) V`; keep :math:`\mathrm{lse} = \log \sum_j e^{S_j}`.

    Returns:
        ``out (N, H, s_qp, d_v)`` and ``lse (N, H, s_qp, 1)`` (0 for rows that see nothing).
    """
    N, H, s_qp, d = q.shape
    h_kv, s_kp, d_v = k.shape[1], k.shape[2], v.shape[-1]
    g, B = H // h_kv, plan.block
    # reshape: a view of the callers' strided heads where it can be (no copies kept)
    q6 = q.reshape(N, h_kv, g, s_qp // B, B, d)
    k5, v5 = k.reshape(N, h_kv, s_kp // B, B, d), v.reshape(N, h_kv, s_kp // B, B, d_v)
    out = _heads_last(q, N, H, s_qp, d_v)
    lse = q.new_zeros(N, H, s_qp, 1)
    out6, lse6 = out.view(N, h_kv, g, s_qp // B, B, d_v), lse.view(N, h_kv, g, s_qp // B, B, 1)
    for u in plan.units:
        forbidden = _forbidden(plan, u)
        kc, vc = _gather_kv(k5, v5, u, forbidden)
        s = _scores(_gather_rows(q6, u, scale), kc, forbidden, g)
        m = s.amax(-1, keepdim=True)
        m = m.masked_fill_(torch.isneginf(m), 0.0)  # rows that see nothing
        p = s.sub_(m).exp_()  # (n, hk, G, g*B, C*B), unnormalized
        z = p.sum(-1, keepdim=True)
        o = torch.matmul(p, vc).div_(torch.where(z > 0, z, 1.0))
        _put_rows(out6, u, o, g)
        _put_rows(lse6, u, torch.where(z > 0, m + z.log(), 0.0), g)
    return out, lse


def _backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    d_out: Tensor,
    plan: _Plan,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""FlashAttention's backward (Dao et al. 2022, algorithm 4) over the plan's tiles:
    recompute :math:`P = e^{S - \mathrm{lse}}`, then :math:`dV = P^\top dO`,
    :math:`dS = P \circ (dO V^\top - \mathrm{rowsum}(dO \circ O))`,
    :math:`dQ = \mathrm{scale}\, dS K`, :math:`dK = \mathrm{scale}\, dS^\top Q`
    (key-tile gradients are summed over every query tile that read them)."""
    N, H, s_qp, d = q.shape
    h_kv, s_kp, d_v = k.shape[1], k.shape[2], v.shape[-1]
    g, B, n_qb, n_kb = H // h_kv, plan.block, s_qp // plan.block, s_kp // plan.block
    q6 = q.reshape(N, h_kv, g, n_qb, B, d)
    k5, v5 = k.reshape(N, h_kv, n_kb, B, d), v.reshape(N, h_kv, n_kb, B, d_v)
    do6 = d_out.reshape(N, h_kv, g, n_qb, B, d_v)
    out6 = out.reshape(N, h_kv, g, n_qb, B, d_v)
    lse6 = lse.view(N, h_kv, g, n_qb, B, 1)
    dq, dk, dv = (_heads_last(x, N, x.shape[1], x.shape[2], x.shape[3]) for x in (q, k, v))
    dq6 = dq.view(N, h_kv, g, n_qb, B, d)
    dk5, dv5 = dk.view(N, h_kv, n_kb, B, d), dv.view(N, h_kv, n_kb, B, d_v)
    for u in plan.units:
        qc = _gather_rows(q6, u, scale)  # scale * q: dK = dS^T (scale q)
        forbidden = _forbidden(plan, u)
        kc, vc = _gather_kv(k5, v5, u, forbidden)
        p = _scores(qc, kc, forbidden, g).sub_(_gather_rows(lse6, u)).exp_()
        doc = _gather_rows(do6, u)  # (n, hk, G, g*B, d_v)
        # rowsum(dO * O) of the unit's rows only: each query row is in exactly one unit, and
        # the whole (N, H, s, d_v) product would be the backward's largest temporary
        delta = _gather_rows(out6, u).mul_(doc).sum(-1, keepdim=True)
        dvc = torch.matmul(p.transpose(-1, -2), doc)  # (n, hk, G, C*B, d_v)
        ds = torch.matmul(doc, vc.transpose(-1, -2)).sub_(delta).mul_(p)
        _put_rows(dq6, u, torch.matmul(ds, kc).mul_(scale), g)
        dkc = torch.matmul(ds.transpose(-1, -2), qc)  # (n, hk, G, C*B, d)
        flat = u.kv.flatten()
        n_, hk = dkc.shape[:2]
        dk5[u.n, u.hk].index_add_(2, flat, dkc.view(n_, hk, flat.numel(), B, d))
        dv5[u.n, u.hk].index_add_(2, flat, dvc.view(n_, hk, flat.numel(), B, d_v))
    return dq, dk, dv


class _BlockSparseAttention(torch.autograd.Function):
    """``softmax(scale * q k^T + mask) v`` over the plan's tiles, with a recomputing
    backward. Inputs are ``(N, H, s, e)`` tensors padded to multiples of the tile size."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, plan: _Plan, scale: float) -> Tensor:  # type: ignore[override]
        out, lse = _forward(q, k, v, plan, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan, ctx.scale = plan, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, out, lse, d_out, ctx.plan, ctx.scale)
        return dq, dk, dv, None, None


# ---------------------------------------------------------------------------------------
# the backend
# ---------------------------------------------------------------------------------------
def why_not(p: Problem) -> str | None:
    """Why ``"blocksparse"`` cannot compute this problem exactly, or ``None``."""
    if not isinstance(p.score, str):
        return "blocksparse computes dot-product scores only; custom scores need 'math'"
    if p.dropout_p > 0:
        return "blocksparse does not implement dropout; use 'math' or 'sdpa'"
    if p.return_weights:
        return "blocksparse never materializes the weights; use 'math' for return_weights"
    if isinstance(p.mask, Tensor):
        return (
            "blocksparse needs a lazy qkv.masks.Mask to read the sparsity from, got a dense "
            "tensor (wrap a bool tensor in qkv.masks.DenseMask, or use 'sdpa')"
        )
    if p.q.ndim > 4:
        return f"blocksparse takes q of shape (s, d), (h, s, d) or (b, h, s, d), got {tuple(p.q.shape)}"
    if p.mask is not None:
        if head_dependent(p.mask):
            return "blocksparse needs a mask that is the same for every head"
        bm = p.mask.batch_size
        lead = _target_shape(p.q, p.k, p.groups)[:-2]
        if bm not in (None, 1) and (len(lead) != 2 or lead[0] != bm):
            return f"mask {p.mask!r} has batch size {bm} but the problem's batch shape is {lead}"
    return None


def auto_why_not(p: Problem) -> str | None:
    """The rule of ``"blocksparse-auto"``: everything :func:`why_not` refuses, plus
    problems where block-sparse work would not beat a dense kernel.

    Picked only when ``s_q >= AUTO_MIN_LEN`` and ``s_k >= AUTO_MIN_LEN`` (2048), the mask
    is a structured :class:`~qkv.masks.Mask` (analytic bounds, no dense pass) and at most
    ``AUTO_MAX_DENSITY`` (30 %) of the tiles are needed. Dense, causal and short problems
    stay with ``"sdpa"``.
    """
    reason = why_not(p)
    if reason is not None:
        return reason
    if p.mask is None:
        return "no mask: nothing to skip"
    if p.q.numel() == 0 or p.k.numel() == 0:
        return "an empty problem: nothing to skip"
    if min(p.s_q, p.s_k) < AUTO_MIN_LEN:
        return f"sequences shorter than {AUTO_MIN_LEN} are faster dense"
    assert isinstance(p.mask, Mask)
    if not is_structured(p.mask):
        return "the mask has no analytic block bounds (it would need a dense pass)"
    maybe = p.mask.block_bounds(p.s_q, p.s_k, BLOCK_SIZE, p.q.device).maybe
    density = maybe.float().mean().item()
    if density > AUTO_MAX_DENSITY:
        return f"{density:.0%} of the tiles are needed (> {AUTO_MAX_DENSITY:.0%}); dense is faster"
    return None


def _pad_to(x: Tensor, block: int) -> Tensor:
    pad = n_blocks(x.shape[-2], block) * block - x.shape[-2]
    return F.pad(x, (0, 0, 0, pad)) if pad else x


def blocksparse_attention(p: Problem, block: int | None = None) -> Tensor:
    """Run a problem block-sparsely (the ``"blocksparse"`` backend).

    Args:
        p: the problem (see :func:`why_not` for what is supported).
        block: tile size; default :data:`BLOCK_SIZE`. Lengths need not be multiples.

    Returns:
        ``(..., h, s_q, d_v)``, equal to the ``"math"`` backend up to rounding.

    Raises:
        ValueError: a non-positive ``block``, or key heads that do not divide query heads.
    """
    block = check_block(BLOCK_SIZE if block is None else block)
    target = _target_shape(p.q, p.k, p.groups)
    lead = target[:-2]
    q, k, v = p.q, p.k, p.v
    s_q, s_k, d_v = p.s_q, p.s_k, v.shape[-1]
    if 0 in target:  # no rows or nothing to attend to: zeros, still connected
        return connected_zeros((*lead, s_q, d_v), q, k, v)
    # (..., s, e) -> (N, H, s, e); key heads stay unexpanded (grouped or shared heads)
    q4 = q.reshape((1,) * (4 - q.ndim) + tuple(q.shape)) if q.ndim < 4 else q
    k4 = k.reshape((1,) * (4 - k.ndim) + tuple(k.shape)) if k.ndim < 4 else k
    v4 = v.reshape((1,) * (4 - v.ndim) + tuple(v.shape)) if v.ndim < 4 else v
    N = max(q4.shape[0], k4.shape[0])
    H = max(q4.shape[1], k4.shape[1])
    q4 = q4.expand(N, H, *q4.shape[2:])
    k4 = k4.expand(N, *k4.shape[1:])
    v4 = v4.expand(N, *v4.shape[1:])
    if H % k4.shape[1]:
        raise ValueError(f"key heads ({k4.shape[1]}) must divide query heads ({H})")
    dtype = q.dtype
    ctype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    plan = _plan(p.mask, N, k4.shape[1], H // k4.shape[1], s_q, s_k, block, q.device)  # type: ignore[arg-type]
    # no contiguous copies: the tiles are read through views of the callers' heads
    qp, kp, vp = (_pad_to(x.to(ctype), block) for x in (q4, k4, v4))
    out = _BlockSparseAttention.apply(qp, kp, vp, plan, p.scale)
    out = out[:, :, :s_q].to(dtype)  # (N, H, s_q, d_v)
    return out.reshape(*lead, s_q, d_v)


def _run(p: Problem) -> Tensor:
    return blocksparse_attention(p)


register_backend(Backend("blocksparse", _run, why_not, auto_priority=None))
register_backend(Backend("blocksparse-auto", _run, auto_why_not, auto_priority=20))
