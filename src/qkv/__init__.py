"""qkv: attention mechanisms and Transformers in PyTorch.

>>> import torch, qkv
>>> q = k = v = torch.randn(2, 4, 5, 8)  # (b, h, s, d_h)
>>> out, w = qkv.attention(q, k, v, is_causal=True, return_weights=True)
"""

from qkv import layers, masks, pos, scores
from qkv._version import __version__
from qkv.attention import KVCache, MultiHeadAttention, StaticKVCache, attention

__all__ = [
    "KVCache",
    "MultiHeadAttention",
    "StaticKVCache",
    "__version__",
    "attention",
    "layers",
    "masks",
    "pos",
    "scores",
]
