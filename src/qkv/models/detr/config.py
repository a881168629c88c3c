"""The ``detr`` family's config: :class:`DETRConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

from qkv.models.config import (
    PosKind,
    TransformerConfig,
    check_bool,
    check_choice,
    check_parameters,
    check_range,
    check_size,
    check_vision_stack,
)

BackboneKind = Literal["cnn", "patch", "features"]
BACKBONE_KINDS: tuple[str, ...] = get_args(BackboneKind)


@dataclass
class DETRConfig(TransformerConfig):
    """DETR, the detection Transformer (Carion et al. 2020). Defaults: the paper's
    Transformer (``d = 256``, 8 heads, 6 + 6 post-norm layers, 100 queries, 91 COCO classes)
    on a small CNN backbone for qkv's ``detect`` task (the paper's is a ResNet-50, which qkv
    does not model).

    Args:
        n_encoder_layers: encoder layers.
        n_decoder_layers: decoder layers.
        n_queries: learned object queries ``N`` (the most objects one image can hold).
        n_classes: object classes, without the "no object" class the heads add.
        image_size: input height and width in pixels (``cnn`` and ``patch`` backbones).
        in_channels: image channels.
        backbone: ``"cnn"`` (stride-2 3x3 convolutions, each followed by a ReLU, one per
            entry of ``backbone_channels``: feature stride ``2^len``), ``"patch"`` (one
            convolution with kernel and stride ``patch_size``, as ViT's patch embedding) or
            ``"features"`` (no backbone: the model reads feature maps of
            ``backbone_channels[-1]`` channels, e.g. a ResNet's, as when loading
            ``transformers``' ``DetrForObjectDetection``).
        backbone_channels: output channels of each backbone stage (the last feeds the
            ``1 x 1`` input projection to ``d_model``).
        backbone_norm: batch normalization after each convolution of the ``cnn`` backbone
            (before its ReLU; the convolutions lose their bias), as in DETR's ResNet. Its
            features then arrive at the scale of the sine positions, not far below it.
        patch_size: the ``patch`` backbone's patch side.
        aux_loss: also decode (and train) every decoder layer's output (sec. 3.2).
        cost_class, cost_bbox, cost_giou: the Hungarian matcher's cost weights (eq. 1:
            ``-p(c) * cost_class + L1 * cost_bbox - GIoU * cost_giou``).
        loss_bbox, loss_giou: weights of the L1 and generalized IoU box losses.
        eos_coef: cross-entropy weight of the "no object" class (0.1: its queries outnumber
            the objects).
        (other fields: :class:`TransformerConfig`; positions are DETR's 2-D sine
        encoding, added to queries and keys in every layer.)
    """

    family: ClassVar[str] = "detr"

    d_model: int = 256
    n_heads: int = 8
    d_ff: int = 2048
    dropout: float = 0.1
    pos: PosKind = "sinusoidal"
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    n_queries: int = 100
    n_classes: int = 91
    image_size: int = 64
    in_channels: int = 3
    backbone: BackboneKind = "cnn"
    backbone_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    backbone_norm: bool = False
    patch_size: int = 8
    aux_loss: bool = True
    cost_class: float = 1.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    eos_coef: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.backbone_channels, tuple):
            self.backbone_channels = list(self.backbone_channels)
        super().__post_init__()
        for name in ("n_encoder_layers", "n_decoder_layers", "n_queries", "n_classes"):
            check_size(name, getattr(self, name))
        for name in ("image_size", "in_channels", "patch_size"):
            check_size(name, getattr(self, name))
        check_choice("backbone", self.backbone, BACKBONE_KINDS)
        chans = self.backbone_channels
        if not isinstance(chans, list) or not chans:
            raise ValueError(f"backbone_channels must be a non-empty list of ints, got {chans!r}")
        for i, c in enumerate(chans):
            check_size(f"backbone_channels[{i}]", c)
        if self.backbone in ("patch", "features") and len(chans) != 1:
            raise ValueError(
                f"backbone={self.backbone!r} has one stage: backbone_channels must have one "
                f"entry, got {chans!r}"
            )
        if self.backbone == "patch" and self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide image_size ({self.image_size})"
            )
        if self.backbone == "cnn" and self.image_size % 2 ** len(chans):
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of the cnn backbone's "
                f"stride 2^{len(chans)} = {2 ** len(chans)}"
            )
        check_bool("aux_loss", self.aux_loss)
        check_bool("backbone_norm", self.backbone_norm)
        if self.backbone_norm and self.backbone != "cnn":
            raise ValueError(
                f"backbone_norm is for the cnn backbone, not backbone={self.backbone!r}"
            )
        for name in ("cost_class", "cost_bbox", "cost_giou", "loss_bbox", "loss_giou", "eos_coef"):
            check_range(name, getattr(self, name), lo=0.0)
        if self.pos != "sinusoidal":
            raise ValueError(
                f"DETR's positions are its 2-D sine encoding: pos must be 'sinusoidal', got {self.pos!r}"
            )
        if self.norm_placement != "post":
            raise ValueError(
                f"DETR is post-norm: norm_placement must be 'post', got {self.norm_placement!r}"
            )
        if self.d_model % 4:
            raise ValueError(
                f"DETR's 2-D sine positions need d_model divisible by 4, got {self.d_model}"
            )
        check_vision_stack(self, "DETR")
        check_parameters(self)

    @property
    def stride(self) -> int:
        """Pixels per feature-map cell."""
        if self.backbone == "cnn":
            return 2 ** len(self.backbone_channels)
        return self.patch_size if self.backbone == "patch" else 1

    @property
    def feature_grid(self) -> int:
        """Feature-map side for ``image_size`` images (``cnn`` and ``patch`` backbones)."""
        return self.image_size // self.stride

    @property
    def max_len(self) -> int:
        """Encoder tokens for ``image_size`` images."""
        return self.feature_grid**2

    @property
    def n_layers(self) -> int:
        """Encoder plus decoder layers."""
        return self.n_encoder_layers + self.n_decoder_layers


__all__ = ["BACKBONE_KINDS", "DETRConfig"]
