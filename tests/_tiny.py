"""Tiny models and inputs shared by the interpretability tests, as the ``tiny`` fixture."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import qkv.models as M

SMALL: dict[str, Any] = {
    "d_model": 32,
    "n_heads": 4,
    "d_ff": 64,
    "dropout": 0.0,
    "attn_dropout": 0.0,
}


class Tiny:
    """Builders of tiny, dropout-free models of every family, in eval mode."""

    FAMILIES = ("bert", "lm", "seq2seq", "vit")

    @staticmethod
    def seq2seq(**kw: Any) -> M.Seq2SeqTransformer:
        cfg = M.Seq2SeqConfig(
            **{
                **SMALL,
                "vocab_size": 50,
                "n_encoder_layers": 2,
                "n_decoder_layers": 2,
                "max_len": 64,
                **kw,
            }
        )
        return M.Seq2SeqTransformer(cfg).eval()

    @staticmethod
    def lm(**kw: Any) -> M.DecoderLM:
        cfg = M.LMConfig(**{**SMALL, "vocab_size": 50, "n_layers": 2, "max_len": 1024, **kw})
        return M.DecoderLM(cfg).eval()

    @staticmethod
    def bert(**kw: Any) -> M.EncoderModel:
        cfg = M.EncoderConfig(**{**SMALL, "vocab_size": 50, "n_layers": 2, "max_len": 64, **kw})
        return M.EncoderModel(cfg).eval()

    @staticmethod
    def vit(**kw: Any) -> M.ViT:
        cfg = M.ViTConfig(
            **{**SMALL, "image_size": 16, "patch_size": 4, "n_classes": 5, "n_layers": 2, **kw}
        )
        return M.ViT(cfg).eval()

    @staticmethod
    def run(model: nn.Module, batch: int = 2, seed: int = 0) -> Any:
        """One forward pass of any qkv model family on fixed random inputs."""
        g = torch.Generator().manual_seed(seed)
        if isinstance(model, M.Seq2SeqTransformer):
            src = torch.randint(4, 50, (batch, 7), generator=g)
            tgt = torch.randint(4, 50, (batch, 5), generator=g)
            src_padding_mask = torch.ones(batch, 7, dtype=torch.bool)
            src_padding_mask[-1, 5:] = False  # one padded source
            return model(src, tgt, src_padding_mask=src_padding_mask)
        if isinstance(model, M.DecoderLM):
            return model(torch.randint(0, 50, (batch, 9), generator=g))
        if isinstance(model, M.EncoderModel):
            ids = torch.randint(1, 50, (batch, 8), generator=g)
            mask = torch.ones(batch, 8, dtype=torch.bool)
            mask[-1, 6:] = False
            return model(ids, padding_mask=mask).last_hidden_state
        if isinstance(model, M.ViT):
            return model(torch.randn(batch, 3, 16, 16, generator=g))
        raise TypeError(type(model).__name__)

    @classmethod
    def family(cls, name: str) -> nn.Module:
        return getattr(cls, name)()
