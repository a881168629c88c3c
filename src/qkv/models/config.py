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
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar, get_args

from qkv.layers.feedforward import Activation
from qkv.layers.norms import NORM_KINDS, NormKind
from qkv.models.memory import MAX_PARAMETERS, format_gib, parameter_count

#: The feed-forward activations of :mod:`qkv.layers` (``"geglu_tanh"``: T5 v1.1's "gated-gelu").
ModelActivation: TypeAlias = Activation
PosKind = Literal["sinusoidal", "learned", "rope", "alibi", "relative", "xl", "none"]
Placement = Literal["pre", "post"]
InitScheme = Literal["xavier", "normal", "gpt2", "t5"]
#: Self-attention modules: exact softmax attention (:class:`~qkv.attn.MultiHeadAttention`,
#: its backends chosen by ``attn_backend``) or an approximation with its own parameters.
AttnKind = Literal["softmax", "favor", "linformer", "lsh"]
#: What an encoder's classification head reads (:class:`EncoderConfig` ``pooling``).
POOLINGS: tuple[str, ...] = ("cls", "mean")

POS_KINDS: tuple[str, ...] = get_args(PosKind)
PLACEMENTS: tuple[str, ...] = get_args(Placement)
INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)
ATTN_KINDS: tuple[str, ...] = get_args(AttnKind)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)

C = TypeVar("C", bound="TransformerConfig")

#: Largest value of any size field (widths, vocabularies, lengths): 2**40.
MAX_SIZE: int = 2**40
#: Most layers in one stack: 8x the 1,000 layers of DeepNet (Wang et al. 2022). Each layer
#: is a dozen Python modules (~60 KB, ~10 ms to build even on ``meta``), so millions of them
#: would exhaust the host whatever their width.
MAX_LAYERS: int = 8192
_LAYER_FIELDS = ("n_layers", "n_encoder_layers", "n_decoder_layers", "vision_n_layers")


