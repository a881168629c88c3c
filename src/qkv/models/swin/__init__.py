"""The Swin Transformer (Liu et al. 2021): its config, its modules and its :class:`~qkv.models.family.Family` record."""

from qkv.models.family import Family, register
from qkv.models.swin.config import SwinConfig
from qkv.models.swin.model import PatchMerging, Swin, SwinBlock, stage_windows
from qkv.models.swin.presets import PRESETS

FAMILY = register(
    Family(
        name="swin",
        config_class=SwinConfig,
        model_class=Swin,
        objective="classification",
        hf="swin",
        presets=PRESETS,
        default_preset="swin-t",
        summary="the Swin Transformer: shifted windows, hierarchical stages (Liu et al. 2021)",
        depth_fields=("depths",),
        per_token_flops=False,
    )
)

__all__ = ["FAMILY", "PatchMerging", "Swin", "SwinBlock", "SwinConfig", "stage_windows"]
