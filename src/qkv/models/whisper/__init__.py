"""Whisper's speech encoder-decoder (Radford et al. 2022): its config, its modules and its :class:`~qkv.models.family.Family` record."""

from qkv.models.family import Family, register
from qkv.models.whisper.config import WhisperConfig
from qkv.models.whisper.model import Whisper, whisper_sinusoids

FAMILY = register(
    Family(
        name="whisper",
        config_class=WhisperConfig,
        model_class=Whisper,
        objective="seq2seq",
        hf="whisper",
        summary="Whisper's speech encoder-decoder (Radford et al. 2022)",
        depth_fields=("n_encoder_layers", "n_decoder_layers"),
    )
)

__all__ = ["FAMILY", "Whisper", "WhisperConfig", "whisper_sinusoids"]
