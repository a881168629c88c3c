"""``build(config)``: the model of a config's family (:mod:`qkv.models.family`)."""

from __future__ import annotations

from qkv.models import family as registry
from qkv.models.base import TransformerModel
from qkv.models.config import CONFIG_CLASSES, TransformerConfig
from qkv.models.family import MODEL_CLASSES
from qkv.models.memory import check_model_memory

__all__ = ["MODEL_CLASSES", "build"]


def build(config: TransformerConfig) -> TransformerModel:
    """Build the model a config describes (on the current default device and dtype).

    On a real device the estimate of :func:`~qkv.models.memory.model_bytes` is checked
    against the free memory first (:func:`~qkv.models.memory.check_memory`; every model's
    constructor checks again, for those who call it directly); on ``meta``
    (``with torch.device("meta"): build(config)``) nothing is allocated or checked.

    Args:
        config: the config of a registered family (:class:`~qkv.models.LMConfig`,
            :class:`~qkv.models.SwinConfig`, ...).

    Returns:
        The freshly initialized model.

    Raises:
        TypeError: not the config of a registered family.
        MemoryLimitError: the model does not fit in the free memory of the device (a
            ``ValueError``).
    """
    found = registry.family_of(config)
    if not isinstance(config, TransformerConfig) or found is None:
        raise TypeError(
            f"build needs one of {[c.__name__ for c in CONFIG_CLASSES.values()]}, "
            f"got {type(config).__name__}"
        )
    check_model_memory(config)
    return MODEL_CLASSES[found.name](config)  # type: ignore[return-value]
