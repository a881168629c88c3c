"""A LLaVA-style vision-language model (Liu et al. 2023, "Visual Instruction Tuning"; the
two-layer projector of LLaVA-1.5, Liu et al. 2024).

A CLIP image tower (:class:`~qkv.models.clip.CLIPVisionTower`) reads the image; its patch
states (the class token left out) go through a two-layer MLP into the language model's
width and become the first tokens of a decoder-only language model
(:class:`~qkv.models.lm.DecoderLM`), followed by the text. Everything is causal, so the image
tokens see only each other and every text token sees the whole image and the text before it.

Text may be padded on either side: positions count real tokens only
(:func:`~qkv.models.lm.positions_from_mask` over ``[image; text]``), so a left-padded
question gets the positions it would get alone, which batched greedy decoding relies on.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qkv.models.base import TransformerModel
from qkv.models.clip import CLIPVisionTower
from qkv.models.init import init_weights
from qkv.models.llava.config import LlavaConfig
from qkv.models.lm import DecoderLM, positions_from_mask


class Projector(nn.Module):
    """LLaVA-1.5's projector: ``fc2(gelu(fc1(x)))`` from the image width to the LM's.

    Args:
        d_in: image-tower width.
        d_out: language-model width.
    """

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_out)
        self.fc2 = nn.Linear(d_out, d_out)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d_in) -> (..., d_out)``."""
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class Llava(TransformerModel):
    """Image tokens as a prefix of a decoder-only language model: see the module docstring.

    Modules: ``vision`` (:class:`~qkv.models.clip.CLIPVisionTower`), ``projector``
    (:class:`Projector`), ``lm`` (:class:`~qkv.models.lm.DecoderLM`; its self-attention
    sits at ``lm.decoder.layers.N.self_attn``).

    Args:
        config: a :class:`~qkv.models.config.LlavaConfig`.
    """

    config: LlavaConfig

    def __init__(self, config: LlavaConfig) -> None:
        if not isinstance(config, LlavaConfig):
            raise TypeError(f"Llava needs a LlavaConfig, got {type(config).__name__}")
        super().__init__(config)
        cfg = config
        self.vision = CLIPVisionTower(cfg.vision_config())
        self.projector = Projector(cfg.vision_d_model, cfg.d_model)
        self.lm = DecoderLM(cfg.lm_config())
        # the language model initialized itself (its own scheme); the rest as a ViT
        init_weights(self.vision, cfg.init, std=cfg.init_std, n_layers=cfg.vision_n_layers)
        init_weights(self.projector, "normal", std=cfg.init_std)
        with torch.no_grad():
            nn.init.normal_(self.vision.cls_token, std=cfg.init_std)

    def image_tokens(self, images: Tensor) -> Tensor:
        """``(b, c, H, W) -> (b, n_patches, d)``: projected patch states (no class token)."""
        return self.projector(self.vision(images)[:, 1:])  # (b, n, d)

    def forward(
        self,
        images: Tensor | None,
        input_ids: Tensor,
        *,
        padding_mask: Tensor | None = None,
        image_tokens: Tensor | None = None,
    ) -> Tensor:
        """Next-token logits of the text after the image.

        Args:
            images: ``(b, c, H, W)``, or None when ``image_tokens`` are given.
            input_ids: ``(b, s)`` text ids.
            padding_mask: ``(b, s)`` bool over the text, True = real token (padding on
                either side); default all real.
            image_tokens: the :meth:`image_tokens` of the images, computed once (decoding
                re-reads them every step).

        Returns:
            ``(b, s, vocab)``: position ``t`` predicts text token ``t + 1``.

        Raises:
            ValueError: neither images nor image tokens, or more tokens than ``max_len``.
        """
        if image_tokens is None:
            if images is None:
                raise ValueError("Llava needs images or image_tokens")
            image_tokens = self.image_tokens(images)
        b, n, _ = image_tokens.shape
        s = input_ids.shape[1]
        if n + s > self.config.max_len:
            raise ValueError(
                f"{n} image tokens + {s} text tokens exceed max_len ({self.config.max_len})"
            )
        if padding_mask is None:
            padding_mask = torch.ones_like(input_ids, dtype=torch.bool)
        image_mask = torch.ones(b, n, dtype=torch.bool, device=input_ids.device)
        mask = torch.cat((image_mask, padding_mask), dim=1)  # (b, n + s)
        positions = positions_from_mask(mask, n + s)  # (b, n + s)
        lm = self.lm
        pos_emb = lm.embed.pos_emb
        img = image_tokens if pos_emb is None else pos_emb(image_tokens, positions[:, :n])
        txt = lm.embed(input_ids, positions=positions[:, n:])  # (b, s, d)
        x = torch.cat((img, txt), dim=1)  # (b, n + s, d)
        x = lm.decoder(x, padding_mask=mask, positions=positions)  # (b, n + s, d)
        return lm.lm_head(x[:, n:])  # (b, s, vocab)


__all__ = ["Llava", "Projector"]
