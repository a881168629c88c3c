"""A BERT-style bidirectional encoder (Devlin et al. 2019) with pooler and masked-LM head."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from qkv.attn.functional import MaskLike
from qkv.models.base import TransformerModel
from qkv.models.bert.config import EncoderConfig
from qkv.models.encoder import Encoder
from qkv.models.init import init_weights
from qkv.models.parts import embeddings_for, encoder_for, norm_for, token_embedding


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


# The elementwise function of each feed-forward activation (gated ones: their gate's).
_ELEMENTWISE: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,
    "silu": F.silu,
    "swiglu": F.silu,
    "geglu": F.gelu,
    "geglu_tanh": _gelu_tanh,
}


@dataclass
class EncoderOutput:
    """What :class:`EncoderModel` returns.

    Attributes:
        last_hidden_state: ``(b, s, d)`` final hidden states.
        pooled: ``(b, d)`` pooler output, or None without a pooler.
        mlm_logits: ``(b, s, vocab)`` masked-LM logits, or None without the head.
        logits: ``(b, n_classes)`` sequence-classification logits (of ``pooled`` or of the
            mean of the real tokens' states, as ``config.pooling`` says), or None without
            the head.
    """

    last_hidden_state: Tensor
    pooled: Tensor | None = None
    mlm_logits: Tensor | None = None
    logits: Tensor | None = None


class Pooler(nn.Module):
    """``tanh(W h_0 + b)``: the first ([CLS]) token's state through a dense layer."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)

    def forward(self, hidden: Tensor) -> Tensor:
        """``(b, s, d) -> (b, d)``."""
        return self.dense(hidden[:, 0]).tanh()  # (b, d)


def mean_pool(hidden: Tensor, padding_mask: Tensor | None) -> Tensor:
    """The mean of the real tokens' states: sentence-transformers' ``Pooling`` with
    ``pooling_mode_mean_tokens`` (Reimers and Gurevych 2019).

    Args:
        hidden: ``(b, s, d)`` final hidden states.
        padding_mask: ``(b, s)`` bool, True = real token; None = every token is real.

    Returns:
        ``(b, d)``; a row without real tokens is zeros.
    """
    if padding_mask is None:
        return hidden.mean(dim=1)  # (b, d)
    keep = padding_mask.unsqueeze(-1).to(hidden.dtype)  # (b, s, 1)
    return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)  # (b, d)


class MLMHead(nn.Module):
    """``decoder(norm(act(dense(h))))``: BERT's masked-LM prediction head.

    Args:
        d_model: hidden width ``d``.
        vocab_size: output vocabulary.
        activation: one of the feed-forward activation names (gated ones use their gate).
        norm: the norm after the activation.
    """

    def __init__(self, d_model: int, vocab_size: int, activation: str, norm: nn.Module) -> None:
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.activation = activation
        self._act = _ELEMENTWISE[activation]
        self.norm = norm
        self.decoder = nn.Linear(d_model, vocab_size)

    def forward(self, hidden: Tensor) -> Tensor:
        """``(b, s, d) -> (b, s, vocab)``."""
        return self.decoder(self.norm(self._act(self.dense(hidden))))  # (b, s, vocab)


