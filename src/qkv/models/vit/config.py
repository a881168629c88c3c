"""The ``vit`` family's config: :class:`ViTConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from qkv.models.config import (
    InitScheme,
    ModelActivation,
    Placement,
    PosKind,
    check_parameters,
    check_size,
)
from qkv.models.efficient import EfficientConfig


@dataclass
class ViTConfig(EfficientConfig):
    """The Vision Transformer (Dosovitskiy et al. 2021). Defaults: ViT-B/16 at 224 px.

    Args:
        image_size: input height and width in pixels.
        patch_size: square patch side; must divide ``image_size``.
        in_channels: image channels.
        n_classes: classes of the classification head.
        n_layers: encoder layers.
        (other fields: :class:`~qkv.models.efficient.EfficientConfig`.)
    """

    family: ClassVar[str] = "vit"

    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    activation: ModelActivation = "gelu"
    norm_eps: float = 1e-6
    norm_placement: Placement = "pre"
    pos: PosKind = "learned"
    init: InitScheme = "normal"
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    n_classes: int = 1000
    n_layers: int = 12

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("image_size", "patch_size", "in_channels", "n_classes", "n_layers"):
            check_size(name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide image_size ({self.image_size})"
            )
        check_parameters(self)

    @property
    def n_patches(self) -> int:
        """Patches per image, ``(image_size / patch_size)^2``."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def max_len(self) -> int:
        """Sequence length: the class token plus the patches."""
        return 1 + self.n_patches


__all__ = ["ViTConfig"]
