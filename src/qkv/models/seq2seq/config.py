"""The ``seq2seq`` family's config: :class:`Seq2SeqConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from qkv.models.config import (
    check_bool,
    check_parameters,
    check_range,
    check_size,
    check_vocab,
)
from qkv.models.efficient import EfficientConfig, check_causal


@dataclass
class Seq2SeqConfig(EfficientConfig):
    """The encoder-decoder Transformer (Vaswani et al. 2017). Defaults: the base model.

    Args:
        vocab_size: source vocabulary (the shared one when ``share_embeddings``).
        tgt_vocab_size: target vocabulary; None = ``vocab_size``.
        n_encoder_layers: encoder layers ``N``.
        n_decoder_layers: decoder layers ``N``.
        max_len: longest sequence (size of learned/sinusoidal tables).
        pad_token_id: padding token (its embedding row starts at zero, gets no gradient).
        share_embeddings: one embedding matrix for source and target (sec. 3.4).
        tie_embeddings: the output projection reuses the target embedding.
        scale_embeddings: multiply embeddings by ``sqrt(d_model)`` (sec. 3.4).
        embed_norm: a norm after the embedding sum (BART's ``layernorm_embedding``).
        output_bias: a bias on the output projection (BART's and Marian's
            ``final_logits_bias``).
        output_scale: multiplier of the decoder output before the output projection (T5
            with tied embeddings: ``d_model ** -0.5``).
        (other fields: :class:`~qkv.models.efficient.EfficientConfig`.)
    """

    family: ClassVar[str] = "seq2seq"

    vocab_size: int = 37000
    tgt_vocab_size: int | None = None
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    max_len: int = 1024
    pad_token_id: int | None = None
    share_embeddings: bool = True
    tie_embeddings: bool = True
    scale_embeddings: bool = True
    embed_norm: bool = False
    output_bias: bool = False
    output_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_vocab(self, ("n_encoder_layers", "n_decoder_layers"))
        if self.reversible:
            raise ValueError(
                "reversible=True is for stacks without cross-attention (lm, encoder, vit), not "
                "Seq2SeqConfig"
            )
        check_causal(self)
        check_bool("share_embeddings", self.share_embeddings)
        check_bool("output_bias", self.output_bias)
        check_range("output_scale", self.output_scale, lo=0.0)
        if self.output_scale <= 0:
            raise ValueError(f"output_scale must be > 0, got {self.output_scale!r}")
        if self.tgt_vocab_size is not None:
            check_size("tgt_vocab_size", self.tgt_vocab_size)
            if self.share_embeddings and self.tgt_vocab_size != self.vocab_size:
                raise ValueError(
                    f"share_embeddings needs tgt_vocab_size ({self.tgt_vocab_size}) == "
                    f"vocab_size ({self.vocab_size})"
                )
            if self.pad_token_id is not None and self.pad_token_id >= self.tgt_vocab_size:
                raise ValueError(
                    f"pad_token_id ({self.pad_token_id}) must be < tgt_vocab_size "
                    f"({self.tgt_vocab_size})"
                )
        check_parameters(self)

    @property
    def target_vocab(self) -> int:
        """Target vocabulary size."""
        return self.vocab_size if self.tgt_vocab_size is None else self.tgt_vocab_size


__all__ = ["Seq2SeqConfig"]
