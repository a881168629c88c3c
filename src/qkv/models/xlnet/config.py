"""The ``xlnet`` family's config: :class:`XLNetConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from qkv.models.config import (
    InitScheme,
    ModelActivation,
    Placement,
    PosKind,
    TransformerConfig,
    check_choice,
    check_parameters,
    check_vocab,
)


@dataclass
class XLNetConfig(TransformerConfig):
    """XLNet (Yang et al. 2019): a permutation language model with two-stream relative
    attention (:class:`~qkv.models.xlnet.XLNetLM`). Defaults: XLNet-base (cased).

    Its attention has no biases and Transformer-XL's relative positions always (``pos`` is
    ``"xl"``); ``bias`` concerns the feed-forward network; layers are post-norm.

    Args:
        vocab_size: vocabulary.
        n_layers: layers.
        max_len: the longest sequence a task feeds it (positions are relative: no table).
        pad_token_id: padding token, or None.
        attn_type: ``"bi"`` (bidirectional, XLNet's pretraining) or ``"uni"`` (causal).
        tie_embeddings: the head's weight is the word embedding (XLNet: always).
        scale_embeddings, embed_norm: must stay False (XLNet has neither).
        (other fields: :class:`TransformerConfig`.)
    """

    family: ClassVar[str] = "xlnet"

    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    activation: ModelActivation = "gelu"
    norm_eps: float = 1e-12
    norm_placement: Placement = "post"
    pos: PosKind = "xl"
    attn_dropout: float = 0.1
    init: InitScheme = "normal"
    vocab_size: int = 32000
    n_layers: int = 12
    max_len: int = 512
    pad_token_id: int | None = 5
    attn_type: Literal["bi", "uni"] = "bi"
    tie_embeddings: bool = True
    scale_embeddings: bool = False
    embed_norm: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_vocab(self, ("n_layers",))
        check_choice("attn_type", self.attn_type, ("bi", "uni"))
        fixed = {
            "pos": "xl",
            "norm_placement": "post",
            "n_kv_heads": None,
            "scale_embeddings": False,
            "embed_norm": False,
            "bias": True,
        }
        for name, value in fixed.items():
            if getattr(self, name) != value:
                raise ValueError(f"XLNetConfig needs {name}={value!r}, got {getattr(self, name)!r}")
        check_parameters(self)


__all__ = ["XLNetConfig"]
