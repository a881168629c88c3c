"""CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision"): an image tower and a text tower, each projected into one embedding space, and
a learned temperature.

* Image tower (:class:`CLIPVisionTower`): ViT patches (:class:`~qkv.models.vit.PatchEmbedding`
  without a bias), a class token and learned positions, a norm *before* the first layer (the
  one place CLIP's ViT differs from Dosovitskiy et al.'s), a pre-norm encoder with a final norm;
  the image is its class token's state.
* Text tower (:class:`CLIPTextTower`): token and learned position embeddings, a pre-norm
  encoder under a causal mask (CLIP's text Transformer is GPT-2-like, sec. 2.4) with a final
  norm; the text is the state of its first end-of-text token.
* Both go through bias-free linear projections to ``embed_dim`` and are L2-normalized; the
  logits are their cosine similarities times ``exp(logit_scale)``, a learned scalar clamped
  at ``max_logit_scale`` (100) as in the paper (sec. 2.5). The symmetric contrastive loss is
  :func:`qkv.training.contrastive.contrastive_loss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv import masks
from qkv.models.base import TransformerModel
from qkv.models.clip.config import CLIPConfig
from qkv.models.init import init_weights
from qkv.models.parts import abs_pos_for, embeddings_for, encoder_for, norm_for, token_embedding
from qkv.models.vit import PatchEmbedding
from qkv.models.vit.config import ViTConfig


@dataclass
class CLIPOutput:
    """What :class:`CLIP` computes for a batch of images and texts.

    Attributes:
        logits_per_image: ``(b_img, b_txt)`` scaled cosine similarities.
        logits_per_text: ``(b_txt, b_img)``, the transpose.
        image_embeds: ``(b_img, embed_dim)`` L2-normalized.
        text_embeds: ``(b_txt, embed_dim)`` L2-normalized.
    """

    logits_per_image: Tensor
    logits_per_text: Tensor
    image_embeds: Tensor
    text_embeds: Tensor


class CLIPVisionTower(nn.Module):
    """CLIP's ViT: ``final_norm(encoder(pre_norm([x_cls; patches] + E_pos)))``.

    Modules: ``patch_embed``, ``cls_token`` (``(1, 1, d_v)``), ``pos_emb``, ``pre_norm``,
    ``encoder`` (its ``norm`` is CLIP's ``post_layernorm``).

    Args:
        cfg: the tower as a :class:`~qkv.models.config.ViTConfig` (``vision_config()`` of a
            :class:`~qkv.models.config.CLIPConfig` or :class:`~qkv.models.config.LlavaConfig`).
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbedding(
            cfg.image_size, cfg.patch_size, cfg.in_channels, cfg.d_model, bias=False
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.pos_emb = abs_pos_for(cfg, cfg.max_len)
        self.dropout = nn.Dropout(cfg.dropout)
        self.pre_norm = norm_for(cfg)
        self.encoder = encoder_for(cfg, cfg.n_layers)

    def forward(self, images: Tensor) -> Tensor:
        """``(b, c, H, W) -> (b, 1 + n_patches, d_v)`` final states; index 0 is the class
        token."""
        x = self.patch_embed(images)  # (b, n, d_v)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (b, 1, d_v)
        x = self.pos_emb(torch.cat((cls, x), dim=1))  # (b, 1 + n, d_v)
        return self.encoder(self.pre_norm(self.dropout(x)))  # (b, 1 + n, d_v)


class CLIPTextTower(nn.Module):
    """CLIP's text Transformer: causal, pre-norm, read at the first end-of-text token.

    Modules: ``embed`` (token + learned positions), ``encoder`` (its ``norm`` is CLIP's
    ``final_layer_norm``).

    Args:
        config: the model's :class:`~qkv.models.config.CLIPConfig`.
    """

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        tok = token_embedding(config.vocab_size, config, config.pad_token_id)
        self.embed = embeddings_for(config, tok, max_len=config.max_len, scale=False, norm=False)
        self.encoder = encoder_for(config, config.n_layers)
        self.causal = masks.causal()

    def forward(self, input_ids: Tensor, *, padding_mask: Tensor | None = None) -> Tensor:
        """``(b, s)`` ids -> ``(b, s, d)`` final states (each token sees itself and the
        tokens before it; padded keys are never attended)."""
        x = self.embed(input_ids)  # (b, s, d)
        return self.encoder(x, padding_mask=padding_mask, mask=self.causal)  # (b, s, d)


def eos_positions(input_ids: Tensor, eos_token_id: int) -> Tensor:
    """The position of each text's first ``eos_token_id``.

    Raises:
        ValueError: a text without one (its embedding would be undefined).
    """
    is_eos = input_ids == eos_token_id  # (b, s)
    if not bool(is_eos.any(-1).all()):
        missing = (~is_eos.any(-1)).nonzero().flatten().tolist()
        raise ValueError(f"texts {missing} hold no end-of-text token ({eos_token_id})")
    return is_eos.int().argmax(-1)  # (b,)


class CLIP(TransformerModel):
    """CLIP: see the module docstring.

    Modules: ``vision`` (:class:`CLIPVisionTower`), ``text`` (:class:`CLIPTextTower`),
    ``visual_projection`` and ``text_projection`` (bias-free), ``logit_scale`` (a scalar
    parameter, the log of the inverse temperature).

    Args:
        config: a :class:`~qkv.models.config.CLIPConfig`.
    """

    config: CLIPConfig

    def __init__(self, config: CLIPConfig) -> None:
        if not isinstance(config, CLIPConfig):
            raise TypeError(f"CLIP needs a CLIPConfig, got {type(config).__name__}")
        super().__init__(config)
        cfg = config
        self.vision = CLIPVisionTower(cfg.vision_config())
        self.text = CLIPTextTower(cfg)
        self.visual_projection = nn.Linear(cfg.vision_d_model, cfg.embed_dim, bias=False)
        self.text_projection = nn.Linear(cfg.d_model, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))
        init_weights(self, cfg.init, std=cfg.init_std, n_layers=cfg.n_layers)
        with torch.no_grad():
            nn.init.normal_(self.vision.cls_token, std=cfg.init_std)
            self.logit_scale.fill_(cfg.logit_scale_init)

    def image_features(self, images: Tensor) -> Tensor:
        """Projected, unnormalized image embeddings ``(b, embed_dim)`` (``transformers``'
        ``get_image_features``)."""
        return self.visual_projection(self.vision(images)[:, 0])  # (b, embed_dim)

    def text_features(self, input_ids: Tensor, *, padding_mask: Tensor | None = None) -> Tensor:
        """Projected, unnormalized text embeddings ``(b, embed_dim)``, read at each text's
        first end-of-text token.

        Raises:
            ValueError: a text without an end-of-text token.
        """
        states = self.text(input_ids, padding_mask=padding_mask)  # (b, s, d)
        eos = eos_positions(input_ids, self.config.eos_token_id)  # (b,)
        pooled = states[torch.arange(states.shape[0], device=states.device), eos]  # (b, d)
        return self.text_projection(pooled)  # (b, embed_dim)

    def scale(self) -> Tensor:
        """``exp(logit_scale)``, clamped at ``max_logit_scale`` (the paper's clip of the
        temperature, applied here so a gradient never pushes it past the bound)."""
        return self.logit_scale.clamp(max=math.log(self.config.max_logit_scale)).exp()

    def similarity(self, image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
        """Scaled cosine similarities ``(b_img, b_txt)`` of two sets of embeddings (normalized
        here, so the features of :meth:`image_features` and :meth:`text_features` do)."""
        img = F.normalize(image_embeds, dim=-1)
        txt = F.normalize(text_embeds, dim=-1)
        return self.scale() * img @ txt.T  # (b_img, b_txt)

    def forward(
        self, images: Tensor, input_ids: Tensor, *, padding_mask: Tensor | None = None
    ) -> CLIPOutput:
        """Embed images ``(b_img, c, H, W)`` and texts ``(b_txt, s)`` and compare them all.

        Raises:
            ValueError: a text without an end-of-text token, or images of the wrong shape.
        """
        img = F.normalize(self.image_features(images), dim=-1)  # (b_img, e)
        txt = F.normalize(self.text_features(input_ids, padding_mask=padding_mask), dim=-1)
        logits = self.scale() * img @ txt.T  # (b_img, b_txt)
        return CLIPOutput(logits, logits.T, img, txt)


__all__ = ["CLIP", "CLIPOutput", "CLIPTextTower", "CLIPVisionTower", "eos_positions"]
