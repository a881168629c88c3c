"""The ``lm`` family's config: :class:`LMConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from qkv.models.config import (
    InitScheme,
    ModelActivation,
    Placement,
    PosKind,
    check_parameters,
    check_size,
    check_vocab,
)
from qkv.models.efficient import EfficientConfig, check_causal


@dataclass
class LMConfig(EfficientConfig):
    """A decoder-only language model (GPT-2, Radford et al. 2019). Defaults: GPT-2 small.

    Args:
        vocab_size: vocabulary.
        n_layers: decoder layers.
        max_len: context length (size of the learned position table).
        pad_token_id: padding token, or None.
        tie_embeddings: output projection = token embedding (GPT-2).
        scale_embeddings: multiply embeddings by ``sqrt(d_model)``.
        embed_norm: a norm after the embedding sum.
        mem_len: Transformer-XL memory: states per layer cached from the previous segment
            (Dai et al. 2019; needs ``pos="xl"``); 0 = none.
        segment_len: Transformer-XL segments: a longer input is run this many tokens at a
            time, each segment attending to the memory of the ones before (needs
            ``mem_len``); 0 = the whole input at once.
        sliding_window: causal local attention (Mistral's ``sliding_window``): each token
            sees itself and the ``sliding_window - 1`` tokens before it
            (:func:`qkv.masks.sliding_window`, block-sparse with ``attn_backend="auto"`` or
            ``"blocksparse"``); 0 = all earlier tokens.
        (other fields: :class:`~qkv.models.efficient.EfficientConfig`.)
    """

    family: ClassVar[str] = "lm"

    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    activation: ModelActivation = "gelu_tanh"
    norm_placement: Placement = "pre"
    attn_dropout: float = 0.1
    pos: PosKind = "learned"
    init: InitScheme = "gpt2"
    vocab_size: int = 50257
    n_layers: int = 12
    max_len: int = 1024
    pad_token_id: int | None = None
    tie_embeddings: bool = True
    scale_embeddings: bool = False
    embed_norm: bool = False
    mem_len: int = 0
    segment_len: int = 0
    sliding_window: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_vocab(self, ("n_layers",))
        check_causal(self)
        check_size("mem_len", self.mem_len, minimum=0)
        check_size("segment_len", self.segment_len, minimum=0)
        check_size("sliding_window", self.sliding_window, minimum=0)
        if self.sliding_window and (self.attn_kind != "softmax" or self.mem_len):
            raise ValueError(
                f"sliding_window={self.sliding_window} is a mask on softmax attention: not "
                f"with attn_kind={self.attn_kind!r} or mem_len={self.mem_len}"
            )
        if self.mem_len and self.pos != "xl":
            raise ValueError(
                f"mem_len={self.mem_len} needs pos='xl' (cached states keep their meaning "
                f"only with relative positions), got pos={self.pos!r}"
            )
        if self.segment_len and not self.mem_len:
            raise ValueError(f"segment_len={self.segment_len} needs mem_len > 0")
        if self.mem_len and self.reversible:
            raise ValueError("mem_len (Transformer-XL) and reversible=True do not combine")
        check_parameters(self)


__all__ = ["LMConfig"]
