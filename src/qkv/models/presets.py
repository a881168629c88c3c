"""Named model sizes with the papers' numbers, plus ``*-tiny`` versions for tests and demos.

Each family's presets live in its folder (``qkv/models/<family>/presets.py``, registered
with its :class:`~qkv.models.family.Family` record); this module holds the widths they share
and looks a name up. Parameter counts of the built models (``count_parameters``, tied weights once; checked in
``tests/models/test_models_counts.py``):

==================  ===============  ===============================================
preset              parameters       reference
==================  ===============  ===============================================
transformer-base    63,082,496       Vaswani et al. 2017, table 3: 65M
transformer-big     214,245,376      Vaswani et al. 2017, table 3: 213M
bert-base           109,482,240      Hugging Face ``BertModel`` (bert-base-uncased)
bert-large          335,141,888      Hugging Face ``BertModel`` (bert-large-uncased)
gpt2-small          124,439,808      Hugging Face ``GPT2Model`` (gpt2)
gpt2-medium         354,823,168      Hugging Face ``GPT2Model`` (gpt2-medium)
vit-b16             86,567,656       timm ``vit_base_patch16_224``
vit-l16             304,326,632      timm ``vit_large_patch16_224``
swin-t              28,288,354       timm ``swin_tiny_patch4_window7_224``
clip-vit-b32        151,277,313      Hugging Face ``CLIPModel`` (openai/clip-vit-base-patch32)
t5-small            60,506,624       Hugging Face ``T5ForConditionalGeneration`` (t5-small)
==================  ===============  ===============================================
"""

from __future__ import annotations

from typing import Any

from qkv.models import family as registry
from qkv.models.base import TransformerModel
from qkv.models.build import build
from qkv.models.config import TransformerConfig

#: Widths shared by the families' presets: base (12 heads), large (16 heads), tiny.
BASE_12: dict[str, Any] = {"d_model": 768, "n_heads": 12, "d_ff": 3072}
LARGE_24: dict[str, Any] = {"d_model": 1024, "n_heads": 16, "d_ff": 4096}
TINY: dict[str, Any] = {"d_model": 32, "n_heads": 4, "d_ff": 64}


def preset_names() -> tuple[str, ...]:
    """Every preset name, family by family (each :class:`~qkv.models.family.Family`'s
    ``presets``, in the families' registration order)."""
    return tuple(registry.preset_families())


def preset_config(name: str, **overrides: Any) -> TransformerConfig:
    """The config of a named preset, with fields replaced by ``overrides``.

    Args:
        name: one of :func:`preset_names` (:data:`qkv.models.PRESETS`).
        **overrides: config fields to change, e.g. ``pos="rope"``, ``attn_backend="math"``.

    Returns:
        The validated config.

    Raises:
        ValueError: an unknown preset (the known ones are listed), unknown override fields
            (the valid ones are listed), or an invalid resulting config.
    """
    owner = registry.preset_families().get(name)
    if owner is None:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    fields = dict(owner.presets[name])
    return owner.config_class.from_dict({**fields, **overrides})  # type: ignore[no-any-return]


def from_preset(name: str, **overrides: Any) -> TransformerModel:
    """Build the model of a named preset (see :func:`preset_config`).

    Build on the ``meta`` device (``with torch.device("meta"): ...``) to inspect the large
    presets without allocating their weights.
    """
    return build(preset_config(name, **overrides))


__all__ = ["BASE_12", "LARGE_24", "TINY", "from_preset", "preset_config", "preset_names"]
