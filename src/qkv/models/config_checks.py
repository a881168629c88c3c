"""Checks shared by the family configs: sizes, the parameter ceiling, vocabularies and the
per-head options the vision stacks do not model."""

from __future__ import annotations

from typing import Any

from qkv._checks import MAX_SIZE, check_bool, check_int
from qkv.models.memory import MAX_PARAMETERS, format_gib, measuring, parameter_ceiling

#: A family config (:class:`qkv.models.config.TransformerConfig`). config.py imports this
#: module, so it does not import config.py, not even for type checking.
Config = Any

#: Most layers in one stack: 8x the 1,000 layers of DeepNet (Wang et al. 2022). Each layer
#: is a dozen Python modules (~60 KB, ~10 ms to build even on ``meta``), so millions of them
#: would exhaust the host whatever their width.
MAX_LAYERS: int = 8192
_LAYER_FIELDS = ("n_layers", "n_encoder_layers", "n_decoder_layers", "vision_n_layers")


def check_size(name: str, value: object, minimum: int = 1) -> None:
    """An int field of a config: at least ``minimum``, at most :data:`MAX_SIZE` (layer
    counts: :data:`MAX_LAYERS`)."""
    check_int(name, value, minimum, maximum=MAX_LAYERS if name in _LAYER_FIELDS else MAX_SIZE)


def check_parameters(cfg: Config) -> None:
    """Refuse, on every machine alike, a model no machine holds (:data:`MAX_PARAMETERS`),
    counted on a model built on ``meta`` (:func:`~qkv.models.memory.parameter_ceiling`)."""
    if measuring():
        return  # a part's config, made while its whole model is measured
    n = parameter_ceiling(cfg)
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"{type(cfg).__name__} describes a model of {n:,} parameters "
            f"({format_gib(4 * n)} in float32), more than the {MAX_PARAMETERS:,} (2**40) "
            f"a qkv config may have"
        )


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


def check_vision_stack(cfg: Config, name: str) -> None:
    """What the vision families (Swin, DETR) do not model: per-head options of the stack."""
    if cfg.pruned_heads:
        raise ValueError(f"{name} does not support pruned_heads, got {cfg.pruned_heads!r}")
    for field_name in ("n_kv_heads", "head_dim", "attn_scale"):
        if getattr(cfg, field_name) is not None:
            raise ValueError(
                f"{name} does not support {field_name} (must be None), "
                f"got {getattr(cfg, field_name)!r}"
            )


__all__ = ["MAX_LAYERS", "check_parameters", "check_size", "check_vision_stack", "check_vocab"]
