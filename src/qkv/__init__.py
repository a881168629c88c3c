"""qkv: attention mechanisms and Transformers in PyTorch.

>>> import torch, qkv
>>> q = k = v = torch.randn(2, 4, 5, 8)  # (b, h, s, d_h)
>>> out, w = qkv.attention(q, k, v, is_causal=True, return_weights=True)
"""

from qkv import layers, masks, pos, scores
from qkv._version import __version__
from qkv.attention import KVCache, MultiHeadAttention, StaticKVCache, attention
from qkv.interop import from_hf, to_hf

__all__ = [
    "KVCache",
    "MultiHeadAttention",
    "StaticKVCache",
    "__version__",
    "attention",
    "from_hf",
    "layers",
    "masks",
    "pos",
    "scores",
    "to_hf",
]
