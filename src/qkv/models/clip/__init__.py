"""CLIP: contrastive image and text towers (Radford et al. 2021): its config, its modules and its :class:`~qkv.models.family.Family` record."""

from qkv.models.clip.config import CLIPConfig
from qkv.models.clip.model import CLIP, CLIPOutput, CLIPTextTower, CLIPVisionTower
from qkv.models.clip.presets import PRESETS
from qkv.models.family import Family, register

FAMILY = register(
    Family(
        name="clip",
        config_class=CLIPConfig,
        model_class=CLIP,
        hf="clip",
        presets=PRESETS,
        default_preset="clip-vit-b32",
        summary="CLIP: contrastive image and text towers (Radford et al. 2021)",
        depth_fields=("n_layers", "vision_n_layers"),
    )
)

__all__ = ["CLIP", "FAMILY", "CLIPConfig", "CLIPOutput", "CLIPTextTower", "CLIPVisionTower"]
