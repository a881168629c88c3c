"""A LLaVA-style vision-language model (Liu et al. 2023): its config, its modules and its :class:`~qkv.models.family.Family` record."""

from qkv.models.family import Family, register
from qkv.models.llava.config import LlavaConfig
from qkv.models.llava.model import Llava, Projector
from qkv.models.llava.presets import PRESETS

FAMILY = register(
    Family(
        name="llava",
        config_class=LlavaConfig,
        model_class=Llava,
        presets=PRESETS,
        default_preset="llava-tiny",
        summary="image tokens as a language model's prefix (LLaVA, Liu et al. 2023)",
        depth_fields=("n_layers", "vision_n_layers"),
    )
)

__all__ = ["FAMILY", "Llava", "LlavaConfig", "Projector"]