def _show(value: object) -> str:
    """``repr(value)``, except for ints too long to print (a 400-digit int)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an int of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
    return repr(value)


def _check_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {_show(value)}")
    maximum = MAX_LAYERS if name in _LAYER_FIELDS else MAX_SIZE
    if value > maximum:
        raise ValueError(f"{name} must be at most {maximum:,}, got {_show(value)}")


def _check_size(cfg: TransformerConfig) -> None:
    """Refuse, on every machine alike, a model no machine holds (:data:`MAX_PARAMETERS`)."""
    n = parameter_count(cfg)
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"{type(cfg).__name__} describes a model of {n:,} parameters "
            f"({format_gib(4 * n)} in float32), more than the {MAX_PARAMETERS:,} (2**40) "
            f"a qkv config may have"
        )


def _check_float(name: str, value: object, *, lo: float, hi: float | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value < lo or (hi is not None and value >= hi)):  # type: ignore[operator]
        ok = False
    if not ok:
        rng = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be a finite number in {rng}, got {value!r}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


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
            _check_int(name, getattr(self, name))
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"n_heads ({self.n_heads}) must divide d_model ({self.d_model}); "
                    f"or set head_dim"
                )
        else:
            _check_int("head_dim", self.head_dim)
        if self.n_kv_heads is not None:
            _check_int("n_kv_heads", self.n_kv_heads)
            if self.n_heads % self.n_kv_heads:
                raise ValueError(
                    f"n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})"
                )
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("norm", self.norm, NORM_KINDS)
        _check_choice("norm_placement", self.norm_placement, PLACEMENTS)
        _check_choice("pos", self.pos, POS_KINDS)
        _check_choice("init", self.init, INIT_SCHEMES)
        _check_bool("bias", self.bias)
        for name in ("dropout", "attn_dropout", "ff_dropout"):
            _check_float(name, getattr(self, name), lo=0.0, hi=1.0)
        _check_float("norm_eps", self.norm_eps, lo=0.0)
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps!r}")
        _check_float("rope_base", self.rope_base, lo=0.0)
        _check_float("init_std", self.init_std, lo=0.0)
        if self.attn_scale is not None:
            _check_float("attn_scale", self.attn_scale, lo=0.0)
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
        _check_choice("attn_kind", self.attn_kind, ATTN_KINDS)
        if self.favor_features is not None:
            _check_int("favor_features", self.favor_features)
        _check_int("linformer_k", self.linformer_k)
        _check_int("lsh_bucket_size", self.lsh_bucket_size)
        _check_int("lsh_n_hashes", self.lsh_n_hashes)
        if self.lsh_n_buckets is not None:
            _check_int("lsh_n_buckets", self.lsh_n_buckets, minimum=2)
            if self.lsh_n_buckets % 2:
                raise ValueError(f"lsh_n_buckets must be even, got {self.lsh_n_buckets}")
        if self.lsh_seed is not None:
            _check_int("lsh_seed", self.lsh_seed, minimum=0)
        _check_bool("reversible", self.reversible)
        _check_int("ff_chunk_size", self.ff_chunk_size, minimum=0)
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


def _check_vocab(cfg: Any, n_layer_fields: tuple[str, ...]) -> None:
    for name in ("vocab_size", "max_len", *n_layer_fields):
        _check_int(name, getattr(cfg, name))
    for name in ("tie_embeddings", "scale_embeddings", "embed_norm"):
        _check_bool(name, getattr(cfg, name))
    if cfg.pad_token_id is not None:
        _check_int("pad_token_id", cfg.pad_token_id, minimum=0)
        if cfg.pad_token_id >= cfg.vocab_size:
            raise ValueError(
                f"pad_token_id ({cfg.pad_token_id}) must be < vocab_size ({cfg.vocab_size})"
            )


def _check_bidirectional_only(cfg: TransformerConfig) -> None:
    """Refuse Linformer in a causal decoder: its projections mix every position."""
    if cfg.reversible and cfg.family == "seq2seq":
        raise ValueError(
            "reversible=True is for stacks without cross-attention (lm, encoder, vit), not "
            "Seq2SeqConfig"
        )
    if cfg.attn_kind == "linformer":
        raise ValueError(
            f"attn_kind='linformer' is bidirectional (its projections mix future positions "
            f"into every row) and {type(cfg).__name__} has a causal decoder; use 'favor'"
        )


@dataclass
class Seq2SeqConfig(TransformerConfig):
    """The encoder-decoder Transformer (Vaswani et al. 2017). Defaults: the base model.

    Args:
        vocab_size: source vocabulary (the shared one when ``share_embeddings``).
        tgt_vocab_size: target vocabulary; None = ``vocab_size``.
        n_encoder_layers: encoder layers ``N``.
        n_decoder_layers: decoder layers ``N``.
        max_len: longest sequence (size of learned/sinusoidal tables).
        pad_token_id: padding token (its embedding row starts at zero, gets no gradient).
        share_embeddings: one embedding matrix for source and target (sec. 3.4).
        tie_embeddings: the output projection reuses the target embedding.
        scale_embeddings: multiply embeddings by ``sqrt(d_model)`` (sec. 3.4).
        embed_norm: a norm after the embedding sum (BART's ``layernorm_embedding``).
        output_bias: a bias on the output projection (BART's and Marian's
            ``final_logits_bias``).
        output_scale: multiplier of the decoder output before the output projection (T5
            with tied embeddings: ``d_model ** -0.5``).
        (other fields: :class:`TransformerConfig`.)
    """

    family: ClassVar[str] = "seq2seq"

    vocab_size: int = 37000
    tgt_vocab_size: int | None = None
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    max_len: int = 1024
    pad_token_id: int | None = None
    share_embeddings: bool = True
    tie_embeddings: bool = True
    scale_embeddings: bool = True
    embed_norm: bool = False
    output_bias: bool = False
    output_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_vocab(self, ("n_encoder_layers", "n_decoder_layers"))
        _check_bidirectional_only(self)
        _check_bool("share_embeddings", self.share_embeddings)
        _check_bool("output_bias", self.output_bias)
        _check_float("output_scale", self.output_scale, lo=0.0)
        if self.output_scale <= 0:
            raise ValueError(f"output_scale must be > 0, got {self.output_scale!r}")
        if self.tgt_vocab_size is not None:
            _check_int("tgt_vocab_size", self.tgt_vocab_size)
            if self.share_embeddings and self.tgt_vocab_size != self.vocab_size:
                raise ValueError(
                    f"share_embeddings needs tgt_vocab_size ({self.tgt_vocab_size}) == "
                    f"vocab_size ({self.vocab_size})"
                )
            if self.pad_token_id is not None and self.pad_token_id >= self.tgt_vocab_size:
                raise ValueError(
                    f"pad_token_id ({self.pad_token_id}) must be < tgt_vocab_size "
                    f"({self.tgt_vocab_size})"
                )
        _check_size(self)

    @property
    def target_vocab(self) -> int:
        """Target vocabulary size."""
        return self.vocab_size if self.tgt_vocab_size is None else self.tgt_vocab_size


@dataclass
class WhisperConfig(Seq2SeqConfig):
    """Whisper's speech encoder-decoder (Radford et al. 2022). Defaults: ``whisper-tiny``.

    The encoder reads log-mel frames through two convolutions (kernel 3, GELU; strides
    ``conv_strides``, Whisper's ``(1, 2)`` halving the frames) and fixed sinusoids; the
    decoder is :class:`Seq2SeqConfig`'s, with learned positions (``max_len`` of them) and an
    output tied to its token table. There is no source token table: ``share_embeddings``
    stays True (the one table is the decoder's).

    Args:
        n_mels: mel channels of the input features.
        max_frames: longest input in mel frames (Whisper: 3000, 30 s); the encoder holds
            :attr:`max_source_len` positions.
        conv_strides: strides of the two convolutions (``[1, 2]``; ``[2, 2]`` quarters).
        ctc_head: a linear layer from the encoder's states to the vocabulary, for the CTC
            loss of hybrid CTC/attention training (Watanabe et al. 2017; the pad id is the
            blank) and CTC greedy decoding; Whisper has none.
        (other fields: :class:`Seq2SeqConfig`.)
    """

    family: ClassVar[str] = "whisper"

    vocab_size: int = 51865
    d_model: int = 384
    n_heads: int = 6
    d_ff: int = 1536
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    max_len: int = 448
    activation: ModelActivation = "gelu"
    norm_placement: Placement = "pre"
    pos: PosKind = "learned"
    dropout: float = 0.0
    init: InitScheme = "normal"
    scale_embeddings: bool = False
    n_mels: int = 80
    max_frames: int = 3000
    conv_strides: list[int] = field(default_factory=lambda: [1, 2])
    ctc_head: bool = False

    def __post_init__(self) -> None:
        _check_int("n_mels", self.n_mels)
        if not isinstance(self.ctc_head, bool):
            raise ValueError(f"ctc_head must be a bool, got {self.ctc_head!r}")
        _check_int("max_frames", self.max_frames)
        ok = isinstance(self.conv_strides, (list, tuple)) and len(self.conv_strides) == 2
        if not ok or not all(isinstance(x, int) and 1 <= x <= 4 for x in self.conv_strides):
            raise ValueError(f"conv_strides must be two ints in 1..4, got {self.conv_strides!r}")
        self.conv_strides = list(self.conv_strides)
        fixed = {
            "pos": "learned",
            "share_embeddings": True,
            "tgt_vocab_size": None,
            "reversible": False,
            "attn_kind": "softmax",
        }
        for name, value in fixed.items():
            if getattr(self, name) != value:
                raise ValueError(
                    f"WhisperConfig needs {name}={value!r}, got {getattr(self, name)!r}"
                )
        super().__post_init__()

    def source_len(self, n_frames: int) -> int:
        """Encoder positions of ``n_frames`` mel frames (each convolution, kernel 3 and
        padding 1, keeps ``ceil(n / stride)``)."""
        for s in self.conv_strides:
            n_frames = -(-n_frames // s)
        return n_frames

    @property
    def max_source_len(self) -> int:
        """Encoder positions of :attr:`max_frames` frames (Whisper: 1500)."""
        return self.source_len(self.max_frames)


@dataclass
class LMConfig(TransformerConfig):
    """A decoder-only language model (GPT-2, Radford et al. 2019). Defaults: GPT-2 small.

    Args:
        vocab_size: vocabulary.
        n_layers: decoder layers.
        max_len: context length (size of the learned position table).
        pad_token_id: padding token, or None.
        tie_embeddings: output projection = token embedding (GPT-2).
        scale_embeddings: multiply embeddings by ``sqrt(d_model)``.
        embed_norm: a norm after the embedding sum.
        mem_len: Transformer-XL memory: states per layer cached from the previous segment
            (Dai et al. 2019; needs ``pos="xl"``); 0 = none.
        segment_len: Transformer-XL segments: a longer input is run this many tokens at a
            time, each segment attending to the memory of the ones before (needs
            ``mem_len``); 0 = the whole input at once.
        sliding_window: causal local attention (Mistral's ``sliding_window``): each token
            sees itself and the ``sliding_window - 1`` tokens before it
            (:func:`qkv.masks.sliding_window`, block-sparse with ``attn_backend="auto"`` or
            ``"blocksparse"``); 0 = all earlier tokens.
        (other fields: :class:`TransformerConfig`.)
    """

    family: ClassVar[str] = "lm"

    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    activation: ModelActivation = "gelu_tanh"
    norm_placement: Placement = "pre"
    attn_dropout: float = 0.1
    pos: PosKind = "learned"
    init: InitScheme = "gpt2"
    vocab_size: int = 50257
    n_layers: int = 12
    max_len: int = 1024
    pad_token_id: int | None = None
    tie_embeddings: bool = True
    scale_embeddings: bool = False
    embed_norm: bool = False
    mem_len: int = 0
    segment_len: int = 0
    sliding_window: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_vocab(self, ("n_layers",))
        _check_bidirectional_only(self)
        _check_int("mem_len", self.mem_len, minimum=0)
        _check_int("segment_len", self.segment_len, minimum=0)
        _check_int("sliding_window", self.sliding_window, minimum=0)
        if self.sliding_window and (self.attn_kind != "softmax" or self.mem_len):
            raise ValueError(
                f"sliding_window={self.sliding_window} is a mask on softmax attention: not "
                f"with attn_kind={self.attn_kind!r} or mem_len={self.mem_len}"
            )
        if self.mem_len and self.pos != "xl":
            raise ValueError(
                f"mem_len={self.mem_len} needs pos='xl' (cached states keep their meaning "
                f"only with relative positions), got pos={self.pos!r}"
            )
        if self.segment_len and not self.mem_len:
            raise ValueError(f"segment_len={self.segment_len} needs mem_len > 0")
        if self.mem_len and self.reversible:
            raise ValueError("mem_len (Transformer-XL) and reversible=True do not combine")
        _check_size(self)


@dataclass
class EncoderConfig(TransformerConfig):
    """A BERT-style encoder (Devlin et al. 2019). Defaults: BERT-base.

    Args:
        vocab_size: vocabulary.
        n_layers: encoder layers.
        max_len: longest sequence (size of the learned position table).
        type_vocab_size: token types (segments); 0 = none.
        pad_token_id: padding token, or None.
        pooler: ``tanh(W h_[CLS] + b)`` pooled output.
        mlm_head: masked-LM head (dense, activation, norm, projection to the vocabulary).
        n_classes: size of a sequence-classification head; 0 = none.
        pooling: what the classification head reads: ``"cls"`` the pooler's output
            (``BertForSequenceClassification``), ``"mean"`` the mean of the real tokens'
            final states (the sentence embedding of sentence-transformers, Reimers and
            Gurevych 2019).
        tie_embeddings: the MLM projection reuses the token embedding.
        scale_embeddings: multiply embeddings by ``sqrt(d_model)``.
        embed_norm: a norm after the embedding sum (BERT: yes).
        (other fields: :class:`TransformerConfig`.)
    """

    family: ClassVar[str] = "encoder"

    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    activation: ModelActivation = "gelu"
    norm_eps: float = 1e-12
    attn_dropout: float = 0.1
    pos: PosKind = "learned"
    init: InitScheme = "normal"
    vocab_size: int = 30522
    n_layers: int = 12
    max_len: int = 512
    type_vocab_size: int = 2
    pad_token_id: int | None = 0
    pooler: bool = True
    mlm_head: bool = True
    n_classes: int = 0
    pooling: Literal["cls", "mean"] = "cls"
    tie_embeddings: bool = True
    scale_embeddings: bool = False
    embed_norm: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_vocab(self, ("n_layers",))
        _check_int("type_vocab_size", self.type_vocab_size, minimum=0)
        _check_bool("pooler", self.pooler)
        _check_bool("mlm_head", self.mlm_head)
        _check_int("n_classes", self.n_classes, minimum=0)
        _check_choice("pooling", self.pooling, POOLINGS)
        if self.n_classes and self.pooling == "cls" and not self.pooler:
            raise ValueError(
                f"n_classes ({self.n_classes}) needs pooler=True with pooling='cls': it reads "
                f"the pooled output"
            )
        _check_size(self)


@dataclass
class ViTConfig(TransformerConfig):
    """The Vision Transformer (Dosovitskiy et al. 2021). Defaults: ViT-B/16 at 224 px.

    Args:
        image_size: input height and width in pixels.
        patch_size: square patch side; must divide ``image_size``.
        in_channels: image channels.
        n_classes: classes of the classification head.
        n_layers: encoder layers.
        (other fields: :class:`TransformerConfig`.)
    """

    family: ClassVar[str] = "vit"

    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    activation: ModelActivation = "gelu"
    norm_eps: float = 1e-6
    norm_placement: Placement = "pre"
    pos: PosKind = "learned"
    init: InitScheme = "normal"
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    n_classes: int = 1000
    n_layers: int = 12

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("image_size", "patch_size", "in_channels", "n_classes", "n_layers"):
            _check_int(name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide image_size ({self.image_size})"
            )
        _check_size(self)

    @property
    def n_patches(self) -> int:
        """Patches per image, ``(image_size / patch_size)^2``."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def max_len(self) -> int:
        """Sequence length: the class token plus the patches."""
        return 1 + self.n_patches


def _check_vision_stack(cfg: TransformerConfig, name: str) -> None:
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


@dataclass
class SwinConfig(TransformerConfig):
    """The Swin Transformer (Liu et al. 2021). Defaults: Swin-T at 224 px (28M parameters).

    Stage ``i`` works on ``d_model * 2^i`` features with ``stage_heads[i]`` heads and a
    feed-forward width of ``d_ff * 2^i``; patch merging halves the grid between stages.

    Args:
        d_model: width of stage 0 (the paper's ``C``; ``embed_dim`` in ``transformers``).
        n_heads: heads of stage 0 (``stage_heads[0]``).
        d_ff: feed-forward width of stage 0 (``mlp_ratio * C``).
        image_size: input height and width in pixels.
        patch_size: square patch side (patch partition); must divide ``image_size``.
        in_channels: image channels.
        n_classes: classes of the classification head; 0 = no head (the model returns the
            pooled features, as ``transformers``' ``SwinModel``).
        depths: blocks per stage (Swin-T: 2, 2, 6, 2).
        stage_heads: heads per stage; None = ``n_heads * 2^i`` (Swin-T: 3, 6, 12, 24).
        window_size: window side ``M`` (7); a stage whose grid is not larger than ``M``
            attends over the whole grid without shifting, as in the reference code.
        drop_path: stochastic depth rate of the last block, rising linearly from 0 (0.2 for
            Swin-T on ImageNet).
        pos: ``"none"`` (the paper) or ``"learned"`` (absolute position embeddings added
            to the patches, ``use_absolute_embeddings``); the relative bias inside windows
            is always there.
        (other fields: :class:`TransformerConfig`; ``norm_placement`` must be ``"pre"``.)
    """

    family: ClassVar[str] = "swin"

    d_model: int = 96
    n_heads: int = 3
    d_ff: int = 384
    activation: ModelActivation = "gelu"
    norm_placement: Placement = "pre"
    dropout: float = 0.0
    pos: PosKind = "none"
    init: InitScheme = "normal"
    image_size: int = 224
    patch_size: int = 4
    in_channels: int = 3
    n_classes: int = 1000
    depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    stage_heads: list[int] | None = None
    window_size: int = 7
    drop_path: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.depths, tuple):
            self.depths = list(self.depths)
        if isinstance(self.stage_heads, tuple):
            self.stage_heads = list(self.stage_heads)
        super().__post_init__()
        for name in ("image_size", "patch_size", "in_channels", "window_size"):
            _check_int(name, getattr(self, name))
        _check_int("n_classes", self.n_classes, minimum=0)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide image_size ({self.image_size})"
            )
        if not isinstance(self.depths, list) or not self.depths:
            raise ValueError(f"depths must be a non-empty list of ints, got {self.depths!r}")
        for i, depth in enumerate(self.depths):
            _check_int(f"depths[{i}]", depth)
        if self.stage_heads is not None:
            if not isinstance(self.stage_heads, list) or len(self.stage_heads) != len(self.depths):
                raise ValueError(
                    f"stage_heads must list one head count per stage ({len(self.depths)}), "
                    f"got {self.stage_heads!r}"
                )
            if self.stage_heads[0] != self.n_heads:
                raise ValueError(
                    f"stage_heads[0] ({self.stage_heads[0]}) must equal n_heads ({self.n_heads})"
                )
        for i, (width, heads) in enumerate(zip(self.stage_widths, self.heads_per_stage)):
            _check_int(f"stage_heads[{i}]", heads)
            if width % heads:
                raise ValueError(
                    f"stage {i}: its heads ({heads}) must divide its width "
                    f"d_model * 2^{i} = {width}"
                )
        _check_float("drop_path", self.drop_path, lo=0.0, hi=1.0)
        if self.norm_placement != "pre":
            raise ValueError(
                f"Swin is pre-norm: norm_placement must be 'pre', got {self.norm_placement!r}"
            )
        if self.pos not in ("none", "learned"):
            raise ValueError(
                f"Swin's pos must be 'none' or 'learned' (its relative bias is built in), "
                f"got {self.pos!r}"
            )
        _check_vision_stack(self, "Swin")
        _check_size(self)

    @property
    def n_stages(self) -> int:
        """Stages (``len(depths)``)."""
        return len(self.depths)

    @property
    def n_layers(self) -> int:
        """Swin blocks in all stages."""
        return sum(self.depths)

    @property
    def heads_per_stage(self) -> list[int]:
        """Heads of each stage."""
        if self.stage_heads is not None:
            return list(self.stage_heads)
        return [self.n_heads * 2**i for i in range(self.n_stages)]

    @property
    def stage_widths(self) -> list[int]:
        """Feature width of each stage, ``d_model * 2^i``."""
        return [self.d_model * 2**i for i in range(self.n_stages)]

    @property
    def grid(self) -> int:
        """Patches per side at stage 0."""
        return self.image_size // self.patch_size

    @property
    def stage_grids(self) -> list[int]:
        """Grid side of each stage: patch merging halves it, rounding up (odd grids are
        padded, as in ``transformers``)."""
        sides = [self.grid]
        for _ in range(self.n_stages - 1):
            sides.append((sides[-1] + 1) // 2)
        return sides

    @property
    def n_patches(self) -> int:
        """Tokens at stage 0."""
        return self.grid**2

    @property
    def max_len(self) -> int:
        """Tokens at stage 0 (the longest sequence of the model)."""
        return self.n_patches


BackboneKind = Literal["cnn", "patch", "features"]
BACKBONE_KINDS: tuple[str, ...] = get_args(BackboneKind)


@dataclass
class DETRConfig(TransformerConfig):
    """DETR, the detection Transformer (Carion et al. 2020). Defaults: the paper's
    Transformer (``d = 256``, 8 heads, 6 + 6 post-norm layers, 100 queries, 91 COCO classes)
    on a small CNN backbone for qkv's ``detect`` task (the paper's is a ResNet-50, which qkv
    does not model).

    Args:
        n_encoder_layers: encoder layers.
        n_decoder_layers: decoder layers.
        n_queries: learned object queries ``N`` (the most objects one image can hold).
        n_classes: object classes, without the "no object" class the heads add.
        image_size: input height and width in pixels (``cnn`` and ``patch`` backbones).
        in_channels: image channels.
        backbone: ``"cnn"`` (stride-2 3x3 convolutions, each followed by a ReLU, one per
            entry of ``backbone_channels``: feature stride ``2^len``), ``"patch"`` (one
            convolution with kernel and stride ``patch_size``, as ViT's patch embedding) or
            ``"features"`` (no backbone: the model reads feature maps of
            ``backbone_channels[-1]`` channels, e.g. a ResNet's, as when loading
            ``transformers``' ``DetrForObjectDetection``).
        backbone_channels: output channels of each backbone stage (the last feeds the
            ``1 x 1`` input projection to ``d_model``).
        backbone_norm: batch normalization after each convolution of the ``cnn`` backbone
            (before its ReLU; the convolutions lose their bias), as in DETR's ResNet. Its
            features then arrive at the scale of the sine positions, not far below it.
        patch_size: the ``patch`` backbone's patch side.
        aux_loss: also decode (and train) every decoder layer's output (sec. 3.2).
        cost_class, cost_bbox, cost_giou: the Hungarian matcher's cost weights (eq. 1:
            ``-p(c) * cost_class + L1 * cost_bbox - GIoU * cost_giou``).
        loss_bbox, loss_giou: weights of the L1 and generalized IoU box losses.
        eos_coef: cross-entropy weight of the "no object" class (0.1: its queries outnumber
            the objects).
        (other fields: :class:`TransformerConfig`; positions are DETR's 2-D sine
        encoding, added to queries and keys in every layer.)
    """

    family: ClassVar[str] = "detr"

    d_model: int = 256
    n_heads: int = 8
    d_ff: int = 2048
    dropout: float = 0.1
    pos: PosKind = "sinusoidal"
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    n_queries: int = 100
    n_classes: int = 91
    image_size: int = 64
    in_channels: int = 3
    backbone: BackboneKind = "cnn"
    backbone_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    backbone_norm: bool = False
    patch_size: int = 8
    aux_loss: bool = True
    cost_class: float = 1.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    eos_coef: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.backbone_channels, tuple):
            self.backbone_channels = list(self.backbone_channels)
        super().__post_init__()
        for name in ("n_encoder_layers", "n_decoder_layers", "n_queries", "n_classes"):
            _check_int(name, getattr(self, name))
        for name in ("image_size", "in_channels", "patch_size"):
            _check_int(name, getattr(self, name))
        _check_choice("backbone", self.backbone, BACKBONE_KINDS)
        chans = self.backbone_channels
        if not isinstance(chans, list) or not chans:
            raise ValueError(f"backbone_channels must be a non-empty list of ints, got {chans!r}")
        for i, c in enumerate(chans):
            _check_int(f"backbone_channels[{i}]", c)
        if self.backbone in ("patch", "features") and len(chans) != 1:
            raise ValueError(
                f"backbone={self.backbone!r} has one stage: backbone_channels must have one "
                f"entry, got {chans!r}"
            )
        if self.backbone == "patch" and self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide image_size ({self.image_size})"
            )
        if self.backbone == "cnn" and self.image_size % 2 ** len(chans):
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of the cnn backbone's "
                f"stride 2^{len(chans)} = {2 ** len(chans)}"
            )
        _check_bool("aux_loss", self.aux_loss)
        _check_bool("backbone_norm", self.backbone_norm)
        if self.backbone_norm and self.backbone != "cnn":
            raise ValueError(
                f"backbone_norm is for the cnn backbone, not backbone={self.backbone!r}"
            )
        for name in ("cost_class", "cost_bbox", "cost_giou", "loss_bbox", "loss_giou", "eos_coef"):
            _check_float(name, getattr(self, name), lo=0.0)
        if self.pos != "sinusoidal":
            raise ValueError(
                f"DETR's positions are its 2-D sine encoding: pos must be 'sinusoidal', got {self.pos!r}"
            )
        if self.norm_placement != "post":
            raise ValueError(
                f"DETR is post-norm: norm_placement must be 'post', got {self.norm_placement!r}"
            )
        if self.d_model % 4:
            raise ValueError(
                f"DETR's 2-D sine positions need d_model divisible by 4, got {self.d_model}"
            )
        _check_vision_stack(self, "DETR")
        _check_size(self)

    @property
    def stride(self) -> int:
        """Pixels per feature-map cell."""
        if self.backbone == "cnn":
            return 2 ** len(self.backbone_channels)
        return self.patch_size if self.backbone == "patch" else 1

    @property
    def feature_grid(self) -> int:
        """Feature-map side for ``image_size`` images (``cnn`` and ``patch`` backbones)."""
        return self.image_size // self.stride

    @property
    def max_len(self) -> int:
        """Encoder tokens for ``image_size`` images."""
        return self.feature_grid**2

    @property
    def n_layers(self) -> int:
        """Encoder plus decoder layers."""
        return self.n_encoder_layers + self.n_decoder_layers


