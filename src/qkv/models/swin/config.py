"""The ``swin`` family's config: :class:`SwinConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

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


@dataclass
class SwinConfig(TransformerConfig):
    """The Swin Transformer (Liu et al. 2021). Defaults: Swin-T at 224 px (28M parameters).

    Stage ``i`` works on ``d_model * 2^i`` features with ``stage_heads[i]`` heads and a
    feed-forward width of ``d_ff * 2^i``; patch merging halves the grid between stages.

    Args:
        d_model: width of stage 0 (the paper's ``C``; ``embed_dim`` in ``transformers``).
        n_heads: heads of stage 0 (``stage_heads[0]``).
        d_ff: feed-forward width of stage 0 (``mlp_ratio * C``).
        image_size: input height and width in pixels.
        patch_size: square patch side (patch partition); must divide ``image_size``.
        in_channels: image channels.
        n_classes: classes of the classification head; 0 = no head (the model returns the
            pooled features, as ``transformers``' ``SwinModel``).
        depths: blocks per stage (Swin-T: 2, 2, 6, 2).
        stage_heads: heads per stage; None = ``n_heads * 2^i`` (Swin-T: 3, 6, 12, 24).
        window_size: window side ``M`` (7); a stage whose grid is not larger than ``M``
            attends over the whole grid without shifting, as in the reference code.
        drop_path: stochastic depth rate of the last block, rising linearly from 0 (0.2 for
            Swin-T on ImageNet).
        pos: ``"none"`` (the paper) or ``"learned"`` (absolute position embeddings added
            to the patches, ``use_absolute_embeddings``); the relative bias inside windows
            is always there.
        (other fields: :class:`TransformerConfig`; ``norm_placement`` must be ``"pre"``.)
    """

    family: ClassVar[str] = "swin"

    d_model: int = 96
    n_heads: int = 3
    d_ff: int = 384
    activation: ModelActivation = "gelu"
    norm_placement: Placement = "pre"
    dropout: float = 0.0
    pos: PosKind = "none"
    init: InitScheme = "normal"
    image_size: int = 224
    patch_size: int = 4
    in_channels: int = 3
    n_classes: int = 1000
    depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    stage_heads: list[int] | None = None
    window_size: int = 7
    drop_path: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.depths, tuple):
            self.depths = list(self.depths)
        if isinstance(self.stage_heads, tuple):
            self.stage_heads = list(self.stage_heads)
        super().__post_init__()
        for name in ("image_size", "patch_size", "in_channels", "window_size"):
            check_size(name, getattr(self, name))
        check_size("n_classes", self.n_classes, minimum=0)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide image_size ({self.image_size})"
            )
        if not isinstance(self.depths, list) or not self.depths:
            raise ValueError(f"depths must be a non-empty list of ints, got {self.depths!r}")
        for i, depth in enumerate(self.depths):
            check_size(f"depths[{i}]", depth)
        if self.stage_heads is not None:
            if not isinstance(self.stage_heads, list) or len(self.stage_heads) != len(self.depths):
                raise ValueError(
                    f"stage_heads must list one head count per stage ({len(self.depths)}), "
                    f"got {self.stage_heads!r}"
                )
            if self.stage_heads[0] != self.n_heads:
                raise ValueError(
                    f"stage_heads[0] ({self.stage_heads[0]}) must equal n_heads ({self.n_heads})"
                )
        for i, (width, heads) in enumerate(zip(self.stage_widths, self.heads_per_stage)):
            check_size(f"stage_heads[{i}]", heads)
            if width % heads:
                raise ValueError(
                    f"stage {i}: its heads ({heads}) must divide its width "
                    f"d_model * 2^{i} = {width}"
                )
        check_range("drop_path", self.drop_path, lo=0.0, hi=1.0)
        if self.norm_placement != "pre":
            raise ValueError(
                f"Swin is pre-norm: norm_placement must be 'pre', got {self.norm_placement!r}"
            )
        if self.pos not in ("none", "learned"):
            raise ValueError(
                f"Swin's pos must be 'none' or 'learned' (its relative bias is built in), "
                f"got {self.pos!r}"
            )
        check_vision_stack(self, "Swin")
        check_parameters(self)

    @property
    def n_stages(self) -> int:
        """Stages (``len(depths)``)."""
        return len(self.depths)

    @property
    def n_layers(self) -> int:
        """Swin blocks in all stages."""
        return sum(self.depths)

    @property
    def heads_per_stage(self) -> list[int]:
        """Heads of each stage."""
        if self.stage_heads is not None:
            return list(self.stage_heads)
        return [self.n_heads * 2**i for i in range(self.n_stages)]

    @property
    def stage_widths(self) -> list[int]:
        """Feature width of each stage, ``d_model * 2^i``."""
        return [self.d_model * 2**i for i in range(self.n_stages)]

    @property
    def grid(self) -> int:
        """Patches per side at stage 0."""
        return self.image_size // self.patch_size

    @property
    def stage_grids(self) -> list[int]:
        """Grid side of each stage: patch merging halves it, rounding up (odd grids are
        padded, as in ``transformers``)."""
        sides = [self.grid]
        for _ in range(self.n_stages - 1):
            sides.append((sides[-1] + 1) // 2)
        return sides

    @property
    def n_patches(self) -> int:
        """Tokens at stage 0."""
        return self.grid**2

    @property
    def max_len(self) -> int:
        """Tokens at stage 0 (the longest sequence of the model)."""
        return self.n_patches


__all__ = ["SwinConfig"]
