"""Model configurations: one validated, JSON-serializable dataclass per model family.

Every family shares the fields of :class:`TransformerConfig` (the attention/feed-forward
stack) and adds its own (vocabulary, layer counts, image geometry). Defaults are the
papers' base models; :mod:`qkv.models.presets` names the published sizes.

>>> cfg = LMConfig(d_model=64, n_heads=4, d_ff=256, n_layers=2, vocab_size=100)
>>> LMConfig.from_json(cfg.to_json()) == cfg
True
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar, get_args

from qkv._checks import MAX_SIZE, check_bool, check_choice, check_range
from qkv.layers.feedforward import Activation
from qkv.layers.norms import NORM_KINDS, NormKind
from qkv.models.config_checks import (
    MAX_LAYERS,
    check_parameters,
    check_size,
    check_vision_stack,
    check_vocab,
)
from qkv.models.family import CONFIG_CLASSES, config_from_dict

#: The feed-forward activations of :mod:`qkv.layers` (``"geglu_tanh"``: T5 v1.1's "gated-gelu").
ModelActivation: TypeAlias = Activation
PosKind = Literal["sinusoidal", "learned", "rope", "alibi", "relative", "xl", "none"]
Placement = Literal["pre", "post"]
InitScheme = Literal["xavier", "normal", "gpt2", "t5"]

POS_KINDS: tuple[str, ...] = get_args(PosKind)
PLACEMENTS: tuple[str, ...] = get_args(Placement)
INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)

C = TypeVar("C", bound="TransformerConfig")

#: The fields every family had in the earlier format, with their defaults (now
#: :class:`~qkv.models.efficient.EfficientConfig`'s, or ``attn``'s).
LEGACY_DEFAULTS: dict[str, Any] = {
    "attn_kind": "softmax",
    "favor_features": None,
    "linformer_k": 64,
    "lsh_bucket_size": 64,
    "lsh_n_hashes": 2,
    "lsh_n_buckets": None,
    "lsh_seed": None,
    "reversible": False,
    "ff_chunk_size": 0,
}


class _Upgrading(type):
    """Passes a config's keywords through ``cls.upgrade`` first: earlier formats still load."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*args, **cls.upgrade(kwargs))  # type: ignore[attr-defined]


