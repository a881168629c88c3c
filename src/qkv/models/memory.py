"""Memory estimates from a config, and a check that refuses work before it allocates.

A config fixes the shape of every parameter, so the size of the model it describes is
arithmetic on its fields: :func:`parameter_count` equals
``count_parameters(build(config))`` (:mod:`qkv.models.counting`) without building anything,
for every family, tied or untied embeddings, grouped-query heads, pruned heads and every
position kind. From it follow the bytes of the weights (:func:`parameter_bytes`), of
training with Adam (:func:`training_bytes`) and of a decoding cache
(:func:`kv_cache_bytes`).

:func:`check_memory` compares an estimate with what the device has free
(:func:`available_memory`) and raises :class:`MemoryLimitError`, one line naming what needed
the memory, the estimate and the memory available, instead of letting an allocation swap or
kill the process. :func:`qkv.models.build` calls it before building on a real device; the
configs refuse, whatever the machine, more than :data:`MAX_PARAMETERS` parameters.

>>> from qkv.models.config import LMConfig
>>> parameter_count(LMConfig(d_model=64, n_heads=4, d_ff=256, n_layers=2, vocab_size=100))
172032
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from qkv.attn.favor import default_features
from qkv.models._vision_memory import BUFFER_COUNTS, PARAMETER_COUNTS, llava_extra_count

if TYPE_CHECKING:  # the configs import this module: no import of them at run time
    from qkv.models.config import TransformerConfig

#: The most parameters any config may describe, on any machine: 2**40 (about 1.1e12, 4 TiB
#: in float32) is more than a single device or host holds, and ``build`` builds on one.
MAX_PARAMETERS: int = 2**40

#: Share of the free memory that :func:`check_memory` lets one request take by default.
DEFAULT_FRACTION: float = 0.9

#: Feed-forward activations with a gate (``fc_gate`` beside ``fc1``): three matrices, not two.
GATED_ACTIVATIONS: frozenset[str] = frozenset({"swiglu", "geglu", "geglu_tanh"})

_GIB = 2**30
_MEMINFO = Path("/proc/meminfo")
# cgroup v2, then v1: (limit file, usage file)
_CGROUP_FILES = (
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
    (
        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ),
)
_ATTN_NAME = re.compile(r"(encoder|decoder)\.layers\.(\d+)\.(self_attn|cross_attn)")


class MemoryLimitError(ValueError):
    """An allocation refused before it started: the estimate does not fit in memory."""


# -- parameter count from the config ---------------------------------------------------
def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _norm(cfg: TransformerConfig) -> int:
    """LayerNorm has a weight and a bias, RMSNorm a weight."""
    return cfg.d_model * (2 if cfg.norm == "layer" else 1)


def _attention(cfg: TransformerConfig, heads: int, kv_heads: int) -> int:
    """``qkv_proj`` (queries, keys and values stacked) and ``out_proj`` (XLNet's: no biases)."""
    d, d_h = cfg.d_model, cfg.d_head
    bias = cfg.bias and cfg.family != "xlnet"
    return _linear(d, (heads + 2 * kv_heads) * d_h, bias) + _linear(heads * d_h, d, bias)


def _self_attention_extras(cfg: TransformerConfig, cross: bool = False) -> int:
    """What a self-attention module of ``cfg.attn_kind`` holds beyond (or short of)
    :func:`_attention`'s projections: Linformer's ``proj_k`` and ``proj_v``; LSH attention
    has no key projection (queries and keys are shared); Transformer-XL's relative score
    holds ``r_proj``, ``u`` and ``v``."""
    if cross:
        return 0
    if cfg.pos == "xl":
        width = cfg.n_heads * cfg.d_head
        # XLNet adds the segment bias and two segment vectors
        segments = 3 * width if cfg.family == "xlnet" else 0
        return _linear(cfg.d_model, width, False) + 2 * width + segments
    if cfg.attn_kind == "linformer":
        return 2 * cfg.linformer_k * cfg.max_len  # type: ignore[attr-defined]
    if cfg.attn_kind == "lsh":
        return -_linear(cfg.d_model, cfg.kv_heads * cfg.d_head, cfg.bias)
    return 0


def _feedforward(cfg: TransformerConfig) -> int:
    d, d_ff = cfg.d_model, cfg.d_ff
    n_in = 2 if cfg.activation in GATED_ACTIVATIONS else 1  # fc1 (and fc_gate)
    return n_in * _linear(d, d_ff, cfg.bias) + _linear(d_ff, d, cfg.bias)


def _stacks(cfg: TransformerConfig) -> dict[str, tuple[int, bool]]:
    """Stack name -> (layers, cross-attention?) of a family."""
    family = cfg.family
    if family in ("seq2seq", "whisper"):
        return {
            "encoder": (cfg.n_encoder_layers, False),  # type: ignore[attr-defined]
            "decoder": (cfg.n_decoder_layers, True),  # type: ignore[attr-defined]
        }
    if family == "lm":
        return {"decoder": (cfg.n_layers, False)}  # type: ignore[attr-defined]
    if family in ("encoder", "vit", "xlnet"):
        return {"encoder": (cfg.n_layers, False)}  # type: ignore[attr-defined]
    raise TypeError(
        f"memory estimates need a Seq2SeqConfig, LMConfig, EncoderConfig, ViTConfig or "
        f"XLNetConfig, got {type(cfg).__name__}"
    )


def _pruned(cfg: TransformerConfig) -> Iterator[tuple[str, int, str, int, int]]:
    """``(stack, layer, "self_attn" | "cross_attn", heads, kv_heads)`` of each module that
    ``cfg.pruned_heads`` prunes, with the heads it keeps (as
    :func:`qkv.models.prune.prune_module` leaves them). Names the model does not have are
    skipped: building such a config raises."""
    stacks = _stacks(cfg)
    group = cfg.n_heads // cfg.kv_heads  # query heads per key/value head
    for name, removed in cfg.pruned_heads.items():
        m = _ATTN_NAME.fullmatch(name)
        if m is None or m[1] not in stacks:
            continue
        n_layers, cross = stacks[m[1]]
        layer = int(m[2])
        if layer >= n_layers or (m[3] == "cross_attn" and not cross):
            continue
        gone = set(removed)
        per_group: dict[int, int] = {}
        for i in gone:
            per_group[i // group] = per_group.get(i // group, 0) + 1
        emptied = sum(n == group for n in per_group.values())  # kv heads nobody reads
        yield m[1], layer, m[3], cfg.n_heads - len(gone), cfg.kv_heads - emptied


def _stack(cfg: TransformerConfig, name: str, n_layers: int, cross: bool) -> int:
    full = _attention(cfg, cfg.n_heads, cfg.kv_heads)
    layer = full + _self_attention_extras(cfg) + _feedforward(cfg) + 2 * _norm(cfg)
    if cross:
        layer += full + _norm(cfg)
    total = n_layers * layer
    if cfg.norm_placement == "pre":
        total += _norm(cfg)  # the final norm
    if cfg.pos == "relative":
        total += cfg.rel_buckets * cfg.n_heads  # one bias table per stack (T5)
    for stack, _, _, heads, kv_heads in _pruned(cfg):
        if stack == name:
            total += _attention(cfg, heads, kv_heads) - full
    return total


def _embedding_extras(cfg: Any, max_len: int, type_vocab_size: int = 0) -> int:
    """What an :class:`~qkv.models.embeddings.Embeddings` holds besides the token matrix:
    a learned position table, a token-type table, a norm."""
    d = cfg.d_model
    total = max_len * d if cfg.pos == "learned" else 0
    total += type_vocab_size * d
    return total + (_norm(cfg) if cfg.embed_norm else 0)


def _head_count(cfg: Any) -> int:
    """Everything outside the stacks: embeddings, patch embedding, pooler and heads."""
    d, family = cfg.d_model, cfg.family
    if family == "lm":
        tok = cfg.vocab_size * d
        return tok + _embedding_extras(cfg, cfg.max_len) + (0 if cfg.tie_embeddings else tok)
    if family == "seq2seq":
        tgt = cfg.target_vocab * d
        total = cfg.vocab_size * d + (0 if cfg.share_embeddings else tgt)
        total += 2 * _embedding_extras(cfg, cfg.max_len)  # source and target each
        total += 0 if cfg.tie_embeddings else tgt
        return total + (cfg.target_vocab if cfg.output_bias else 0)
    if family == "whisper":  # convolutions, decoder tokens and positions (and the heads)
        total = _linear(3 * cfg.n_mels, d, True) + _linear(3 * d, d, True)  # kernel 3
        total += cfg.vocab_size * d + _embedding_extras(cfg, cfg.max_len)
        total += 0 if cfg.tie_embeddings else cfg.vocab_size * d
        total += _linear(d, cfg.vocab_size, True) if cfg.ctc_head else 0
        return total + (cfg.vocab_size if cfg.output_bias else 0)
    if family == "xlnet":  # word embedding, mask_emb, head bias (and an untied head)
        tok = cfg.vocab_size * d
        return tok + d + cfg.vocab_size + (0 if cfg.tie_embeddings else tok)
    if family == "encoder":
        total = cfg.vocab_size * d + _embedding_extras(cfg, cfg.max_len, cfg.type_vocab_size)
        if cfg.pooler:
            total += _linear(d, d, True)
        if cfg.mlm_head:  # dense, norm, decoder (its weight maybe tied, its bias never)
            total += _linear(d, d, True) + _norm(cfg) + cfg.vocab_size
            total += 0 if cfg.tie_embeddings else cfg.vocab_size * d
        if cfg.n_classes:
            total += _linear(d, cfg.n_classes, True)
        return total
    # vit: patch projection (a conv with bias), class token, positions, classifier
    total = _linear(cfg.in_channels * cfg.patch_size**2, d, True) + d
    total += cfg.max_len * d if cfg.pos == "learned" else 0
    return total + _linear(d, cfg.n_classes, True)


def parameter_count(config: TransformerConfig) -> int:
    """Parameters of the model a config describes, computed from its fields alone.

    Equals ``count_parameters(build(config))``: shared (tied) matrices once, pruned heads
    removed. Nothing is built, so a config of any size costs microseconds.

    Args:
        config: a family config (seq2seq, lm, encoder or vit).

    Returns:
        The number of parameters.

    Raises:
        TypeError: a config of no known family.
    """
    if config.family in PARAMETER_COUNTS:  # the vision families (Swin, DETR, CLIP)
        return PARAMETER_COUNTS[config.family](config)
    if config.family == "llava":  # a language model with an image tower and projector
        return parameter_count(config.lm_config()) + llava_extra_count(config)  # type: ignore[attr-defined]
    stacks = _stacks(config)
    total = _head_count(config)
    for name, (n_layers, cross) in stacks.items():
        total += _stack(config, name, n_layers, cross)
    return total


def buffer_count(config: TransformerConfig) -> int:
    """Elements of the non-parameter tensors built with the model: sinusoidal position
    tables (``max_len x d_model`` per embedding), ALiBi slopes (``n_heads`` per stack) and
    FAVOR+ random features (``m x d_h`` per self-attention).

    Raises:
        TypeError: a config of no known family.
    """
    if config.family in BUFFER_COUNTS:
        return BUFFER_COUNTS[config.family](config)
    if config.family == "llava":
        return buffer_count(config.lm_config())  # type: ignore[attr-defined]
    stacks = _stacks(config)
    total = len(stacks) * config.n_heads if config.pos == "alibi" else 0
    if config.family == "whisper":  # the encoder's sinusoids (a persistent buffer)
        total += config.max_source_len * config.d_model  # type: ignore[attr-defined]
    if config.pos == "sinusoidal":
        tables = 2 if config.family == "seq2seq" else 1
        total += tables * config.max_len * config.d_model  # type: ignore[attr-defined]
    if config.attn_kind == "favor":  # one (m, d_h) feature matrix per self-attention
        m = config.favor_features or default_features(config.d_head)
        total += sum(n for n, _ in stacks.values()) * m * config.d_head
    return total


# -- bytes -------------------------------------------------------------------------------
def _itemsize(dtype: torch.dtype) -> int:
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype, got {dtype!r}")
    return dtype.itemsize


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def parameter_bytes(config: TransformerConfig, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the parameters, :func:`parameter_count` elements of ``dtype``.

    Raises:
        ValueError: ``dtype`` is not a ``torch.dtype``.
    """
    return parameter_count(config) * _itemsize(dtype)


def model_bytes(config: TransformerConfig, dtype: torch.dtype = torch.float32) -> int:
    """Bytes a freshly built model holds: parameters and buffers (:func:`buffer_count`).

    Raises:
        ValueError: ``dtype`` is not a ``torch.dtype``.
    """
    return (parameter_count(config) + buffer_count(config)) * _itemsize(dtype)


def training_bytes(config: TransformerConfig, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of training with Adam, activations excluded: the weights, their gradients and
    Adam's two moments, ``4 x`` :func:`parameter_bytes` (Kingma & Ba 2015), plus buffers.

    Raises:
        ValueError: ``dtype`` is not a ``torch.dtype``.
    """
    return (4 * parameter_count(config) + buffer_count(config)) * _itemsize(dtype)


def _check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def kv_cache_bytes(
    config: TransformerConfig,
    batch: int,
    length: int,
    dtype: torch.dtype = torch.float32,
    *,
    source_length: int | None = None,
) -> int:
    """Bytes of a decoding cache: what ``model.make_cache(batch, length)`` allocates plus,
    for an encoder-decoder, the cross-attention keys and values projected from the source.

    Per decoder layer, self-attention keeps keys and values ``(b, h_kv, length, d_h)``
    each (``h_kv`` after pruning); cross-attention ``(b, h_kv, source_length, d_h)`` each.

    Args:
        config: an :class:`~qkv.models.config.LMConfig` or
            :class:`~qkv.models.config.Seq2SeqConfig`.
        batch: sequences decoded together (beams included).
        length: most tokens the self-attention cache holds (prompt + generated).
        dtype: the cache's dtype.
        source_length: source tokens (encoder-decoders); default the config's ``max_len``.

    Returns:
        Bytes.

    Raises:
        ValueError: a non-positive size, a config without a decoder, or a bad ``dtype``.
    """
    _check_positive("batch", batch)
    _check_positive("length", length)
    item = _itemsize(dtype)
    stacks = _stacks(config)
    if "decoder" not in stacks:
        raise ValueError(
            f"{type(config).__name__} describes a model without a decoder: no decoding cache"
        )
    n_layers, cross = stacks["decoder"]
    if source_length is None:
        source_length = config.max_len  # type: ignore[attr-defined]
    _check_positive("source_length", source_length)
    # kv heads per (layer, kind), unpruned unless listed
    pruned = {(i, kind): kv for stack, i, kind, _, kv in _pruned(config) if stack == "decoder"}
    per_token = 2 * batch * config.d_head * item  # keys and values of one kv head
    self_heads = n_layers * config.kv_heads
    cross_heads = n_layers * config.kv_heads if cross else 0
    for (_, kind), kv in pruned.items():
        if kind == "self_attn":
            self_heads += kv - config.kv_heads
        else:
            cross_heads += kv - config.kv_heads
    return per_token * (self_heads * length + cross_heads * source_length)


# -- what the machine has ----------------------------------------------------------------
def _meminfo_available() -> int | None:
    try:
        text = _MEMINFO.read_text()
    except OSError:
        return None
    m = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m[1]) * 1024 if m else None


def _sysconf_available() -> int | None:
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        page = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page if pages > 0 and page > 0 else None


def _cgroup_room() -> int | None:
    """Bytes left under the container's memory limit, or None without a limit."""
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit, usage = limit_file.read_text().strip(), usage_file.read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and usage.isdigit() and int(limit) < 2**60:  # v1 "no limit" ~2**63
            return max(int(limit) - int(usage), 0)
        return None
    return None


def available_memory(device: torch.device | str = "cpu") -> int:
    """Bytes a new allocation can take on ``device`` now.

    CPU (and MPS, which shares it): ``MemAvailable`` of ``/proc/meminfo``, else the free
    physical pages of ``os.sysconf``, capped by the room left under a cgroup (container)
    limit. CUDA: the free memory of ``torch.cuda.mem_get_info``.

    Args:
        device: a device or its name.

    Returns:
        Bytes.

    Raises:
        ValueError: a device type with no known way to ask (``meta`` included), CUDA when it
            is not available, or a host that reports no free memory.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"cannot measure the memory of {dev}: CUDA is not available")
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    if dev.type not in ("cpu", "mps"):
        raise ValueError(f"cannot measure the memory of device type {dev.type!r}")
    free = _meminfo_available()
    if free is None:
        free = _sysconf_available()
    if free is None:
        raise ValueError("cannot measure the free memory of this host")
    room = _cgroup_room()
    return free if room is None else min(free, room)


def check_model_memory(config: TransformerConfig) -> None:
    """Refuse, before anything is allocated, a model of ``config`` that does not fit in the
    free memory of the default device, in the default dtype (nothing is checked on
    ``meta``).

    Raises:
        MemoryLimitError: with the estimate and the memory available.
    """
    device = torch.get_default_device()
    if device.type == "meta":
        return
    dtype = torch.get_default_dtype()
    check_memory(
        model_bytes(config, dtype),
        f"model of {parameter_count(config):,} parameters in {dtype_name(dtype)}",
        device=device,
        hint='build it under `with torch.device("meta")` to inspect it without allocating',
    )


def format_gib(n_bytes: int | float) -> str:
    """``"4,656.6 GiB"``."""
    return f"{n_bytes / _GIB:,.1f} GiB"


def check_memory(
    need_bytes: int,
    what: str,
    *,
    device: torch.device | str = "cpu",
    fraction: float = DEFAULT_FRACTION,
    hint: str | None = None,
) -> None:
    """Refuse, before allocating, what will not fit in the free memory of ``device``.

    Nothing is checked on ``meta`` nor on a device whose memory cannot be measured
    (:func:`available_memory` raises): the allocation itself will tell.

    Args:
        need_bytes: the estimate.
        what: what needs it, for the message (``"model of 1,250,000,000,000 parameters in
            float32"``).
        device: where it will be allocated.
        fraction: share of the free memory it may take, in ``(0, 1]``.
        hint: what to do instead, appended to the message.

    Raises:
        MemoryLimitError: ``need_bytes > fraction * available_memory(device)``, in one line
            with the estimate and the memory available in GiB.
        ValueError: a negative ``need_bytes`` or a ``fraction`` outside ``(0, 1]``.
    """
    if isinstance(need_bytes, bool) or not isinstance(need_bytes, int) or need_bytes < 0:
        raise ValueError(f"need_bytes must be an int >= 0, got {need_bytes!r}")
    ok = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    if not ok or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    dev = torch.device(device)
    if dev.type == "meta":
        return
    try:
        free = available_memory(dev)
    except ValueError:
        return
    limit = int(free * fraction)
    if need_bytes <= limit:
        return
    share = "" if fraction == 1 else f" ({fraction:.0%} of {format_gib(free)} free)"
    tail = f"; {hint}" if hint else ""
    raise MemoryLimitError(
        f"{what} ({format_gib(need_bytes)}) does not fit in the {format_gib(limit)} of memory "
        f"available on {dev}{share}{tail}"
    )


__all__ = [
    "DEFAULT_FRACTION",
    "GATED_ACTIVATIONS",
    "MAX_PARAMETERS",
    "MemoryLimitError",
    "available_memory",
    "buffer_count",
    "check_memory",
    "check_model_memory",
    "dtype_name",
    "format_gib",
    "kv_cache_bytes",
    "model_bytes",
    "parameter_bytes",
    "parameter_count",
    "training_bytes",
]
