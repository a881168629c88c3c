"""Sizes of the model a config describes, measured on ``meta``; and a check that refuses
work before it allocates.

Parameter and buffer counts are not a second, hand-kept description of each architecture:
the family's model is built on the ``meta`` device (nothing is allocated, no random number
is drawn) and its tensors are counted. A config may ask for thousands of layers, so the
model is built with one and with two layers of each depth field of its
:class:`~qkv.models.family.Family` (``n_layers``, ``n_encoder_layers``, Swin's ``depths``,
...) and the count extended linearly: layers of one stack are alike, so
``count(n) = count(1) + (n - 1) (count(2) - count(1))`` exactly. (Pruned heads make layers
differ: a config with ``pruned_heads`` is built whole.) What cannot be measured this way,
the decoding cache, is one formula over the attention modules the model has
(:func:`kv_cache_bytes`).

:func:`check_memory` compares an estimate with what the device has free
(:func:`available_memory`) and raises :class:`MemoryLimitError`, one line naming what needed
the memory, the estimate and the memory available, instead of letting an allocation swap or
kill the process. :func:`qkv.models.build` calls it before building on a real device; the
configs refuse, whatever the machine, more than :data:`MAX_PARAMETERS` parameters.

>>> from qkv.models import LMConfig
>>> parameter_count(LMConfig(d_model=64, n_heads=4, d_ff=256, n_layers=2, vocab_size=100))
172032
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from qkv._checks import check_int
from qkv.attn.mha import MultiHeadAttention
from qkv.models import family as registry

#: A family config (:class:`qkv.models.config.TransformerConfig`). The configs import this
#: module, so it imports none of them, not even for type checking.
Config = Any

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
# measured (parameters, buffers) of recent configs: configs are checked when made and
# again when built, and a preset is made many times
_CACHE: dict[tuple[str, bool, str], tuple[int, int]] = {}
_CACHE_SIZE = 512
# models being built to be measured (a model may make configs of its parts, as CLIP's image
# tower; the measure of the whole already bounds them)
_MEASURING: list[str] = []


class MemoryLimitError(ValueError):
    """An allocation refused before it started: the estimate does not fit in memory."""


# -- counts measured on meta -------------------------------------------------------------
def _family(config: Config) -> registry.Family:
    found = registry.family_of(config)
    if found is None or not isinstance(config, found.config_class):
        raise TypeError(
            f"memory estimates need the config of a registered model family, got "
            f"{type(config).__name__}"
        )
    return found


# in-place ops that only set values (initializers): nothing to do on a meta tensor
_VALUE_OPS = frozenset(
    {
        torch.Tensor.normal_,
        torch.Tensor.uniform_,
        torch.Tensor.fill_,
        torch.Tensor.zero_,
        torch.Tensor.erfinv_,
        torch.Tensor.clamp_,
        torch.Tensor.mul_,
        torch.Tensor.add_,
        torch.Tensor.copy_,
        nn.init.normal_,
        nn.init.uniform_,
        nn.init.trunc_normal_,
        nn.init.constant_,
        nn.init.zeros_,
        nn.init.ones_,
        nn.init.xavier_uniform_,
        nn.init.xavier_normal_,
        nn.init.kaiming_uniform_,
        nn.init.kaiming_normal_,
    }
)


class _SkipMetaInit(TorchFunctionMode):
    """Skips the initializers' value-only in-place ops on meta tensors: they have no values,
    and some (``normal_``) would run through slow Python decompositions."""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _VALUE_OPS:
            target = args[0] if args else kwargs.get("tensor")  # nn.init passes tensor=
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


def build_on_meta(config: Config) -> nn.Module:
    """The family's model of ``config`` on the ``meta`` device: every tensor has its shape,
    none has memory, and the global random state is left as it was."""
    model_class = _family(config).model_class
    _MEASURING.append(config.family)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"), _SkipMetaInit():
            return model_class(config)
    finally:
        _MEASURING.pop()


def measuring() -> bool:
    """True while a model is being built on ``meta`` to be measured."""
    return bool(_MEASURING)


def _count(config: Config) -> tuple[int, int]:
    model = build_on_meta(config)
    return sum(p.numel() for p in model.parameters()), sum(b.numel() for b in model.buffers())


def _depths(config: Config, fields: tuple[str, ...]) -> list[tuple[str, int | None]]:
    """``(field, index)`` of every depth: an int field, or each entry of a list field."""
    out: list[tuple[str, int | None]] = []
    for name in fields:
        value = getattr(config, name)
        if isinstance(value, list):
            out += [(name, i) for i in range(len(value))]
        else:
            out.append((name, None))
    return out


def _with_depths(config: Config, depths: list[tuple[str, int | None]], values: list[int]) -> Config:
    """A copy of ``config`` with other depths and no pruned heads (not validated again:
    only the model is built from it)."""
    variant = copy.copy(config)
    variant.pruned_heads = {}
    for (name, index), value in zip(depths, values):
        if index is None:
            setattr(variant, name, value)
        else:
            entries = list(getattr(variant, name))
            entries[index] = value
            setattr(variant, name, entries)
    return variant


def _measure(config: Config, exact: bool) -> tuple[int, int]:
    """(parameters, buffers) of ``config``'s model; with ``exact=False`` pruned heads are
    left out (an upper bound, for the ceiling every config is checked against)."""
    found = _family(config)
    exact = exact and bool(config.pruned_heads)  # without pruned heads both are exact
    key = (found.name, exact, json.dumps(config.to_dict(), sort_keys=True, default=repr))
    if key in _CACHE:
        return _CACHE[key]
    depths = _depths(config, found.depth_fields)
    want = [getattr(config, n) if i is None else getattr(config, n)[i] for n, i in depths]
    if exact or max(want, default=0) <= 2:  # one build of the whole model is cheaper
        result = _count(config if exact else _with_depths(config, [], []))
    else:
        ones = [1] * len(depths)
        p, b = base = _count(_with_depths(config, depths, ones))
        for k, n in enumerate(want):
            if n > 1:
                p2, b2 = _count(_with_depths(config, depths, [*ones[:k], 2, *ones[k + 1 :]]))
                p, b = p + (n - 1) * (p2 - base[0]), b + (n - 1) * (b2 - base[1])
        result = (p, b)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    _CACHE[key] = result
    return result


def parameter_count(config: Config) -> int:
    """Parameters of the model a config describes: ``count_parameters(build(config))``
    (shared tensors once, pruned heads removed), measured on ``meta``.

    Raises:
        TypeError: a config of no registered family.
    """
    return _measure(config, exact=True)[0]


def parameter_ceiling(config: Config) -> int:
    """:func:`parameter_count` without the pruned heads' savings: what every config is
    checked against :data:`MAX_PARAMETERS` with (pruned heads name layers, so the exact
    count of a config with thousands of them would build every layer)."""
    return _measure(config, exact=False)[0]


def buffer_count(config: Config) -> int:
    """Elements of the non-parameter tensors built with the model (sinusoidal tables,
    ALiBi slopes, FAVOR+ features, Swin's relative position index, ...), measured on
    ``meta``.

    Raises:
        TypeError: a config of no registered family.
    """
    return _measure(config, exact=True)[1]


# -- bytes -------------------------------------------------------------------------------
def _itemsize(dtype: torch.dtype) -> int:
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype, got {dtype!r}")
    return dtype.itemsize


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def parameter_bytes(config: Config, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the parameters, :func:`parameter_count` elements of ``dtype``.

    Raises:
        ValueError: ``dtype`` is not a ``torch.dtype``.
    """
    return parameter_count(config) * _itemsize(dtype)


def model_bytes(config: Config, dtype: torch.dtype = torch.float32) -> int:
    """Bytes a freshly built model holds: parameters and buffers (:func:`buffer_count`).

    Raises:
        ValueError: ``dtype`` is not a ``torch.dtype``.
    """
    return (parameter_count(config) + buffer_count(config)) * _itemsize(dtype)


def training_bytes(config: Config, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of training with Adam, activations excluded: the weights, their gradients and
    Adam's two moments, ``4 x`` :func:`parameter_bytes` (Kingma & Ba 2015), plus buffers.

    Raises:
        ValueError: ``dtype`` is not a ``torch.dtype``.
    """
    return (4 * parameter_count(config) + buffer_count(config)) * _itemsize(dtype)


def _check_positive(name: str, value: object) -> int:
    check_int(name, value)
    return value  # type: ignore[return-value]


def kv_cache_bytes(
    config: Config,
    batch: int,
    length: int,
    dtype: torch.dtype = torch.float32,
    *,
    source_length: int | None = None,
) -> int:
    """Bytes of a decoding cache: what ``model.make_cache(batch, length)`` allocates plus,
    for an encoder-decoder, the cross-attention keys and values projected from the source.

    One formula for every family, over the attention modules of the model's ``decoder``
    (built on ``meta``, pruned heads included): each self-attention keeps keys and values
    ``(b, h_kv, length, d_h)``, each cross-attention ``(b, h_kv, source_length, d_h)``.

    Args:
        config: the config of a model with a decoder (a language model, an
            encoder-decoder).
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
    decoder = getattr(build_on_meta(config), "decoder", None)
    modules = [] if decoder is None else list(decoder.named_modules())
    attention = [(n, m) for n, m in modules if isinstance(m, MultiHeadAttention)]
    if not any(n.endswith("self_attn") for n, _ in attention):
        raise ValueError(
            f"{type(config).__name__} describes a model without a decoder: no decoding cache"
        )
    if source_length is None:
        source_length = config.max_len  # type: ignore[attr-defined]
    _check_positive("source_length", source_length)
    total = 0
    for name, m in attention:
        tokens = source_length if name.endswith("cross_attn") else length
        total += 2 * batch * tokens * m.n_kv_heads * m.head_dim * item  # keys and values
    return total


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


def check_model_memory(config: Config) -> None:
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
    "build_on_meta",
    "check_memory",
    "check_model_memory",
    "dtype_name",
    "format_gib",
    "kv_cache_bytes",
    "measuring",
    "model_bytes",
    "parameter_bytes",
    "parameter_ceiling",
    "parameter_count",
    "training_bytes",
]
