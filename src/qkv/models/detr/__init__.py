"""DETR, the detection Transformer (Carion et al. 2020): its config, its modules and its :class:`~qkv.models.family.Family` record."""

from qkv.models.detr.config import BACKBONE_KINDS, DETRConfig
from qkv.models.detr.model import DETR, DETROutput
from qkv.models.detr.presets import PRESETS
from qkv.models.family import Family, register

FAMILY = register(
    Family(
        name="detr",
        config_class=DETRConfig,
        model_class=DETR,
        hf="detr",
        presets=PRESETS,
        default_preset="detr",
        summary="DETR, the detection Transformer (Carion et al. 2020)",
        depth_fields=("n_encoder_layers", "n_decoder_layers"),
    )
)

__all__ = ["BACKBONE_KINDS", "DETR", "FAMILY", "DETRConfig", "DETROutput"]
