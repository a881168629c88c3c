"""The Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words")."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qkv.models.base import TransformerModel
from qkv.models.init import init_weights
from qkv.models.parts import abs_pos_for, encoder_for
from qkv.models.vit.config import ViTConfig


class PatchEmbedding(nn.Module):
    """Split an image into non-overlapping ``p x p`` patches and project each to ``d``.

    A ``Conv2d`` with kernel and stride ``p`` is exactly the paper's linear projection of
    the flattened patches (eq. 1).

    Args:
        image_size: expected height and width.
        patch_size: patch side ``p``.
        in_channels: image channels ``c``.
        d_model: output width ``d``.
        bias: a bias on the projection (ViT: yes; CLIP: no).
    """

    def __init__(
        self, image_size: int, patch_size: int, in_channels: int, d_model: int, bias: bool = True
    ) -> None:
        super().__init__()
        self.image_size, self.patch_size = image_size, patch_size
        self.proj = nn.Conv2d(
            in_channels, d_model, kernel_size=patch_size, stride=patch_size, bias=bias
        )

    def forward(self, images: Tensor) -> Tensor:
        """``(b, c, H, W) -> (b, n_patches, d)``, patches in row-major order.

        Raises:
            ValueError: an image of the wrong shape.
        """
        size = self.image_size
        c = self.proj.in_channels
        if images.ndim != 4 or tuple(images.shape[1:]) != (c, size, size):
            raise ValueError(f"images must be (b, {c}, {size}, {size}), got {tuple(images.shape)}")
        x = self.proj(images)  # (b, d, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (b, n_patches, d)


def image_tokens(
    patch_embed: PatchEmbedding, cls_token: Tensor, pos_emb: nn.Module | None, images: Tensor
) -> Tensor:
    """ViT's input sequence (eq. 1): the class token, then the embedded patches, plus the
    positions.

    Args:
        patch_embed: the patch projection.
        cls_token: ``(1, 1, d)`` learned class token.
        pos_emb: absolute positions added to the sequence, or None.
        images: ``(b, c, H, W)``.

    Returns:
        ``(b, 1 + n_patches, d)``.
    """
    x = patch_embed(images)  # (b, n, d)
    cls = cls_token.expand(x.shape[0], -1, -1)  # (b, 1, d)
    x = torch.cat((cls, x), dim=1)  # (b, 1 + n, d)
    return x if pos_emb is None else pos_emb(x)


class ViT(TransformerModel):
    """Vision Transformer: ``head(encoder([x_cls; patches] + E_pos)[:, 0])``.

    Pre-norm encoder with a final norm, a learned class token, learned positions (other
    kinds from the config), a linear classification head (defaults: ViT-B/16).

    Modules: ``patch_embed``, ``cls_token`` (parameter ``(1, 1, d)``), ``pos_emb``,
    ``encoder``, ``head``.

    Args:
        config: a :class:`~qkv.models.config.ViTConfig`.
    """

    config: ViTConfig

    def __init__(self, config: ViTConfig) -> None:
        if not isinstance(config, ViTConfig):
            raise TypeError(f"ViT needs a ViTConfig, got {type(config).__name__}")
        super().__init__(config)
        cfg = config
        self.patch_embed = PatchEmbedding(
            cfg.image_size, cfg.patch_size, cfg.in_channels, cfg.d_model
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.pos_emb = abs_pos_for(cfg, cfg.max_len)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = encoder_for(cfg, cfg.n_layers)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)
        init_weights(self, cfg.init, std=cfg.init_std, n_layers=cfg.n_layers)
        with torch.no_grad():
            nn.init.normal_(self.cls_token, std=cfg.init_std)
        self._prune_from_config()

    def features(self, images: Tensor) -> Tensor:
        """Final hidden states.

        Args:
            images: ``(b, c, H, W)``.

        Returns:
            ``(b, 1 + n_patches, d)``; index 0 is the class token.
        """
        x = image_tokens(self.patch_embed, self.cls_token, self.pos_emb, images)  # (b, 1 + n, d)
        return self.encoder(self.dropout(x))  # (b, 1 + n, d)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``(b, n_classes)`` from the class token of :meth:`features`."""
        return self.head(self.features(images)[:, 0])  # (b, n_classes)


__all__ = ["PatchEmbedding", "ViT", "image_tokens"]
