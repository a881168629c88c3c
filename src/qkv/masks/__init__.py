"""Attention masks. One convention everywhere: ``True`` means *may attend*.

Masks are lazy objects combined with ``&``, ``|`` and ``~`` and materialized on demand with
``.to_dense(s_q, s_k)`` (bool) or ``.to_bias(s_q, s_k)`` (additive float). Every function
that takes a mask accepts one of these objects, a bool tensor, or a float bias.
"""

from qkv.masks._base import And, DenseMask, Mask, MaskMod, Not, Or
from qkv.masks._tiles import (
    BlockBounds,
    block_bounds,
    draw,
    eval_blocks,
    flex_mask_mod,
    to_block_layout,
    to_block_mask,
)
from qkv.masks.bigbird import BigBird, bigbird
from qkv.masks.causal import Causal, causal
from qkv.masks.dilated import Dilated, dilated
from qkv.masks.document import Document, document
from qkv.masks.global_tokens import GlobalTokens, global_tokens
from qkv.masks.padding import Padding, padding
from qkv.masks.prefix_lm import PrefixLM, prefix_lm
from qkv.masks.random_blocks import RandomBlocks, random_blocks
from qkv.masks.sliding_window import SlidingWindow, sliding_window
from qkv.masks.window import ShiftedWindow, shifted_window, window_partition, window_reverse

__all__ = [
    "And",
    "BigBird",
    "BlockBounds",
    "Causal",
    "DenseMask",
    "Dilated",
    "Document",
    "GlobalTokens",
    "Mask",
    "MaskMod",
    "Not",
    "Or",
    "Padding",
    "PrefixLM",
    "RandomBlocks",
    "ShiftedWindow",
    "SlidingWindow",
    "bigbird",
    "block_bounds",
    "causal",
    "dilated",
    "document",
    "draw",
    "eval_blocks",
    "flex_mask_mod",
    "global_tokens",
    "padding",
    "prefix_lm",
    "random_blocks",
    "shifted_window",
    "sliding_window",
    "to_block_layout",
    "to_block_mask",
    "window_partition",
    "window_reverse",
]
