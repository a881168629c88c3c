"""Parameter counts and the forward FLOPs per token of a config."""

from __future__ import annotations

import torch
from torch import nn

from qkv.attn.mha import MultiHeadAttention
from qkv.models import family as registry
from qkv.models.build import build
from qkv.models.config import TransformerConfig


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters, each shared (tied) tensor counted once.

    Args:
        model: any module (works on the ``meta`` device).
        trainable_only: count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _stacks(model: nn.Module) -> list[nn.Module]:
    stacks = [
        m
        for m in (getattr(model, "encoder", None), getattr(model, "decoder", None))
        if m is not None
    ]
    if not stacks:  # Swin: its blocks and patch mergings
        stacks = [
            m
            for m in (getattr(model, "layers", None), getattr(model, "merges", None))
            if m is not None
        ]
    return stacks


def non_embedding_parameters(model: nn.Module) -> int:
    """Parameters of the Transformer stacks (``encoder``/``decoder``) only: Kaplan et al.'s
    ``N``, which leaves out token, position and type embeddings, patch embeddings and the
    output heads (pooler, MLM head, classifier, an untied output projection)."""
    seen: set[int] = set()
    total = 0
    for stack in _stacks(model):
        for p in stack.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def flops_per_token(config: TransformerConfig, seq_len: int | None = None) -> int:
    """Forward-pass FLOPs per token (Kaplan et al. 2020, "Scaling Laws for Neural Language
    Models", table 1): ``C_forward = 2 N + 2 n_attn n_ctx d_attn``.

    ``N`` is :func:`non_embedding_parameters` (a multiply-add per weight is 2 FLOPs); the
    second term is the attention scores and weighted sum, with ``n_attn`` the attention
    sublayers (self and cross), ``n_ctx = seq_len`` keys each and ``d_attn = h * d_h``.
    Embedding lookups, the output projection and softmax are left out, as in the paper;
    training costs about three times this. For an encoder-decoder the count is per source
    plus target token pair with both sequences ``seq_len`` long.

    Args:
        config: any family config (the model is built on the ``meta`` device to count).
        seq_len: context length ``n_ctx``; default the config's ``max_len``.

    Returns:
        FLOPs as an int.

    Raises:
        ValueError: a non-positive ``seq_len``, or a hierarchical model (a family with
            ``per_token_flops=False``, as Swin: its stages have different token counts and
            widths, so no one count per token holds).
    """
    found = registry.family_of(config)
    if found is not None and not found.per_token_flops:
        raise ValueError(
            f"{type(config).__name__}'s stages have different token counts: no FLOPs per token"
        )
    n_ctx = config.max_len if seq_len is None else seq_len  # type: ignore[attr-defined]
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx <= 0:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    with torch.device("meta"):
        model = build(config)
    n = non_embedding_parameters(model)
    n_attn = sum(
        isinstance(m, MultiHeadAttention) for stack in _stacks(model) for m in stack.modules()
    )
    d_attn = config.n_heads * config.resolved_head_dim
    return 2 * n + 2 * n_attn * n_ctx * d_attn
