"""FlexAttention backend (``torch.nn.attention.flex_attention``; Dong et al. 2024, "Flex
Attention: A Programming Model for Generating Optimized Attention Kernels").

The lazy :class:`~qkv.masks.Mask` becomes a ``BlockMask`` through
:meth:`~qkv.masks.Mask.to_block_mask` (built from the family's analytic block bounds) and
its ``mask_mod``; the kernel then skips empty tiles and evaluates the mask only in partial
ones.

What runs where (torch 2.13):

* CUDA: forward and backward, compiled with ``torch.compile``;
* CPU: forward only (FlexAttention raises ``NotImplementedError`` for the backward on CPU).
  float32/float16/bfloat16 are compiled (inductor's C++ kernel); float64 runs the eager
  reference implementation, which materializes the full score matrix. A ``mask_mod`` that
  inductor cannot compile falls back to the eager implementation, with one
  ``RuntimeWarning`` per kernel key.

Compiled kernels are kept per key (shapes, dtype, device, scale, and the mask's structure:
its classes, scalar parameters and tensor shapes; see :func:`_kernel_key`), each compiled
with ``dynamic=False`` under a code object of its own, so a new shape compiles a static
kernel instead of a failing dynamic one, and kernels never count against one another's
recompilation limit. At most :data:`MAX_KERNELS` are kept.

On CPU the compiled kernel sees whole tiles only: q, k and v are padded with zeros to a
multiple of the tile size and the padded keys are masked out. Inductor's C++ kernel in
torch 2.13 returns wrong values (at random, differing from call to call) when the last
key tile is shorter than a tile for some lengths (e.g. ``s_k = 8, 24, 72``, ``d = 16``).

Not part of ``backend="auto"``: the first call of every new key pays a compilation.
"""

from __future__ import annotations

import itertools
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from qkv.attn.functional import Backend, Problem, _target_shape, register_backend
from qkv.attn.problem import connected_zeros, hide_unseen
from qkv.masks import Mask
from qkv.masks._base import head_dependent
from qkv.masks._tiles import n_blocks

#: Tile size of the ``BlockMask`` (FlexAttention's default).
FLEX_BLOCK_SIZE: int = 128
#: Compile the kernel with ``torch.compile`` where inductor supports it (see module doc).
COMPILE: bool = True
#: Compiled kernels kept at once (the least recently used is dropped first).
MAX_KERNELS: int = 32
_COMPILABLE_CPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
#: kernel key -> compiled kernel, or ``_eager`` for keys inductor failed to compile
_kernels: OrderedDict[tuple[Any, ...], Callable[..., Any]] = OrderedDict()
_kernel_names = itertools.count()


def _flex_module() -> Any:
    try:
        from torch.nn.attention import flex_attention
    except ImportError:  # pragma: no cover - torch < 2.5
        return None
    return flex_attention


def _eager(*args: Any, **kwargs: Any) -> Any:
    """FlexAttention's eager reference implementation (dense scores), without its warning."""
    with warnings.catch_warnings():  # the eager path is chosen on purpose here
        warnings.filterwarnings("ignore", message=".*without torch.compile.*")
        return _flex_module().flex_attention(*args, **kwargs)


def _compiles(q: Tensor) -> bool:
    return COMPILE and (q.device.type != "cpu" or q.dtype in _COMPILABLE_CPU_DTYPES)


def _mask_key(x: object) -> object:
    """What a compiled kernel specializes on in a mask: its classes, scalar parameters, and
    the shapes, dtypes and devices of its tensors (their values are kernel inputs)."""
    if isinstance(x, Tensor):
        return ("tensor", tuple(x.shape), x.dtype, x.device)
    if isinstance(x, (list, tuple)):
        return tuple(_mask_key(y) for y in x)
    if isinstance(x, Mask):
        return (type(x).__qualname__, *((k, _mask_key(v)) for k, v in sorted(vars(x).items())))
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return type(x).__qualname__


def _kernel_key(q: Tensor, k: Tensor, v: Tensor, mask: Mask | None, **kwargs: Any) -> tuple:
    """The key of a compiled kernel: everything ``torch.compile(dynamic=False)`` guards on."""
    shapes = tuple(tuple(t.shape) for t in (q, k, v))
    return (shapes, q.dtype, q.device, _mask_key(mask), tuple(sorted(kwargs.items())))


