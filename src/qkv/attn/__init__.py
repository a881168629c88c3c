"""Functional attention, score functions, multi-head attention and KV caches."""

from qkv.attn import blocksparse as blocksparse  # registers "blocksparse"
from qkv.attn import flex as flex  # registers "flex"
from qkv.attn.functional import (
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
from qkv.attn.kv_cache import CrossKVCache, KVCache
from qkv.attn.mha import MultiHeadAttention
from qkv.attn.scores import Additive, Bilinear

__all__ = [
    "Additive",
    "Backend",
    "Bilinear",
    "CrossKVCache",
    "KVCache",
    "MultiHeadAttention",
    "Problem",
    "attention",
    "attention_weights",
    "available_backends",
    "make_problem",
    "pick_backend",
    "register_backend",
    "safe_softmax",
]