@dataclass
class CaptionerConfig(TransformerConfig):
    """An image captioner (Xu et al. 2015's task with Transformers, the layout of
    ``transformers``' ``VisionEncoderDecoderModel`` with a ViT encoder and a GPT-2 decoder):
    a pre-norm ViT encoder (class token, learned positions, final norm) reads the image
    patches; a pre-norm causal decoder with cross-attention over every encoder state
    (learned positions, final norm, output tied to the token embedding by default) writes
    the caption. Both stacks share the fields of :class:`TransformerConfig` and the width
    ``d_model``. Defaults: a small model for qkv's ``caption`` task.

    Args:
        image_size: input height and width in pixels.
        patch_size: square patch side; must divide ``image_size``.
        in_channels: image channels.
        n_encoder_layers: ViT layers.
        n_decoder_layers: decoder layers.
        vocab_size: caption vocabulary.
        max_len: longest caption in tokens (BOS included: the decoder's position table).
        pad_token_id: padding token, or None.
        tie_embeddings: the output projection reuses the token embedding (GPT-2).
        scale_embeddings, embed_norm: must stay False (ViT and GPT-2 have neither).
        (other fields: :class:`TransformerConfig`; ``pos`` must be ``"learned"`` and
        ``norm_placement`` ``"pre"``.)
    """

    family: ClassVar[str] = "captioner"

    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    activation: ModelActivation = "gelu"
    norm_placement: Placement = "pre"
    pos: PosKind = "learned"
    init: InitScheme = "normal"
    image_size: int = 56
    patch_size: int = 7
    in_channels: int = 1
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    vocab_size: int = 64
    max_len: int = 48
    pad_token_id: int | None = 0
    tie_embeddings: bool = True
    scale_embeddings: bool = False
    embed_norm: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_vocab(self, ("n_encoder_layers", "n_decoder_layers"))
        for name in ("image_size", "patch_size", "in_channels"):
            _check_int(name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise ValueError(
                f"patch_size ({self.patch_size}) must divide image_size ({self.image_size})"
            )
        fixed = {
            "pos": "learned",
            "norm_placement": "pre",
            "scale_embeddings": False,
            "embed_norm": False,
        }
        for name, value in fixed.items():
            if getattr(self, name) != value:
                raise ValueError(
                    f"CaptionerConfig needs {name}={value!r}, got {getattr(self, name)!r}"
                )
        _check_vision_stack(self, "The captioner")
        _check_size(self)

    @property
    def n_patches(self) -> int:
        """Patches per image, ``(image_size / patch_size)^2``."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def n_layers(self) -> int:
        """Encoder plus decoder layers."""
        return self.n_encoder_layers + self.n_decoder_layers


@dataclass
class XLNetConfig(TransformerConfig):
    """XLNet (Yang et al. 2019): a permutation language model with two-stream relative
    attention (:class:`~qkv.models.xlnet.XLNetLM`). Defaults: XLNet-base (cased).

    Its attention has no biases and Transformer-XL's relative positions always (``pos`` is
    ``"xl"``); ``bias`` concerns the feed-forward network; layers are post-norm.

    Args:
        vocab_size: vocabulary.
        n_layers: layers.
        max_len: the longest sequence a task feeds it (positions are relative: no table).
        pad_token_id: padding token, or None.
        attn_type: ``"bi"`` (bidirectional, XLNet's pretraining) or ``"uni"`` (causal).
        tie_embeddings: the head's weight is the word embedding (XLNet: always).
        scale_embeddings, embed_norm: must stay False (XLNet has neither).
        (other fields: :class:`TransformerConfig`.)
    """

    family: ClassVar[str] = "xlnet"

    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    activation: ModelActivation = "gelu"
    norm_eps: float = 1e-12
    norm_placement: Placement = "post"
    pos: PosKind = "xl"
    attn_dropout: float = 0.1
    init: InitScheme = "normal"
    vocab_size: int = 32000
    n_layers: int = 12
    max_len: int = 512
    pad_token_id: int | None = 5
    attn_type: Literal["bi", "uni"] = "bi"
    tie_embeddings: bool = True
    scale_embeddings: bool = False
    embed_norm: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_vocab(self, ("n_layers",))
        _check_choice("attn_type", self.attn_type, ("bi", "uni"))
        fixed = {
            "pos": "xl",
            "norm_placement": "post",
            "attn_kind": "softmax",
            "reversible": False,
            "n_kv_heads": None,
            "scale_embeddings": False,
            "embed_norm": False,
            "bias": True,
            "ff_chunk_size": 0,
        }
        for name, value in fixed.items():
            if getattr(self, name) != value:
                raise ValueError(f"XLNetConfig needs {name}={value!r}, got {getattr(self, name)!r}")
        _check_size(self)


@dataclass
class CLIPConfig(TransformerConfig):
    """CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
    Supervision"): an image tower and a text tower projected into one embedding space.

    The shared fields (:class:`TransformerConfig`) describe the text tower, a causal pre-norm
    Transformer read at its end-of-text token; the ``vision_*`` fields the image tower, a
    pre-norm ViT with a norm before its first layer, read at its class token. Both towers
    share the activation, norms, dropouts and initialization. Defaults: ViT-B/32 CLIP.

    Args:
        vocab_size: text vocabulary.
        n_layers: text-tower layers.
        max_len: longest text in tokens (size of the text position table).
        eos_token_id: the end-of-text token; the text embedding is the first one's state.
        pad_token_id: padding token, or None.
        image_size: input height and width in pixels.
        patch_size: square patch side; must divide ``image_size``.
        in_channels: image channels.
        vision_d_model: image-tower width.
        vision_n_heads: image-tower heads.
        vision_d_ff: image-tower feed-forward width.
        vision_n_layers: image-tower layers.
        embed_dim: width of the shared embedding space (the projections' output).
        logit_scale_init: initial ``log`` of the temperature's inverse, ``ln(1 / 0.07)``.
        max_logit_scale: the scale is clamped to at most this (100 in CLIP, sec. 2.5).
        (other fields: :class:`TransformerConfig`.)
    """

    family: ClassVar[str] = "clip"

    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 2048
    activation: ModelActivation = "quick_gelu"
    norm_placement: Placement = "pre"
    dropout: float = 0.0
    pos: PosKind = "learned"
    init: InitScheme = "normal"
    vocab_size: int = 49408
    n_layers: int = 12
    max_len: int = 77
    eos_token_id: int = 49407
    pad_token_id: int | None = None
    image_size: int = 224
    patch_size: int = 32
    in_channels: int = 3
    vision_d_model: int = 768
    vision_n_heads: int = 12
    vision_d_ff: int = 3072
    vision_n_layers: int = 12
    embed_dim: int = 512
    logit_scale_init: float = 2.6592
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("vocab_size", "max_len", "n_layers", "vision_n_layers"):
            _check_int(name, getattr(self, name))
        if self.pad_token_id is not None:
            _check_int("pad_token_id", self.pad_token_id, minimum=0)
            if self.pad_token_id >= self.vocab_size:
                raise ValueError(
                    f"pad_token_id ({self.pad_token_id}) must be < vocab_size ({self.vocab_size})"
                )
        _check_vision_tower(self, "CLIPConfig")
        _check_int("embed_dim", self.embed_dim)
        _check_int("eos_token_id", self.eos_token_id, minimum=0)
        if self.eos_token_id >= self.vocab_size:
            raise ValueError(
                f"eos_token_id ({self.eos_token_id}) must be < vocab_size ({self.vocab_size})"
            )
        _check_float("logit_scale_init", self.logit_scale_init, lo=-1e3, hi=1e3)
        _check_float("max_logit_scale", self.max_logit_scale, lo=0.0)
        if self.max_logit_scale <= 1.0:
            raise ValueError(f"max_logit_scale must be > 1, got {self.max_logit_scale!r}")
        if self.norm_placement != "pre" or self.pos != "learned":
            raise ValueError(
                f"CLIPConfig needs norm_placement='pre' and pos='learned', got "
                f"{self.norm_placement!r} and {self.pos!r}"
            )
        _check_size(self)

    @property
    def n_patches(self) -> int:
        """Patches per image, ``(image_size / patch_size)^2``."""
        return (self.image_size // self.patch_size) ** 2

    def vision_config(self) -> ViTConfig:
        """The image tower as a :class:`ViTConfig` (its classification head is not built)."""
        return _vision_tower_config(self)


def _check_vision_tower(cfg: Any, name: str) -> None:
    """The ``vision_*`` and image fields of the families with a CLIP image tower."""
    names = ("image_size", "patch_size", "in_channels", "vision_d_model", "vision_n_heads")
    for field_name in (*names, "vision_d_ff", "vision_n_layers"):
        _check_int(field_name, getattr(cfg, field_name))
    if cfg.image_size % cfg.patch_size:
        raise ValueError(f"patch_size ({cfg.patch_size}) must divide image_size ({cfg.image_size})")
    if cfg.vision_d_model % cfg.vision_n_heads:
        raise ValueError(
            f"vision_n_heads ({cfg.vision_n_heads}) must divide vision_d_model "
            f"({cfg.vision_d_model})"
        )
    _check_vision_stack(cfg, name)


def _vision_tower_config(cfg: Any) -> ViTConfig:
    """A CLIP image tower's fields as a :class:`ViTConfig` (activation, norms, dropouts and
    initialization shared with the rest of the model)."""
    return ViTConfig(
        d_model=cfg.vision_d_model,
        n_heads=cfg.vision_n_heads,
        d_ff=cfg.vision_d_ff,
        n_layers=cfg.vision_n_layers,
        activation=cfg.activation,
        norm=cfg.norm,
        norm_eps=cfg.norm_eps,
        norm_placement="pre",
        bias=cfg.bias,
        dropout=cfg.dropout,
        attn_dropout=cfg.attn_dropout,
        ff_dropout=cfg.ff_dropout,
        pos="learned",
        attn_backend=cfg.attn_backend,
        init=cfg.init,
        init_std=cfg.init_std,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        in_channels=cfg.in_channels,
        n_classes=1,
    )


@dataclass
class LlavaConfig(LMConfig):
    """A LLaVA-style vision-language model (Liu et al. 2023, "Visual Instruction Tuning"): a
    CLIP image tower whose patch states, projected by a two-layer MLP, are the first tokens
    of a decoder-only language model. The :class:`LMConfig` fields describe the language
    model; the ``vision_*`` fields the image tower (as :class:`CLIPConfig`'s). ``max_len``
    covers the image tokens and the text.

    Args:
        image_size: input height and width in pixels.
        patch_size: square patch side; must divide ``image_size``.
        in_channels: image channels.
        vision_d_model: image-tower width.
        vision_n_heads: image-tower heads.
        vision_d_ff: image-tower feed-forward width.
        vision_n_layers: image-tower layers.
        (other fields: :class:`LMConfig`.)

    Raises:
        ValueError: Transformer-XL memory, sliding windows or segments (the image prefix
            is one block), or ``max_len`` not above the patch count.
    """

    family: ClassVar[str] = "llava"

    image_size: int = 224
    patch_size: int = 14
    in_channels: int = 3
    vision_d_model: int = 1024
    vision_n_heads: int = 16
    vision_d_ff: int = 4096
    vision_n_layers: int = 24

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_vision_tower(self, "LlavaConfig")
        for name in ("mem_len", "segment_len", "sliding_window"):
            if getattr(self, name):
                raise ValueError(f"LlavaConfig needs {name}=0, got {getattr(self, name)}")
        if self.max_len <= self.n_patches:
            raise ValueError(
                f"max_len ({self.max_len}) must exceed the {self.n_patches} image tokens"
            )

    @property
    def n_patches(self) -> int:
        """Image tokens, ``(image_size / patch_size)^2``."""
        return (self.image_size // self.patch_size) ** 2

    def vision_config(self) -> ViTConfig:
        """The image tower as a :class:`ViTConfig` (its classification head is not built)."""
        return _vision_tower_config(self)

    def lm_config(self) -> LMConfig:
        """The language model's own :class:`LMConfig`."""
        fields = {f.name for f in dataclasses.fields(LMConfig)}
        return LMConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in fields})


CONFIG_CLASSES: dict[str, type[TransformerConfig]] = {
    c.family: c
    for c in (
        Seq2SeqConfig,
        WhisperConfig,
        LMConfig,
        EncoderConfig,
        ViTConfig,
        SwinConfig,
        DETRConfig,
        XLNetConfig,
        CLIPConfig,
        LlavaConfig,
        CaptionerConfig,
    )
}


def config_from_dict(d: dict[str, Any]) -> TransformerConfig:
    """Rebuild any family's config from a dict with a ``"family"`` key.

    Raises:
        ValueError: a missing or unknown family (the known ones are listed).
    """
    family = d.get("family")
    if family not in CONFIG_CLASSES:
        raise ValueError(f"family must be one of {tuple(CONFIG_CLASSES)}, got {family!r}")
    return CONFIG_CLASSES[family].from_dict(d)
