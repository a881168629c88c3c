"""The encoder-decoder Transformer (Vaswani et al. 2017): its config, its modules and its :class:`~qkv.models.family.Family` record."""

from qkv.models.family import Family, register
from qkv.models.seq2seq.config import Seq2SeqConfig
from qkv.models.seq2seq.model import CrossDecoding, Seq2SeqTransformer
from qkv.models.seq2seq.presets import PRESETS


def _hf_family(config: Seq2SeqConfig) -> str:
    """T5 for relative positions, BART for an embedding norm, else Marian."""
    if config.pos == "relative":
        return "t5"
    return "bart" if config.embed_norm else "marian"


FAMILY = register(
    Family(
        name="seq2seq",
        config_class=Seq2SeqConfig,
        model_class=Seq2SeqTransformer,
        objective="seq2seq",
        hf=_hf_family,
        presets=PRESETS,
        default_preset="transformer-base",
        summary="the encoder-decoder Transformer (Vaswani et al. 2017)",
        depth_fields=("n_encoder_layers", "n_decoder_layers"),
    )
)

__all__ = ["FAMILY", "CrossDecoding", "Seq2SeqConfig", "Seq2SeqTransformer"]
