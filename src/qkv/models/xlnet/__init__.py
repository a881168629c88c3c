"""XLNet's permutation language model (Yang et al. 2019): its config, its modules and its :class:`~qkv.models.family.Family` record."""

from qkv.models.family import Family, register
from qkv.models.xlnet.config import XLNetConfig
from qkv.models.xlnet.model import XLNetLM, permutation_targets

FAMILY = register(
    Family(
        name="xlnet",
        config_class=XLNetConfig,
        model_class=XLNetLM,
        hf="xlnet",
        summary="XLNet's permutation language model (Yang et al. 2019)",
        depth_fields=("n_layers",),
    )
)

__all__ = ["FAMILY", "XLNetConfig", "XLNetLM", "permutation_targets"]
