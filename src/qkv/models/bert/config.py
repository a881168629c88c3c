"""The ``encoder`` family's config: :class:`EncoderConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from qkv.models.config import (
    InitScheme,
    ModelActivation,
    PosKind,
    check_bool,
    check_choice,
    check_parameters,
    check_size,
    check_vocab,
)
from qkv.models.efficient import EfficientConfig

#: What an encoder's classification head reads (:class:`EncoderConfig` ``pooling``).
POOLINGS: tuple[str, ...] = ("cls", "mean")


@dataclass
class EncoderConfig(EfficientConfig):
    """A BERT-style encoder (Devlin et al. 2019). Defaults: BERT-base.

    Args:
        vocab_size: vocabulary.
        n_layers: encoder layers.
        max_len: longest sequence (size of the learned position table).
        type_vocab_size: token types (segments); 0 = none.
        pad_token_id: padding token, or None.
        pooler: ``tanh(W h_[CLS] + b)`` pooled output.
        mlm_head: masked-LM head (dense, activation, norm, projection to the vocabulary).
        n_classes: size of a sequence-classification head; 0 = none.
        pooling: what the classification head reads: ``"cls"`` the pooler's output
            (``BertForSequenceClassification``), ``"mean"`` the mean of the real tokens'
            final states (the sentence embedding of sentence-transformers, Reimers and
            Gurevych 2019).
        tie_embeddings: the MLM projection reuses the token embedding.
        scale_embeddings: multiply embeddings by ``sqrt(d_model)``.
        embed_norm: a norm after the embedding sum (BERT: yes).
        (other fields: :class:`~qkv.models.efficient.EfficientConfig`.)
    """

    family: ClassVar[str] = "encoder"

    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    activation: ModelActivation = "gelu"
    norm_eps: float = 1e-12
    attn_dropout: float = 0.1
    pos: PosKind = "learned"
    init: InitScheme = "normal"
    vocab_size: int = 30522
    n_layers: int = 12
    max_len: int = 512
    type_vocab_size: int = 2
    pad_token_id: int | None = 0
    pooler: bool = True
    mlm_head: bool = True
    n_classes: int = 0
    pooling: Literal["cls", "mean"] = "cls"
    tie_embeddings: bool = True
    scale_embeddings: bool = False
    embed_norm: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_vocab(self, ("n_layers",))
        check_size("type_vocab_size", self.type_vocab_size, minimum=0)
        check_bool("pooler", self.pooler)
        check_bool("mlm_head", self.mlm_head)
        check_size("n_classes", self.n_classes, minimum=0)
        check_choice("pooling", self.pooling, POOLINGS)
        if self.n_classes and self.pooling == "cls" and not self.pooler:
            raise ValueError(
                f"n_classes ({self.n_classes}) needs pooler=True with pooling='cls': it reads "
                f"the pooled output"
            )
        check_parameters(self)


__all__ = ["POOLINGS", "EncoderConfig"]
