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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar, get_args

from qkv._checks import MAX_SIZE, check_bool, check_choice, check_int, check_range
from qkv.layers.feedforward import Activation
from qkv.layers.norms import NORM_KINDS, NormKind
from qkv.models import family as registry
from qkv.models.memory import MAX_PARAMETERS, format_gib, parameter_ceiling

#: The feed-forward activations of :mod:`qkv.layers` (``"geglu_tanh"``: T5 v1.1's "gated-gelu").
ModelActivation: TypeAlias = Activation
PosKind = Literal["sinusoidal", "learned", "rope", "alibi", "relative", "xl", "none"]
Placement = Literal["pre", "post"]
InitScheme = Literal["xavier", "normal", "gpt2", "t5"]
#: Self-attention modules: exact softmax attention (:class:`~qkv.attn.MultiHeadAttention`,
#: its backends chosen by ``attn_backend``) or an approximation with its own parameters.
AttnKind = Literal["softmax", "favor", "linformer", "lsh"]

POS_KINDS: tuple[str, ...] = get_args(PosKind)
PLACEMENTS: tuple[str, ...] = get_args(Placement)
INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)
ATTN_KINDS: tuple[str, ...] = get_args(AttnKind)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)

C = TypeVar("C", bound="TransformerConfig")

#: Most layers in one stack: 8x the 1,000 layers of DeepNet (Wang et al. 2022). Each layer
#: is a dozen Python modules (~60 KB, ~10 ms to build even on ``meta``), so millions of them
#: would exhaust the host whatever their width.
MAX_LAYERS: int = 8192
_LAYER_FIELDS = ("n_layers", "n_encoder_layers", "n_decoder_layers", "vision_n_layers")


def check_size(name: str, value: object, minimum: int = 1) -> None:
    """An int field of a config: at least ``minimum``, at most :data:`MAX_SIZE` (layer
    counts: :data:`MAX_LAYERS`)."""
    check_int(name, value, minimum, maximum=MAX_LAYERS if name in _LAYER_FIELDS else MAX_SIZE)


def check_parameters(cfg: TransformerConfig) -> None:
    """Refuse, on every machine alike, a model no machine holds (:data:`MAX_PARAMETERS`),
    counted on a model built on ``meta`` (:func:`~qkv.models.memory.parameter_ceiling`)."""
    n = parameter_ceiling(cfg)
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"{type(cfg).__name__} describes a model of {n:,} parameters "
            f"({format_gib(4 * n)} in float32), more than the {MAX_PARAMETERS:,} (2**40) "
            f"a qkv config may have"
        )


