"""The ``llava`` family's config: :class:`LlavaConfig`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from qkv.models.clip.config import check_vision_tower, vision_tower_config
from qkv.models.lm.config import LMConfig
from qkv.models.vit.config import ViTConfig


@dataclass
class LlavaConfig(LMConfig):
    """A LLaVA-style vision-language model (Liu et al. 2023, "Visual Instruction Tuning"): a
    CLIP image tower whose patch states, projected by a two-layer MLP, are the first tokens
    of a decoder-only language model. The :class:`LMConfig` fields describe the language
    model; the ``vision_*`` fields the image tower (as :class:`CLIPConfig`'s). ``max_len``
    covers the image tokens and the text.

    Args:
        image_size: input height and width in pixels.
        patch_size: square patch side; must divide ``image_size``.
        in_channels: image channels.
        vision_d_model: image-tower width.
        vision_n_heads: image-tower heads.
        vision_d_ff: image-tower feed-forward width.
        vision_n_layers: image-tower layers.
        (other fields: :class:`LMConfig`.)

    Raises:
        ValueError: Transformer-XL memory, sliding windows or segments (the image prefix
            is one block), or ``max_len`` not above the patch count.
    """

    family: ClassVar[str] = "llava"

    image_size: int = 224
    patch_size: int = 14
    in_channels: int = 3
    vision_d_model: int = 1024
    vision_n_heads: int = 16
    vision_d_ff: int = 4096
    vision_n_layers: int = 24

    def __post_init__(self) -> None:
        # before LMConfig's checks, which end by measuring the whole model, image tower
        # included: a tower of vision_n_layers=None must be refused, not measured
        check_vision_tower(self, "LlavaConfig")
        for name in ("mem_len", "segment_len", "sliding_window"):
            if getattr(self, name):
                raise ValueError(f"LlavaConfig needs {name}=0, got {getattr(self, name)}")
        super().__post_init__()
        if self.max_len <= self.n_patches:
            raise ValueError(
                f"max_len ({self.max_len}) must exceed the {self.n_patches} image tokens"
            )

    @property
    def n_patches(self) -> int:
        """Image tokens, ``(image_size / patch_size)^2``."""
        return (self.image_size // self.patch_size) ** 2

    def vision_config(self) -> ViTConfig:
        """The image tower as a :class:`ViTConfig` (its classification head is not built)."""
        return vision_tower_config(self)

    def lm_config(self) -> LMConfig:
        """The language model's own :class:`LMConfig`."""
        fields = {f.name for f in dataclasses.fields(LMConfig)}
        return LMConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in fields})


__all__ = ["LlavaConfig"]
