"""Efficient-attention and long-context knobs, in the configs of the families that take them.

Each approximate attention kind carries its own small config (``attn=FavorConfig(features=64)``;
``attn=None`` is exact softmax attention), and :class:`EfficientConfig` adds ``attn``,
``reversible`` and ``ff_chunk_size`` to the stack fields of
:class:`~qkv.models.config.TransformerConfig`. The families that support them (language
models, encoders, encoder-decoders, ViT) derive from it; the others (Swin, DETR, CLIP, the
captioner, XLNet) do not have these fields at all. See ``docs/efficient.md``.

The flat keywords of the earlier format (``attn_kind="lsh", lsh_bucket_size=4``,
``favor_features``, ``linformer_k``, ``lsh_*``) are still accepted, by the constructors and in
saved ``config.json`` files, and read into ``attn``.

>>> from qkv.models import LMConfig
>>> LMConfig(attn_kind="favor", favor_features=16).attn
FavorConfig(features=16)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from qkv._checks import check_bool, check_choice
from qkv.models.config import TransformerConfig, check_size

#: Self-attention modules: exact softmax attention (:class:`~qkv.attn.MultiHeadAttention`)
#: or an approximation with its own parameters.
AttnKind = Literal["softmax", "favor", "linformer", "lsh"]
ATTN_KINDS: tuple[str, ...] = get_args(AttnKind)


@dataclass
class FavorConfig:
    """Performer's FAVOR+ (Choromanski et al. 2021, :class:`~qkv.attn.FavorAttention`).

    Args:
        features: random features ``m``; None = ``round(d_h ln d_h)``.
    """

    kind: ClassVar[str] = "favor"
    legacy: ClassVar[dict[str, str]] = {"favor_features": "features"}

    features: int | None = None

    def __post_init__(self) -> None:
        if self.features is not None:
            check_size("favor_features", self.features)


@dataclass
class LinformerConfig:
    """Linformer (Wang et al. 2020, :class:`~qkv.attn.LinformerAttention`): keys and
    values projected to ``k`` positions; bidirectional, so encoders only.

    Args:
        k: the projected length.
    """

    kind: ClassVar[str] = "linformer"
    legacy: ClassVar[dict[str, str]] = {"linformer_k": "k"}

    k: int = 64

    def __post_init__(self) -> None:
        check_size("linformer_k", self.k)


@dataclass
class LSHConfig:
    """Reformer's shared-QK LSH attention (Kitaev et al. 2020,
    :class:`~qkv.attn.LSHSelfAttention`).

    Args:
        bucket_size: the chunk length.
        n_hashes: hash rounds.
        n_buckets: buckets per round (even); None = about ``2 s / bucket_size``.
        seed: a fixed hashing seed (the same buckets every call), or None (new rotations
            every forward pass, as Reformer trains).
    """

    kind: ClassVar[str] = "lsh"
    legacy: ClassVar[dict[str, str]] = {
        "lsh_bucket_size": "bucket_size",
        "lsh_n_hashes": "n_hashes",
        "lsh_n_buckets": "n_buckets",
        "lsh_seed": "seed",
    }

    bucket_size: int = 64
    n_hashes: int = 2
    n_buckets: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        check_size("lsh_bucket_size", self.bucket_size)
        check_size("lsh_n_hashes", self.n_hashes)
        if self.n_buckets is not None:
            check_size("lsh_n_buckets", self.n_buckets, minimum=2)
            if self.n_buckets % 2:
                raise ValueError(f"lsh_n_buckets must be even, got {self.n_buckets}")
        if self.seed is not None:
            check_size("lsh_seed", self.seed, minimum=0)


AttnConfig = FavorConfig | LinformerConfig | LSHConfig
_ATTN_CLASSES: dict[str, type[Any]] = {c.kind: c for c in (FavorConfig, LinformerConfig, LSHConfig)}
#: The flat keywords of the earlier format and the kind each belongs to.
LEGACY_KNOBS: dict[str, str] = {k: c.kind for c in _ATTN_CLASSES.values() for k in c.legacy}


def attn_to_dict(attn: AttnConfig | None) -> dict[str, Any] | None:
    """``{"kind": ..., **fields}``, or None for softmax attention."""
    return None if attn is None else {"kind": attn.kind, **dataclasses.asdict(attn)}


def _attn_from_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``attn`` a sub-config: read from a dict (``{"kind": ...}``) and from
    the flat keywords of the earlier format (``attn_kind``, ``favor_features``, ...)."""
    kwargs = dict(kwargs)
    attn = kwargs.get("attn")
    if isinstance(attn, Mapping):
        attn = dict(attn)
        kind = attn.pop("kind", None)
        check_choice("attn.kind", kind, ATTN_KINDS[1:])
        attn = _ATTN_CLASSES[kind](**attn)
    knobs = {k: kwargs.pop(k) for k in list(kwargs) if k in LEGACY_KNOBS}
    if "attn_kind" in kwargs:
        kind = kwargs.pop("attn_kind")
        check_choice("attn_kind", kind, ATTN_KINDS)
        if kind == "softmax":
            attn = None
        elif attn is None or attn.kind != kind:
            attn = _ATTN_CLASSES[kind]()
    if attn is not None:
        mine = {attn.legacy[k]: v for k, v in knobs.items() if k in attn.legacy}
        if mine:  # knobs of the other kinds were saved beside every config: ignored
            attn = dataclasses.replace(attn, **mine)
    if attn is not None or "attn" in kwargs:
        kwargs["attn"] = attn
    return kwargs


