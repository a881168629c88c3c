"""Functional attention, score functions, multi-head attention and KV caches."""

from qkv.attn import blocksparse as blocksparse  # registers "blocksparse"
from qkv.attn import flex as flex  # registers "flex"
from qkv.attn.approx import ApproxError, approximation_error
from qkv.attn.favor import FavorAttention, favor_attention, linear_attention, orthogonal_gaussian
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
from qkv.attn.linformer import LinformerAttention, linformer_attention
from qkv.attn.lsh import LSHSelfAttention, lsh_attention
from qkv.attn.mha import MultiHeadAttention
from qkv.attn.scores import Additive, Bilinear

__all__ = [
    "Additive",
    "ApproxError",
    "Backend",
    "Bilinear",
    "CrossKVCache",
    "FavorAttention",
    "KVCache",
    "LSHSelfAttention",
    "LinformerAttention",
    "MultiHeadAttention",
    "Problem",
    "approximation_error",
    "attention",
    "attention_weights",
    "available_backends",
    "favor_attention",
    "linear_attention",
    "linformer_attention",
    "lsh_attention",
    "make_problem",
    "orthogonal_gaussian",
    "pick_backend",
    "register_backend",
    "safe_softmax",
]