@dataclass
class TransformerConfig:
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
        attn_kind: the self-attention module, one of :data:`ATTN_KINDS`: ``"softmax"``
            (exact; :class:`~qkv.attn.MultiHeadAttention`), ``"favor"`` (Performer's
            FAVOR+, :class:`~qkv.attn.FavorAttention`; Choromanski et al. 2021) or
            ``"linformer"`` (projected keys and values, :class:`~qkv.attn.LinformerAttention`;
            Wang et al. 2020; bidirectional, so encoders only) or ``"lsh"`` (Reformer's
            shared-QK LSH attention, :class:`~qkv.attn.LSHSelfAttention`; Kitaev et al.
            2020). Cross-attention is always softmax. See ``docs/efficient.md``.
        favor_features: FAVOR+'s random features ``m``; None = ``round(d_h ln d_h)``.
        linformer_k: Linformer's projected length ``k``.
        lsh_bucket_size: LSH attention's chunk length.
        lsh_n_hashes: LSH hash rounds.
        lsh_n_buckets: LSH buckets per round (even); None = about ``2 s / bucket_size``.
        lsh_seed: a fixed hashing seed (the same buckets every call), or None (new
            rotations every forward pass, as Reformer trains).
        reversible: reversible residual layers (Reformer, sec. 4): activations recomputed
            in the backward pass, memory independent of depth. Pre-norm, no
            cross-attention (language models, encoders, ViT).
        ff_chunk_size: run the feed-forward networks this many positions at a time (0 =
            all at once; Reformer's chunking).

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
    attn_kind: AttnKind = "softmax"
    favor_features: int | None = None
    linformer_k: int = 64
    lsh_bucket_size: int = 64
    lsh_n_hashes: int = 2
    lsh_n_buckets: int | None = None
    lsh_seed: int | None = None
    reversible: bool = False
    ff_chunk_size: int = 0

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
        if self.pos == "rope" and self.d_head % 2:
            raise ValueError(f"pos='rope' needs an even head_dim, got {self.d_head}")
        if self.pos == "relative" and self.rel_buckets < 4:
            raise ValueError(f"pos='relative' needs rel_buckets >= 4, got {self.rel_buckets}")
        self.pruned_heads = self._checked_pruned_heads()
        self._check_attn_kind()

    def _check_attn_kind(self) -> None:
        """The efficient-attention fields (``docs/efficient.md``)."""
        check_choice("attn_kind", self.attn_kind, ATTN_KINDS)
        if self.favor_features is not None:
            check_size("favor_features", self.favor_features)
        check_size("linformer_k", self.linformer_k)
        check_size("lsh_bucket_size", self.lsh_bucket_size)
        check_size("lsh_n_hashes", self.lsh_n_hashes)
        if self.lsh_n_buckets is not None:
            check_size("lsh_n_buckets", self.lsh_n_buckets, minimum=2)
            if self.lsh_n_buckets % 2:
                raise ValueError(f"lsh_n_buckets must be even, got {self.lsh_n_buckets}")
        if self.lsh_seed is not None:
            check_size("lsh_seed", self.lsh_seed, minimum=0)
        check_bool("reversible", self.reversible)
        check_size("ff_chunk_size", self.ff_chunk_size, minimum=0)
        if self.attn_kind != "softmax" and self.pos in ("alibi", "relative", "xl"):
            raise ValueError(
                f"attn_kind={self.attn_kind!r} forms no score matrix to add pos={self.pos!r}'s "
                f"bias to; use pos='rope', 'learned', 'sinusoidal' or 'none'"
            )
        if self.attn_kind == "lsh":
            if self.kv_heads != self.n_heads:
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
    def d_head(self) -> int:
        """Per-head width ``d_h``."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads ``h_kv``."""
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    # -- serialization -------------------------------------------------------------------
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


def check_vocab(cfg: Any, n_layer_fields: tuple[str, ...]) -> None:
    """The vocabulary, length, depth and embedding fields of the text families."""
    for name in ("vocab_size", "max_len", *n_layer_fields):
        check_size(name, getattr(cfg, name))
    for name in ("tie_embeddings", "scale_embeddings", "embed_norm"):
        check_bool(name, getattr(cfg, name))
    if cfg.pad_token_id is not None:
        check_size("pad_token_id", cfg.pad_token_id, minimum=0)
        if cfg.pad_token_id >= cfg.vocab_size:
            raise ValueError(
                f"pad_token_id ({cfg.pad_token_id}) must be < vocab_size ({cfg.vocab_size})"
            )


def check_causal(cfg: TransformerConfig) -> None:
    """Refuse Linformer in a causal decoder: its projections mix every position."""
    if cfg.attn_kind == "linformer":
        raise ValueError(
            f"attn_kind='linformer' is bidirectional (its projections mix future positions "
            f"into every row) and {type(cfg).__name__} has a causal decoder; use 'favor'"
        )


def check_vision_stack(cfg: TransformerConfig, name: str) -> None:
    """What the vision families (Swin, DETR) do not model: per-head options of the stack."""
    if cfg.pruned_heads:
        raise ValueError(f"{name} does not support pruned_heads, got {cfg.pruned_heads!r}")
    for field_name in ("n_kv_heads", "head_dim", "attn_scale"):
        if getattr(cfg, field_name) is not None:
            raise ValueError(
                f"{name} does not support {field_name} (must be None), "
                f"got {getattr(cfg, field_name)!r}"
            )
    fixed = {"attn_kind": "softmax", "reversible": False, "ff_chunk_size": 0}
    for field_name, value in fixed.items():
        if getattr(cfg, field_name) != value:
            raise ValueError(
                f"{name} does not support {field_name} (must be {value!r}), "
                f"got {getattr(cfg, field_name)!r}"
            )


class _ConfigClasses(Mapping[str, type[TransformerConfig]]):
    """family name -> config class, read from the registry (:mod:`qkv.models.family`)."""

    def __getitem__(self, name: str) -> type[TransformerConfig]:
        found = registry.find(name)
        if found is None:
            raise KeyError(name)
        return found.config_class  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter([f.name for f in registry.families()])

    def __len__(self) -> int:
        return len(registry.families())


#: family name -> config class of every registered family (a live view of the registry).
CONFIG_CLASSES: Mapping[str, type[TransformerConfig]] = _ConfigClasses()


def config_from_dict(d: dict[str, Any]) -> TransformerConfig:
    """Rebuild any registered family's config from a dict with a ``"family"`` key.

    Raises:
        ValueError: a missing or unknown family (the known ones are listed).
    """
    family = d.get("family")
    found = registry.find(family)
    if found is None:
        raise ValueError(f"family must be one of {tuple(CONFIG_CLASSES)}, got {family!r}")
    return found.config_class.from_dict(d)  # type: ignore[no-any-return]
