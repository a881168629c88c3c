"""Position information for attention.

Absolute encodings added to the token embeddings (:class:`Sinusoidal`, :class:`Learned`;
DETR's 2-D :func:`sine_2d`, added to queries and keys),
a rotation applied to queries and keys (:class:`RoPE`), and additive score biases of shape
``(1, h, s_q, s_k)`` (:class:`ALiBi`, :class:`RelativeBias`; Swin's
:class:`WindowRelativeBias` inside a window), and Transformer-XL's relative score
(:class:`XLRelativeScore`, a ``score=`` for attention). Every module takes optional
absolute positions (or an ``offset``) so that KV-cache decoding sees the same positions as a
full forward pass.
"""

from qkv.pos.alibi import ALiBi, alibi_slopes
from qkv.pos.learned import Learned
from qkv.pos.relative import RelativeBias
from qkv.pos.rope import RoPE
from qkv.pos.sine2d import sine_2d
from qkv.pos.sinusoidal import Sinusoidal, sinusoidal_table
from qkv.pos.window_bias import WindowRelativeBias, relative_position_index
from qkv.pos.xl import XLRelativeScore, shift_relative, sinusoid_embedding

__all__ = [
    "ALiBi",
    "Learned",
    "RelativeBias",
    "RoPE",
    "Sinusoidal",
    "WindowRelativeBias",
    "XLRelativeScore",
    "alibi_slopes",
    "relative_position_index",
    "shift_relative",
    "sine_2d",
    "sinusoid_embedding",
    "sinusoidal_table",
]
