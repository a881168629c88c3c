"""A BERT-style encoder (the ``encoder`` family): its config, its modules and its :class:`~qkv.models.family.Family` record."""

from torch import nn

from qkv.models.bert.config import POOLINGS, EncoderConfig
from qkv.models.bert.model import EncoderModel, EncoderOutput, MLMHead, Pooler, mean_pool
from qkv.models.bert.presets import PRESETS
from qkv.models.family import Family, register


def _objective(model: nn.Module) -> str | None:
    """Classification when the encoder has a classification head; else none."""
    return "classification" if getattr(model, "classifier", None) is not None else None


FAMILY = register(
    Family(
        name="encoder",
        config_class=EncoderConfig,
        model_class=EncoderModel,
        objective=_objective,
        hf="bert",
        presets=PRESETS,
        default_preset="bert-base",
        summary="a BERT-style encoder (Devlin et al. 2019)",
        depth_fields=("n_layers",),
    )
)

__all__ = [
    "FAMILY",
    "POOLINGS",
    "EncoderConfig",
    "EncoderModel",
    "EncoderOutput",
    "MLMHead",
    "Pooler",
    "mean_pool",
]
