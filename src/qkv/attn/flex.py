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
  reference implementation, which materializes the full score matrix. Some ``mask_mod``
  closures do not compile on CPU (e.g. ``prefix_lm`` with per-row lengths hits an inductor
  C++ codegen error in 2.13): those fall back to the eager implementation with a
  ``RuntimeWarning``.

Not part of ``backend="auto"``: the first call of every new shape pays a compilation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from qkv.attn.functional import Backend, Problem, _target_shape, register_backend
from qkv.masks import Mask
from qkv.masks._base import head_dependent

#: Tile size of the ``BlockMask`` (FlexAttention's default).
FLEX_BLOCK_SIZE: int = 128
#: Compile the kernel with ``torch.compile`` where inductor supports it (see module doc).
COMPILE: bool = True
_COMPILABLE_CPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_compiled: Callable[..., Any] | None = None


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


def _kernel(q: Tensor) -> Callable[..., Any]:
    global _compiled
    if COMPILE and (q.device.type != "cpu" or q.dtype in _COMPILABLE_CPU_DTYPES):
        if _compiled is None:
            _compiled = torch.compile(_flex_module().flex_attention)
        return _compiled
    return _eager


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
    if p.s_q == 0 or p.s_k == 0:
        return "FlexAttention needs non-empty sequences"
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
    lead = _target_shape(p.q, p.k, p.groups)[:-2]
    q4, k4, v4 = (x.reshape((1,) * (4 - x.ndim) + tuple(x.shape)) for x in (p.q, p.k, p.v))
    n, h = max(q4.shape[0], k4.shape[0]), max(q4.shape[1], k4.shape[1])
    q4 = q4.expand(n, h, *q4.shape[2:])  # (b, h, s_q, d)
    k4, v4 = k4.expand(n, *k4.shape[1:]), v4.expand(n, *v4.shape[1:])  # (b, h_kv, s_k, d)
    block_mask = None
    if isinstance(p.mask, Mask):
        block_mask = p.mask.to_block_mask(p.s_q, p.s_k, block, device=q4.device)
    kwargs = {"block_mask": block_mask, "scale": p.scale, "enable_gqa": k4.shape[1] != h}
    kernel = _kernel(q4)
    try:
        out = kernel(q4, k4, v4, **kwargs)
    except Exception as e:  # inductor cannot compile every mask_mod on every device
        if kernel is not _compiled or q4.device.type != "cpu":
            raise
        warnings.warn(
            f"flex: torch.compile failed for {p.mask!r} ({type(e).__name__}); running "
            f"FlexAttention's eager (dense) implementation instead",
            RuntimeWarning,
            stacklevel=2,
        )
        out = _eager(q4, k4, v4, **kwargs)
    return out.reshape(*lead, p.s_q, v4.shape[-1])


def _run(p: Problem) -> Tensor:
    return flex_attention(p)


register_backend(Backend("flex", _run, why_not, auto_priority=None))
