"""An image captioner (ViT encoder, causal decoder with cross-attention): its config, its modules and its :class:`~qkv.models.family.Family` record."""

from qkv.models.captioner.config import CaptionerConfig
from qkv.models.captioner.model import Captioner
from qkv.models.family import Family, register

FAMILY = register(
    Family(
        name="captioner",
        config_class=CaptionerConfig,
        model_class=Captioner,
        hf="vision-encoder-decoder",
        summary="an image captioner: a ViT encoder and a causal decoder with cross-attention",
        depth_fields=("n_encoder_layers", "n_decoder_layers"),
    )
)

__all__ = ["FAMILY", "Captioner", "CaptionerConfig"]