def _new_kernel(name: str) -> Callable[..., Any]:
    """``flex_attention`` compiled with ``dynamic=False`` under a code object of its own:
    dynamo keeps compiled graphs, and counts recompilations, per code object."""
    flex = _flex_module().flex_attention

    def kernel(q: Tensor, k: Tensor, v: Tensor, **kwargs: Any) -> Tensor:
        return flex(q, k, v, **kwargs)

    own = types.FunctionType(
        kernel.__code__.replace(co_name=name), kernel.__globals__, name, None, kernel.__closure__
    )
    return torch.compile(own, dynamic=False)


def _whole_tiles_block_mask(mask: Mask | None, s_q: int, s_k: int, block: int, device: Any) -> Any:
    """The ``BlockMask`` of a problem whose q and k are padded to multiples of ``block``:
    the tiles of ``mask`` (those running past ``s_q``/``s_k`` partial) and a ``mask_mod``
    that hides the padded keys."""
    fa = _flex_module()
    s_qp, s_kp = n_blocks(s_q, block) * block, n_blocks(s_k, block) * block
    if mask is not None:
        bm = mask.to_block_mask(s_q, s_k, block, device=device)  # mask_mod is range-safe
        kv = (bm.kv_num_blocks, bm.kv_indices, bm.full_kv_num_blocks, bm.full_kv_indices)
        mod = bm.mask_mod
    else:
        full = torch.ones(1, s_qp // block, s_kp // block, dtype=torch.bool, device=device)
        full[..., -1] = s_k % block == 0  # the last key tile holds padding: partial
        kv = (*_kv_lists(~full), *_kv_lists(full))

        def mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            return k < s_k

    return fa.BlockMask.from_kv_blocks(
        *kv, BLOCK_SIZE=block, mask_mod=mod, seq_lengths=(s_qp, s_kp)
    )


def _kv_lists(tiles: Tensor) -> tuple[Tensor, Tensor]:
    """``(1, n_qb, n_kb)`` bool -> FlexAttention's ``(1, 1, n_qb)`` tile counts and
    ``(1, 1, n_qb, n_kb)`` tile indices (listed tiles first)."""
    counts = tiles.sum(-1, dtype=torch.int32)
    order = torch.argsort((~tiles).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return counts[:, None].contiguous(), order[:, None].contiguous()


def why_not(p: Problem) -> str | None:
    """Why ``"flex"`` cannot compute this problem, or ``None``."""
    if _flex_module() is None:  # pragma: no cover
        return f"torch.nn.attention.flex_attention is not available in torch {torch.__version__}"
    if not isinstance(p.score, str):
        return "flex computes dot-product scores only here; custom scores need 'math'"
    if p.dropout_p > 0:
        return "FlexAttention has no dropout; use 'math' or 'sdpa'"
    if p.return_weights:
        return "FlexAttention does not return the weights; use 'math' for return_weights"
    if isinstance(p.mask, Tensor):
        return "flex needs a lazy qkv.masks.Mask (it builds a BlockMask from it), got a tensor"
    if p.q.ndim > 4:
        return f"flex takes q of shape (s, d), (h, s, d) or (b, h, s, d), got {tuple(p.q.shape)}"
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (p.q, p.k, p.v))
    if needs_grad and p.q.device.type == "cpu":
        return (
            f"FlexAttention has no backward on CPU in torch {torch.__version__} "
            f"(NotImplementedError); run under torch.no_grad(), on CUDA, or use "
            f"backend='blocksparse'"
        )
    if p.mask is not None:
        if head_dependent(p.mask):
            return "flex builds one BlockMask for every head; the mask depends on the head"
        bm = p.mask.batch_size
        lead = _target_shape(p.q, p.k, p.groups)[:-2]
        if bm not in (None, 1) and (len(lead) != 2 or lead[0] != bm):
            return f"mask {p.mask!r} has batch size {bm} but the problem's batch shape is {lead}"
    return None


def flex_attention(p: Problem, block: int | None = None) -> Tensor:
    """Run a problem with FlexAttention (the ``"flex"`` backend).

    Args:
        p: the problem (see :func:`why_not` for what is supported).
        block: ``BlockMask`` tile size; default :data:`FLEX_BLOCK_SIZE`.

    Returns:
        ``(..., h, s_q, d_v)``; rows that see no key are zeros.
    """
    block = FLEX_BLOCK_SIZE if block is None else block
    target = _target_shape(p.q, p.k, p.groups)
    lead = target[:-2]
    if 0 in target:  # no rows, or no key to attend to: zeros, like a fully masked row
        return connected_zeros((*target[:-1], p.v.shape[-1]), p.q, p.k, p.v)
    q4, k4, v4 = (x.reshape((1,) * (4 - x.ndim) + tuple(x.shape)) for x in (p.q, p.k, p.v))
    n, h = max(q4.shape[0], k4.shape[0]), max(q4.shape[1], k4.shape[1])
    q4 = q4.expand(n, h, *q4.shape[2:])  # (b, h, s_q, d)
    k4, v4 = k4.expand(n, *k4.shape[1:]), v4.expand(n, *v4.shape[1:])  # (b, h_kv, s_k, d)
    mask = p.mask if isinstance(p.mask, Mask) else None
    kwargs = {"scale": p.scale, "enable_gqa": k4.shape[1] != h}
    s_q, s_k = p.s_q, p.s_k
    if mask is not None:  # numerics contract: keys and values no query sees are selected away
        unseen = ~mask.seen_keys(s_q, s_k, q4.device)[:, None, :, None]  # (b_m, 1, s_k, 1)
        k4, v4 = hide_unseen(k4, unseen), hide_unseen(v4, unseen)
    compiled = _compiles(q4)
    if compiled and q4.device.type == "cpu":  # whole tiles only (see the module doc)
        block_mask = _whole_tiles_block_mask(mask, s_q, s_k, block, q4.device)
        pad_q, pad_k = n_blocks(s_q, block) * block - s_q, n_blocks(s_k, block) * block - s_k
        q4 = F.pad(q4, (0, 0, 0, pad_q)) if pad_q else q4  # (b, h, s_qp, d)
        k4, v4 = (F.pad(t, (0, 0, 0, pad_k)) if pad_k else t for t in (k4, v4))
    else:
        block_mask = None if mask is None else mask.to_block_mask(s_q, s_k, block, q4.device)
    if not compiled:
        out = _eager(q4, k4, v4, block_mask=block_mask, **kwargs)
        return out.reshape(*lead, s_q, v4.shape[-1])
    key = _kernel_key(q4, k4, v4, mask, block=block, s_q=s_q, s_k=s_k, **kwargs)
    kernel = _cached_kernel(key)
    try:
        out = kernel(q4, k4, v4, block_mask=block_mask, **kwargs)
    except Exception as e:  # inductor cannot compile every mask_mod on every device
        if kernel is _eager or q4.device.type != "cpu":
            raise
        warnings.warn(
            f"flex: torch.compile failed for {p.mask!r} ({type(e).__name__}); running "
            f"FlexAttention's eager (dense) implementation for this key from now on",
            RuntimeWarning,
            stacklevel=2,
        )
        _kernels[key] = _eager
        out = _eager(q4, k4, v4, block_mask=block_mask, **kwargs)
    return out[:, :, :s_q].reshape(*lead, s_q, v4.shape[-1])  # drop padded queries


def _cached_kernel(key: tuple[Any, ...]) -> Callable[..., Any]:
    """The kernel of ``key``, compiled on first use; keeps the :data:`MAX_KERNELS` most
    recently used."""
    kernel = _kernels.get(key)
    if kernel is None:
        kernel = _kernels[key] = _new_kernel(f"flex_kernel_{next(_kernel_names)}")
        while len(_kernels) > MAX_KERNELS:
            _kernels.popitem(last=False)
    _kernels.move_to_end(key)
    return kernel


def _run(p: Problem) -> Tensor:
    return flex_attention(p)


register_backend(Backend("flex", _run, why_not, auto_priority=None))
