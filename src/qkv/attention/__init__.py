"""Functional attention, score functions, multi-head attention and KV caches."""

from qkv.attention import blocksparse as blocksparse  # registers "blocksparse"
from qkv.attention import flex as flex  # registers "flex"
from qkv.attention.functional import (
    Backend,
    Problem,
    attention,
    attention_weights,
    available_backends,
    make_problem,
    pick_backend,
    register_backend,
    safe_softmax,
)
from qkv.attention.kv_cache import KVCache, StaticKVCache
from qkv.attention.mha import MultiHeadAttention
from qkv.attention.scores import Additive, Bilinear

__all__ = [
    "Additive",
    "Backend",
    "Bilinear",
    "KVCache",
    "MultiHeadAttention",
    "Problem",
    "StaticKVCache",
    "attention",
    "attention_weights",
    "available_backends",
    "make_problem",
    "pick_backend",
    "register_backend",
    "safe_softmax",
]
