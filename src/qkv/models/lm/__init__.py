"""A decoder-only language model (GPT-2): its config, its modules and its :class:`~qkv.models.family.Family` record."""

from qkv.models.family import Family, register
from qkv.models.lm.config import LMConfig
from qkv.models.lm.model import DecoderLM, positions_from_mask
from qkv.models.lm.presets import PRESETS

FAMILY = register(
    Family(
        name="lm",
        config_class=LMConfig,
        model_class=DecoderLM,
        objective="lm",
        hf="gpt2",
        presets=PRESETS,
        default_preset="gpt2-small",
        summary="a decoder-only language model (GPT-2, Radford et al. 2019)",
        depth_fields=("n_layers",),
    )
)

__all__ = ["FAMILY", "DecoderLM", "LMConfig", "positions_from_mask"]
