"""The Vision Transformer (Dosovitskiy et al. 2021): its config, its modules and its :class:`~qkv.models.family.Family` record."""

from qkv.models.family import Family, register
from qkv.models.vit.config import ViTConfig
from qkv.models.vit.model import PatchEmbedding, ViT, image_tokens
from qkv.models.vit.presets import PRESETS

FAMILY = register(
    Family(
        name="vit",
        config_class=ViTConfig,
        model_class=ViT,
        objective="classification",
        hf="vit",
        presets=PRESETS,
        default_preset="vit-b16",
        summary="the Vision Transformer (Dosovitskiy et al. 2021)",
        depth_fields=("n_layers",),
    )
)

__all__ = ["FAMILY", "PatchEmbedding", "ViT", "ViTConfig", "image_tokens"]