@dataclass
class EfficientConfig(TransformerConfig):
    """The stack fields plus efficient attention and memory savings (``docs/efficient.md``).

    Args:
        attn: the self-attention's approximation, :class:`FavorConfig`,
            :class:`LinformerConfig` or :class:`LSHConfig`; None = exact softmax attention
            (its backend chosen by ``attn_backend``). Cross-attention is always softmax.
        reversible: reversible residual layers (Reformer, sec. 4): activations recomputed
            in the backward pass, memory independent of depth. Pre-norm, no
            cross-attention (language models, encoders, ViT).
        ff_chunk_size: run the feed-forward networks this many positions at a time (0 =
            all at once; Reformer's chunking).
        (other fields: :class:`~qkv.models.config.TransformerConfig`.)
    """

    attn: AttnConfig | None = None
    reversible: bool = False
    ff_chunk_size: int = 0

    @classmethod
    def upgrade(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Read ``attn`` from a dict or from the earlier flat keywords."""
        return super().upgrade(_attn_from_kwargs(kwargs))

    @property
    def attn_kind(self) -> str:
        """``"softmax"``, ``"favor"``, ``"linformer"`` or ``"lsh"``."""
        return "softmax" if self.attn is None else self.attn.kind

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`TransformerConfig.to_dict`, ``attn`` with its ``kind``."""
        return {**super().to_dict(), "attn": attn_to_dict(self.attn)}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attn is not None and not isinstance(self.attn, tuple(_ATTN_CLASSES.values())):
            raise ValueError(
                f"attn must be None, a FavorConfig, LinformerConfig or LSHConfig, got {self.attn!r}"
            )
        check_bool("reversible", self.reversible)
        check_size("ff_chunk_size", self.ff_chunk_size, minimum=0)
        kind = self.attn_kind
        if kind != "softmax" and self.pos in ("alibi", "relative", "xl"):
            raise ValueError(
                f"attn_kind={kind!r} forms no score matrix to add pos={self.pos!r}'s "
                f"bias to; use pos='rope', 'learned', 'sinusoidal' or 'none'"
            )
        if kind == "lsh":
            if self.resolved_n_kv_heads != self.n_heads:
                raise ValueError(
                    f"attn_kind='lsh' shares queries and keys: n_kv_heads ({self.n_kv_heads}) "
                    f"must be None or n_heads ({self.n_heads})"
                )
            if self.pos == "rope":
                raise ValueError(
                    "attn_kind='lsh' hashes the shared query/key vectors, which rotary "
                    "embeddings would make differ; use pos='learned', 'sinusoidal' or 'none'"
                )
            if self.pruned_heads:
                raise ValueError("attn_kind='lsh' modules cannot be pruned: drop pruned_heads")
        if self.reversible and self.norm_placement != "pre":
            raise ValueError(
                "reversible=True needs norm_placement='pre' (a post-norm layer cannot be inverted)"
            )


def check_causal(cfg: EfficientConfig) -> None:
    """Refuse Linformer in a causal decoder: its projections mix every position."""
    if cfg.attn_kind == "linformer":
        raise ValueError(
            f"attn_kind='linformer' is bidirectional (its projections mix future positions "
            f"into every row) and {type(cfg).__name__} has a causal decoder; use 'favor'"
        )


__all__ = [
    "ATTN_KINDS",
    "LEGACY_KNOBS",
    "AttnConfig",
    "AttnKind",
    "EfficientConfig",
    "FavorConfig",
    "LSHConfig",
    "LinformerConfig",
    "attn_to_dict",
    "check_causal",
]
