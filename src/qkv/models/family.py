"""The one record of a model family, and the registry every consumer reads.

A family is one folder, ``qkv/models/<family>/``, holding its config dataclass and its
modules, and one :class:`Family` record that its ``__init__`` registers with
:func:`register`. ``build``, ``load``, ``config_from_dict``, the memory check, the trainer's
default objective, interop's default Hugging Face family, the presets and ``qkv info`` all
look the family up here (as ``transformers``' one auto map per model type; torchtune's
per-family builders): nothing else names a family.

>>> from qkv.models import family
>>> family.get("swin").model_class.__name__
'Swin'

A new family outside qkv registers the same way (see ``tests/models/test_family_plugin.py``)::

    register(Family(name="toy", config_class=ToyConfig, model_class=Toy,
                    objective="classification", presets={"toy-tiny": {"d_model": 16}}))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

#: A model's default objective: a name :mod:`qkv.training.objectives` knows (``"lm"``,
#: ``"seq2seq"``, ``"classification"``), or a function of the model returning such a name,
#: an objective object, or None (no default).
ObjectiveChoice = str | Callable[[nn.Module], Any] | None
#: The Hugging Face family (``qkv.interop.hf.<name>``) a model is written as: a name, or a
#: function of the config returning one (seq2seq: T5, BART or Marian), or None.
HFChoice = str | Callable[[Any], str] | None


@dataclass(frozen=True)
class Family:
    """Everything qkv needs to know about one model family.

    Args:
        name: the ``family`` key of its ``config.json`` (``"swin"``).
        config_class: its config dataclass (a :class:`~qkv.models.config.TransformerConfig`
            with ``family`` set to ``name``).
        model_class: the model, built as ``model_class(config)``.
        objective: the trainer's default objective (:data:`ObjectiveChoice`).
        hf: the Hugging Face family ``qkv.interop.to_hf`` writes it as
            (:data:`HFChoice`).
        presets: preset name -> config fields: the family's named sizes
            (``qkv.models.<family>/presets.py``), which ``from_preset`` and ``qkv info`` read.
        default_preset: the family's usual preset (one of its ``presets``), or None.
        summary: one line on what the family is, printed by ``qkv info``.
        depth_fields: the config fields that count repeated, identical layers (an int
            field, or a list of ints: one depth per entry). Sizes are measured on a model
            of one and two such layers and extended to the config's depth (see
            :mod:`qkv.models.memory`); without any, the whole model is built on ``meta``.
        per_token_flops: whether one FLOPs-per-token count describes the model (not for a
            hierarchical model whose stages see different token counts, as Swin).
    """

    name: str
    config_class: type
    model_class: Callable[[Any], nn.Module]
    objective: ObjectiveChoice = None
    hf: HFChoice = None
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_preset: str | None = None
    summary: str = ""
    depth_fields: tuple[str, ...] = ()
    per_token_flops: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Family name must be an identifier, got {self.name!r}")
        if getattr(self.config_class, "family", None) != self.name:
            raise ValueError(
                f"{getattr(self.config_class, '__name__', self.config_class)}.family must be "
                f"{self.name!r}, got {getattr(self.config_class, 'family', None)!r}"
            )


_FAMILIES: dict[str, Family] = {}
#: family name -> the callable :func:`qkv.models.build` constructs it with (the record's
#: ``model_class``; a test may replace an entry to see that nothing is built).
MODEL_CLASSES: dict[str, Callable[[Any], nn.Module]] = {}


def register(family: Family) -> Family:
    """Make a family known to every part of qkv (``build``, ``load``, presets, ...).

    Registering the same record again is a no-op (a module imported twice).

    Returns:
        ``family``, so that a module can write ``FAMILY = register(Family(...))``.

    Raises:
        ValueError: another family of that name, or a preset name another family has.
    """
    old = _FAMILIES.get(family.name)
    if old is not None and old != family:
        raise ValueError(f"a model family {family.name!r} is already registered")
    taken = {p: f.name for f in _FAMILIES.values() if f.name != family.name for p in f.presets}
    clash = sorted(set(family.presets) & set(taken))
    if clash:
        raise ValueError(f"presets {clash} of family {family.name!r} already belong to others")
    _FAMILIES[family.name] = family
    MODEL_CLASSES[family.name] = family.model_class
    return family


def unregister(name: str) -> None:
    """Forget the family called ``name`` (a test's or a plugin's own); unknown names are
    ignored."""
    _FAMILIES.pop(name, None)
    MODEL_CLASSES.pop(name, None)


def get(name: str) -> Family:
    """The family called ``name``.

    Raises:
        ValueError: an unknown family (the known ones are listed).
    """
    if name not in _FAMILIES:
        raise ValueError(f"family must be one of {tuple(_FAMILIES)}, got {name!r}")
    return _FAMILIES[name]


def find(name: object) -> Family | None:
    """The family called ``name``, or None."""
    return _FAMILIES.get(name) if isinstance(name, str) else None


def families() -> tuple[Family, ...]:
    """Every registered family, in registration order."""
    return tuple(_FAMILIES.values())


def family_of(obj: object) -> Family | None:
    """The family of a model or config (by its ``config.family`` or ``family``), or None."""
    config = getattr(obj, "config", obj)
    return find(getattr(config, "family", None))


def preset_families() -> dict[str, Family]:
    """Preset name -> the registered family that defines it."""
    return {p: f for f in _FAMILIES.values() for p in f.presets}


class _ConfigClasses(Mapping[str, type]):
    """family name -> config class, read from the registry (:mod:`qkv.models.family`)."""

    def __getitem__(self, name: str) -> type:
        found = find(name)
        if found is None:
            raise KeyError(name)
        return found.config_class  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter([f.name for f in families()])

    def __len__(self) -> int:
        return len(families())


#: family name -> config class of every registered family (a live view of the registry).
CONFIG_CLASSES: Mapping[str, type] = _ConfigClasses()


def config_from_dict(d: dict[str, Any]) -> Any:
    """Rebuild any registered family's config from a dict with a ``"family"`` key.

    Raises:
        ValueError: a missing or unknown family (the known ones are listed).
    """
    family = d.get("family")
    found = find(family)
    if found is None:
        raise ValueError(f"family must be one of {tuple(CONFIG_CLASSES)}, got {family!r}")
    return found.config_class.from_dict(d)  # type: ignore[no-any-return]


__all__ = [
    "CONFIG_CLASSES",
    "MODEL_CLASSES",
    "Family",
    "HFChoice",
    "ObjectiveChoice",
    "config_from_dict",
    "families",
    "family_of",
    "find",
    "get",
    "preset_families",
    "register",
    "unregister",
]
