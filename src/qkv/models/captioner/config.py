"""The ``captioner`` family's config: :class:`CaptionerConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from qkv.models.config import (
    InitScheme,
    ModelActivation,
    Placement,
    PosKind,
    TransformerConfig,
    check_parameters,
    check_size,
    check_vision_stack,
    check_vocab,
)


@dataclass
class CaptionerConfig(TransformerConfig):
    """An image captioner (Xu et al. 2015's task with Transformers, the layout of
    ``transformers``' ``VisionEncoderDecoderModel`` with a ViT encoder and a GPT-2 decoder):
    a pre-norm ViT encoder (class token, learned positions, final norm) reads the image
    patches; a pre-norm causal decoder with cross-attention over every encoder state
    (learned positions, final norm, output tied to the token embedding by default) writes
    the caption. Both stacks share the fields of :class:`TransformerConfig` and the width
    ``d_model``. Defaults: a small model for qkv's ``caption`` task.

    Args:
        image_size: input height and width in pixels.
        patch_size: square patch side; must divide ``image_size``.
        in_channels: image channels.
        n_encoder_layers: ViT layers.
        n_decoder_layers: decoder layers.
        vocab_size: caption vocabulary.
        max_len: longest caption in tokens (BOS included: the decoder's position table).
        pad_token_id: padding token, or None.
        tie_embeddings: the output projection reuses the token embedding (GPT-2).
        scale_embeddings, embed_norm: must stay False (ViT and GPT-2 have neither).
        (other fields: :class:`TransformerConfig`; ``pos`` must be ``"learned"`` and
        ``norm_placement`` ``"pre"``.)
    """

    family: ClassVar[str] = "captioner"

    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    activation: ModelActivation = "gelu"
    norm_placement: Placement = "pre"
    pos: PosKind = "learned"
    init: InitScheme = "normal"
    image_size: int = 56
    patch_size: int = 7
    in_channels: int = 1
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    vocab_size: int = 64
    max_len: int = 48
    pad_token_id: int | None = 0
    tie_embeddings: bool = True
    scale_embeddings: bool = False
    embed_norm: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_vocab(self, ("n_encoder_layers", "n_decoder_layers"))
        for name in ("image_size", "patch_size", "in_channels"):
            check_size(name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide image_size ({self.image_size})"
            )
        fixed = {
            "pos": "learned",
            "norm_placement": "pre",
            "scale_embeddings": False,
            "embed_norm": False,
        }
        for name, value in fixed.items():
            if getattr(self, name) != value:
                raise ValueError(
                    f"CaptionerConfig needs {name}={value!r}, got {getattr(self, name)!r}"
                )
        check_vision_stack(self, "The captioner")
        check_parameters(self)

    @property
    def n_patches(self) -> int:
        """Patches per image, ``(image_size / patch_size)^2``."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def n_layers(self) -> int:
        """Encoder plus decoder layers."""
        return self.n_encoder_layers + self.n_decoder_layers


__all__ = ["CaptionerConfig"]
