"""An image captioner: a ViT encoder reads the image, a Transformer decoder writes the
caption with cross-attention over the patches ("Show, Attend and Tell", Xu et al. 2015, with
Transformers in place of the CNN and the LSTM). The layout is ``transformers``'
``VisionEncoderDecoderModel`` with a ViT encoder and a GPT-2 decoder
(:mod:`qkv.interop.hf.vision_encoder_decoder` converts both ways).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qkv.layers.head import OutputHead
from qkv.models.base import GenerativeModel
from qkv.models.captioner.config import CaptionerConfig
from qkv.models.init import init_weights
from qkv.models.parts import abs_pos_for, decoder_for, embeddings_for, encoder_for, token_embedding
from qkv.models.seq2seq import CrossDecoding
from qkv.models.vit import PatchEmbedding, image_tokens


class Captioner(CrossDecoding, GenerativeModel):
    """ViT encoder + causal decoder with cross-attention over every encoder state.

    ``memory = ViT(image)`` (class token and patches after the final norm, ``(b, 1 + n, d)``);
    ``logits = W_out decoder(E(y), memory)``. Teacher-forced by :meth:`forward`, decoded by
    :meth:`~qkv.models.base.GenerativeModel.generate` (greedy, sampling, beam search) with
    the image batch as the source.

    Modules: ``patch_embed``, ``cls_token`` (parameter ``(1, 1, d)``), ``pos_emb`` and
    ``encoder`` (as :class:`~qkv.models.ViT`'s), ``tgt_embed``, ``decoder`` (with
    ``cross_attn`` in each layer), ``lm_head``.

    Args:
        config: a :class:`~qkv.models.config.CaptionerConfig`.
    """

    config: CaptionerConfig

    def __init__(self, config: CaptionerConfig) -> None:
        if not isinstance(config, CaptionerConfig):
            raise TypeError(f"Captioner needs a CaptionerConfig, got {type(config).__name__}")
        super().__init__(config)
        cfg = config
        self.patch_embed = PatchEmbedding(
            cfg.image_size, cfg.patch_size, cfg.in_channels, cfg.d_model
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.pos_emb = abs_pos_for(cfg, 1 + cfg.n_patches)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = encoder_for(cfg, cfg.n_encoder_layers)
        tok = token_embedding(cfg.vocab_size, cfg, cfg.pad_token_id)
        self.tgt_embed = embeddings_for(cfg, tok, max_len=cfg.max_len, scale=False, norm=False)
        self.decoder = decoder_for(cfg, cfg.n_decoder_layers, cross_attention=True)
        self.lm_head = OutputHead(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = tok.weight
        init_weights(self, cfg.init, std=cfg.init_std, n_layers=cfg.n_layers)
        with torch.no_grad():
            nn.init.normal_(self.cls_token, std=cfg.init_std)
        self._prune_from_config()

    def encode(self, src: Tensor, src_padding_mask: Tensor | None = None) -> Tensor:
        """Encode images.

        Args:
            src: ``(b, c, H, W)`` images.
            src_padding_mask: must be None (every patch is real).

        Returns:
            memory ``(b, 1 + n_patches, d)``: the class token, then the patches row by row.

        Raises:
            ValueError: a padding mask, or an image of the wrong shape.
        """
        if src_padding_mask is not None:
            raise ValueError("an image has no padding: src_padding_mask must be None")
        x = image_tokens(self.patch_embed, self.cls_token, self.pos_emb, src)  # (b, 1 + n, d)
        return self.encoder(self.dropout(x))  # (b, 1 + n, d)

    def forward(
        self, images: Tensor, tgt_in: Tensor, *, tgt_padding_mask: Tensor | None = None
    ) -> Tensor:
        """Teacher-forced logits.

        Args:
            images: ``(b, c, H, W)``.
            tgt_in: ``(b, s)`` long decoder inputs (BOS, then the caption shifted right).
            tgt_padding_mask: ``(b, s)`` bool, True = real token.

        Returns:
            logits ``(b, s, vocab_size)``.
        """
        return self.decode(tgt_in, self.encode(images), tgt_padding_mask=tgt_padding_mask)


__all__ = ["Captioner"]