class EncoderModel(TransformerModel):
    """BERT-style encoder: token, position and token-type embeddings with a norm, a
    bidirectional post-norm stack, a pooler and a masked-LM head tied to the embeddings
    (all set by the config; defaults BERT-base).

    Modules: ``embed`` (:class:`~qkv.models.embeddings.Embeddings`), ``encoder``, ``pooler``
    (or None), ``mlm_head`` (or None).

    Args:
        config: an :class:`~qkv.models.config.EncoderConfig`.
    """

    config: EncoderConfig

    def __init__(self, config: EncoderConfig) -> None:
        if not isinstance(config, EncoderConfig):
            raise TypeError(f"EncoderModel needs an EncoderConfig, got {type(config).__name__}")
        super().__init__(config)
        cfg = config
        tok = token_embedding(cfg.vocab_size, cfg, cfg.pad_token_id)
        self.embed = embeddings_for(
            cfg,
            tok,
            max_len=cfg.max_len,
            scale=cfg.scale_embeddings,
            norm=cfg.embed_norm,
            type_vocab_size=cfg.type_vocab_size,
        )
        self.encoder = encoder_for(cfg, cfg.n_layers)
        self.pooler = Pooler(cfg.d_model) if cfg.pooler else None
        self.mlm_head = (
            MLMHead(cfg.d_model, cfg.vocab_size, cfg.activation, norm_for(cfg))
            if cfg.mlm_head
            else None
        )
        self.classifier = nn.Linear(cfg.d_model, cfg.n_classes) if cfg.n_classes else None
        if self.mlm_head is not None and cfg.tie_embeddings:
            self.mlm_head.decoder.weight = tok.weight
        init_weights(self, cfg.init, std=cfg.init_std, n_layers=cfg.n_layers)
        self._prune_from_config()

    def forward(
        self,
        input_ids: Tensor,
        *,
        token_type_ids: Tensor | None = None,
        padding_mask: Tensor | None = None,
        mask: MaskLike = None,
    ) -> EncoderOutput:
        """Encode.

        Args:
            input_ids: ``(b, s)`` long.
            token_type_ids: ``(b, s)`` long segment ids; default zeros.
            padding_mask: ``(b, s)`` bool, True = real token.
            mask: an attention pattern for every layer (bool, float bias or a
                :mod:`qkv.masks` object such as ``sliding_window(w) & padding(lengths)``,
                which lets sparse backends skip the masked blocks).

        Returns:
            An :class:`EncoderOutput`.
        """
        x = self.embed(input_ids, token_type_ids=token_type_ids)  # (b, s, d)
        h = self.encoder(x, padding_mask=padding_mask, mask=mask)  # (b, s, d)
        return self._heads(h, padding_mask)

    def split_points(self) -> list[str]:
        """The modules whose outputs chain into the forward pass, in order: ``embed``, then
        each encoder layer. The first ``depth`` of them are :meth:`forward_prefix`, the rest
        :meth:`forward_from` (so a frozen prefix can run once and be cached,
        :mod:`qkv.training.prefix_cache`). Empty where the layers do not chain one state
        (reversible layers) or share parameters outside them (a learnt position bias, which
        a frozen prefix would read while it trains)."""
        bias = self.encoder.pos_bias
        if type(self.encoder) is not Encoder or (
            bias is not None and any(True for _ in bias.parameters())
        ):
            return []
        return ["embed", *(f"encoder.layers.{i}" for i in range(len(self.encoder.layers)))]

    def forward_prefix(
        self, input_ids: Tensor, *, depth: int, padding_mask: Tensor | None = None
    ) -> Tensor:
        """The states after the first ``depth`` of :meth:`split_points` (1: the embeddings).

        Args:
            input_ids: ``(b, s)`` long.
            depth: 1 to ``n_layers + 1``.
            padding_mask: ``(b, s)`` bool, True = real token.

        Returns:
            ``(b, s, d)``; rows at padded positions are meaningless.
        """
        x = self.embed(input_ids)  # (b, s, d)
        return self.encoder.forward_layers(x, 0, depth - 1, padding_mask=padding_mask)

    def forward_from(
        self, states: Tensor, *, depth: int, padding_mask: Tensor | None = None
    ) -> EncoderOutput:
        """The rest of the forward pass on :meth:`forward_prefix`'s ``(b, s, d)`` states:
        ``forward_from(forward_prefix(x, depth=k), depth=k)`` equals ``forward(x)``."""
        h = self.encoder.forward_layers(states, depth - 1, None, padding_mask=padding_mask)
        return self._heads(h, padding_mask)

    def _heads(self, h: Tensor, padding_mask: Tensor | None) -> EncoderOutput:
        """The pooler, classifier and masked-LM head on the final ``(b, s, d)`` states."""
        pooled = None if self.pooler is None else self.pooler(h)
        logits = None
        if self.classifier is not None:
            cfg = self.config
            features = pooled if cfg.pooling == "cls" else mean_pool(h, padding_mask)  # (b, d)
            logits = self.classifier(features)  # (b, n_classes)
        return EncoderOutput(
            last_hidden_state=h,
            pooled=pooled,
            mlm_logits=None if self.mlm_head is None else self.mlm_head(h),
            logits=logits,
        )
