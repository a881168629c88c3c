"""Attention masks. One convention everywhere: ``True`` means *may attend*.

Masks are lazy objects combined with ``&``, ``|`` and ``~`` and materialized on demand with
``.to_dense(s_q, s_k)`` (bool) or ``.to_bias(s_q, s_k)`` (additive float). Every function
that takes a mask accepts one of these objects, a bool tensor, or a float bias.
"""

from qkv.masks._base import And, DenseMask, Mask, MaskMod, Not, Or
from qkv.masks.causal import Causal, causal
from qkv.masks.padding import Padding, padding

__all__ = [
    "And",
    "Causal",
    "DenseMask",
    "Mask",
    "MaskMod",
    "Not",
    "Or",
    "Padding",
    "causal",
    "padding",
]