@dataclass
class TransformerConfig(metaclass=_Upgrading):
    """Fields shared by every family: the attention and feed-forward stack.

    Args:
        d_model: model width ``d``.
        n_heads: query heads ``h``.
        d_ff: feed-forward hidden width.
        n_kv_heads: key/value heads ``h_kv`` (grouped-query attention); None = ``n_heads``.
        head_dim: per-head width ``d_h``; None = ``d_model // n_heads``.
        activation: feed-forward activation, one of :data:`ACTIVATIONS`.
        norm: ``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm).
        norm_eps: epsilon of every norm.
        norm_placement: ``"post"`` (Vaswani et al. 2017, BERT) or ``"pre"`` (GPT-2, ViT;
            Xiong et al. 2020); pre-norm stacks end with a final norm.
        bias: biases on the attention and feed-forward projections.
        dropout: residual dropout on every sublayer output and on the embeddings.
        attn_dropout: dropout on the attention weights.
        ff_dropout: dropout on the feed-forward hidden activations (BART's
            ``activation_dropout``; 0 in the paper).
        pos: position information, one of :data:`POS_KINDS`: added to the embeddings
            (``sinusoidal``, ``learned``), rotating queries and keys (``rope``), or a bias on
            the scores (``alibi``, ``relative`` = T5's bucketed bias), Transformer-XL's
            relative sinusoids with the ``u``/``v`` biases (``xl``;
            :class:`~qkv.pos.XLRelativeScore`, exact attention on the ``math`` backend), or
            ``none``.
        rope_base: RoPE frequency base.
        rel_buckets: buckets of the relative bias (T5: 32).
        rel_max_distance: distance from which the relative bias shares one bucket (T5: 128).
        attn_scale: score scale; None = ``1/sqrt(d_h)`` (T5 uses 1.0).
        attn_backend: attention backend of every attention module (``"auto"``, ``"math"``,
            ``"sdpa"``, ...).
        init: ``"xavier"`` (original Transformer), ``"normal"`` (``N(0, init_std^2)``,
            BERT/ViT), ``"gpt2"`` (normal, residual projections scaled by
            ``1/sqrt(2 n_layers)``, Radford et al. 2019) or ``"t5"`` (fan-in normal, the
            query also ``1/sqrt(d_h)``: for ``attn_scale=1.0``, Raffel et al. 2020).
        init_std: standard deviation of the normal schemes.
        pruned_heads: attention module name -> the heads removed from it, numbered as in
            the unpruned module (``model.prune_heads`` fills it; building a model from the
            config removes them again, so a pruned model's checkpoint reloads).

    Raises:
        ValueError: from ``__post_init__``, naming the offending values: among them sizes
            that are not ints, above :data:`MAX_SIZE` (layers: :data:`MAX_LAYERS`), or a
            model of more than :data:`~qkv.models.memory.MAX_PARAMETERS` parameters (every
            family checks its :func:`~qkv.models.memory.parameter_count` last).
    """

    family: ClassVar[str] = ""

    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 2048
    n_kv_heads: int | None = None
    head_dim: int | None = None
    activation: ModelActivation = "relu"
    norm: NormKind = "layer"
    norm_eps: float = 1e-5
    norm_placement: Placement = "post"
    bias: bool = True
    dropout: float = 0.1
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    pos: PosKind = "sinusoidal"
    rope_base: float = 10000.0
    rel_buckets: int = 32
    rel_max_distance: int = 128
    attn_scale: float | None = None
    attn_backend: str = "auto"
    init: InitScheme = "xavier"
    init_std: float = 0.02
    pruned_heads: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "d_ff", "rel_buckets", "rel_max_distance"):
            check_size(name, getattr(self, name))
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"n_heads ({self.n_heads}) must divide d_model ({self.d_model}); "
                    f"or set head_dim"
                )
        else:
            check_size("head_dim", self.head_dim)
        if self.n_kv_heads is not None:
            check_size("n_kv_heads", self.n_kv_heads)
            if self.n_heads % self.n_kv_heads:
                raise ValueError(
                    f"n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})"
                )
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("norm", self.norm, NORM_KINDS)
        check_choice("norm_placement", self.norm_placement, PLACEMENTS)
        check_choice("pos", self.pos, POS_KINDS)
        check_choice("init", self.init, INIT_SCHEMES)
        check_bool("bias", self.bias)
        for name in ("dropout", "attn_dropout", "ff_dropout"):
            check_range(name, getattr(self, name), lo=0.0, hi=1.0)
        check_range("norm_eps", self.norm_eps, lo=0.0)
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps!r}")
        check_range("rope_base", self.rope_base, lo=0.0)
        check_range("init_std", self.init_std, lo=0.0)
        if self.attn_scale is not None:
            check_range("attn_scale", self.attn_scale, lo=0.0)
            if self.attn_scale <= 0:
                raise ValueError(f"attn_scale must be > 0 or None, got {self.attn_scale!r}")
        if not isinstance(self.attn_backend, str) or not self.attn_backend:
            raise ValueError(f"attn_backend must be a backend name, got {self.attn_backend!r}")
        if self.pos in ("sinusoidal", "xl") and self.d_model % 2:
            raise ValueError(f"pos={self.pos!r} needs an even d_model, got {self.d_model}")
        if self.pos == "xl" and self.pruned_heads:
            raise ValueError("pos='xl' keeps per-head position parameters: drop pruned_heads")
        if self.pos == "rope" and self.resolved_head_dim % 2:
            raise ValueError(f"pos='rope' needs an even head_dim, got {self.resolved_head_dim}")
        if self.pos == "relative" and self.rel_buckets < 4:
            raise ValueError(f"pos='relative' needs rel_buckets >= 4, got {self.rel_buckets}")
        self.pruned_heads = self._checked_pruned_heads()

    def _checked_pruned_heads(self) -> dict[str, list[int]]:
        if not isinstance(self.pruned_heads, dict):
            raise ValueError(
                f"pruned_heads must be a dict {{module name: [head, ...]}}, got "
                f"{self.pruned_heads!r}"
            )
        out = {}
        for name, heads in self.pruned_heads.items():
            ok = isinstance(name, str) and isinstance(heads, (list, tuple))
            if ok:
                ok = all(isinstance(i, int) and not isinstance(i, bool) for i in heads)
            if not ok or not all(0 <= i < self.n_heads for i in heads) or not heads:
                raise ValueError(
                    f"pruned_heads[{name!r}] must be a non-empty list of head indices in "
                    f"[0, n_heads={self.n_heads}), got {heads!r}"
                )
            if len(set(heads)) == self.n_heads:
                raise ValueError(f"pruned_heads[{name!r}] removes every head ({self.n_heads})")
            out[name] = sorted(set(heads))
        return out

    # -- derived sizes -------------------------------------------------------------------
    @property
    def resolved_head_dim(self) -> int:
        """Per-head width ``d_h``: ``head_dim``, or ``d_model // n_heads`` when it is None."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def resolved_n_kv_heads(self) -> int:
        """Key/value heads ``h_kv``: ``n_kv_heads``, or ``n_heads`` when it is None."""
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    # -- serialization -------------------------------------------------------------------
    @classmethod
    def upgrade(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Keywords of an earlier format made current: the fields of
        :data:`LEGACY_DEFAULTS` a family no longer has are dropped at their old default.

        Raises:
            ValueError: such a field at another value (the family never supported it).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        out = {}
        for key, value in kwargs.items():
            if key in LEGACY_DEFAULTS and key not in names:
                if value != LEGACY_DEFAULTS[key]:
                    raise ValueError(
                        f"{cls.__name__} does not support {key} (must be "
                        f"{LEGACY_DEFAULTS[key]!r}), got {value!r}"
                    )
                continue
            out[key] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict with a ``"family"`` key first (see :func:`config_from_dict`)."""
        return {"family": self.family, **dataclasses.asdict(self)}

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ValueError: a ``family`` of another class, or unknown keys (listed).
        """
        d = dict(d)
        family = d.pop("family", cls.family)
        d = cls.upgrade(d)
        if family != cls.family:
            raise ValueError(f"{cls.__name__} needs family={cls.family!r}, got {family!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} fields {unknown}; valid fields: {sorted(names)}"
            )
        return cls(**d)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        """Rebuild from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))


__all__ = [
    "ACTIVATIONS",
    "CONFIG_CLASSES",
    "INIT_SCHEMES",
    "LEGACY_DEFAULTS",
    "MAX_LAYERS",
    "MAX_SIZE",
    "PLACEMENTS",
    "POS_KINDS",
    "TransformerConfig",
    "check_parameters",
    "check_size",
    "check_vision_stack",
    "check_vocab",
    "config_from_dict",
]
