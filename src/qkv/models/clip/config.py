"""The ``clip`` family's config: :class:`CLIPConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from qkv.models.config import (
    InitScheme,
    ModelActivation,
    Placement,
    PosKind,
    TransformerConfig,
    check_parameters,
    check_range,
    check_size,
    check_vision_stack,
)
from qkv.models.vit.config import ViTConfig


@dataclass
class CLIPConfig(TransformerConfig):
    """CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
    Supervision"): an image tower and a text tower projected into one embedding space.

    The shared fields (:class:`TransformerConfig`) describe the text tower, a causal pre-norm
    Transformer read at its end-of-text token; the ``vision_*`` fields the image tower, a
    pre-norm ViT with a norm before its first layer, read at its class token. Both towers
    share the activation, norms, dropouts and initialization. Defaults: ViT-B/32 CLIP.

    Args:
        vocab_size: text vocabulary.
        n_layers: text-tower layers.
        max_len: longest text in tokens (size of the text position table).
        eos_token_id: the end-of-text token; the text embedding is the first one's state.
        pad_token_id: padding token, or None.
        image_size: input height and width in pixels.
        patch_size: square patch side; must divide ``image_size``.
        in_channels: image channels.
        vision_d_model: image-tower width.
        vision_n_heads: image-tower heads.
        vision_d_ff: image-tower feed-forward width.
        vision_n_layers: image-tower layers.
        embed_dim: width of the shared embedding space (the projections' output).
        logit_scale_init: initial ``log`` of the temperature's inverse, ``ln(1 / 0.07)``.
        max_logit_scale: the scale is clamped to at most this (100 in CLIP, sec. 2.5).
        (other fields: :class:`TransformerConfig`.)
    """

    family: ClassVar[str] = "clip"

    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 2048
    activation: ModelActivation = "quick_gelu"
    norm_placement: Placement = "pre"
    dropout: float = 0.0
    pos: PosKind = "learned"
    init: InitScheme = "normal"
    vocab_size: int = 49408
    n_layers: int = 12
    max_len: int = 77
    eos_token_id: int = 49407
    pad_token_id: int | None = None
    image_size: int = 224
    patch_size: int = 32
    in_channels: int = 3
    vision_d_model: int = 768
    vision_n_heads: int = 12
    vision_d_ff: int = 3072
    vision_n_layers: int = 12
    embed_dim: int = 512
    logit_scale_init: float = 2.6592
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("vocab_size", "max_len", "n_layers", "vision_n_layers"):
            check_size(name, getattr(self, name))
        if self.pad_token_id is not None:
            check_size("pad_token_id", self.pad_token_id, minimum=0)
            if self.pad_token_id >= self.vocab_size:
                raise ValueError(
                    f"pad_token_id ({self.pad_token_id}) must be < vocab_size ({self.vocab_size})"
                )
        check_vision_tower(self, "CLIPConfig")
        check_size("embed_dim", self.embed_dim)
        check_size("eos_token_id", self.eos_token_id, minimum=0)
        if self.eos_token_id >= self.vocab_size:
            raise ValueError(
                f"eos_token_id ({self.eos_token_id}) must be < vocab_size ({self.vocab_size})"
            )
        check_range("logit_scale_init", self.logit_scale_init, lo=-1e3, hi=1e3)
        check_range("max_logit_scale", self.max_logit_scale, lo=0.0)
        if self.max_logit_scale <= 1.0:
            raise ValueError(f"max_logit_scale must be > 1, got {self.max_logit_scale!r}")
        if self.norm_placement != "pre" or self.pos != "learned":
            raise ValueError(
                f"CLIPConfig needs norm_placement='pre' and pos='learned', got "
                f"{self.norm_placement!r} and {self.pos!r}"
            )
        check_parameters(self)

    @property
    def n_patches(self) -> int:
        """Patches per image, ``(image_size / patch_size)^2``."""
        return (self.image_size // self.patch_size) ** 2

    def vision_config(self) -> ViTConfig:
        """The image tower as a :class:`ViTConfig` (its classification head is not built)."""
        return vision_tower_config(self)


def check_vision_tower(cfg: Any, name: str) -> None:
    """The ``vision_*`` and image fields of the families with a CLIP image tower."""
    names = ("image_size", "patch_size", "in_channels", "vision_d_model", "vision_n_heads")
    for field_name in (*names, "vision_d_ff", "vision_n_layers"):
        check_size(field_name, getattr(cfg, field_name))
    if cfg.image_size % cfg.patch_size:
        raise ValueError(f"patch_size ({cfg.patch_size}) must divide image_size ({cfg.image_size})")
    if cfg.vision_d_model % cfg.vision_n_heads:
        raise ValueError(
            f"vision_n_heads ({cfg.vision_n_heads}) must divide vision_d_model "
            f"({cfg.vision_d_model})"
        )
    check_vision_stack(cfg, name)


def vision_tower_config(cfg: Any) -> ViTConfig:
    """A CLIP image tower's fields as a :class:`ViTConfig` (activation, norms, dropouts and
    initialization shared with the rest of the model)."""
    return ViTConfig(
        d_model=cfg.vision_d_model,
        n_heads=cfg.vision_n_heads,
        d_ff=cfg.vision_d_ff,
        n_layers=cfg.vision_n_layers,
        activation=cfg.activation,
        norm=cfg.norm,
        norm_eps=cfg.norm_eps,
        norm_placement="pre",
        bias=cfg.bias,
        dropout=cfg.dropout,
        attn_dropout=cfg.attn_dropout,
        ff_dropout=cfg.ff_dropout,
        pos="learned",
        attn_backend=cfg.attn_backend,
        init=cfg.init,
        init_std=cfg.init_std,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        in_channels=cfg.in_channels,
        n_classes=1,
    )


__all__ = ["CLIPConfig", "check_vision_tower", "vision_tower_config"]
