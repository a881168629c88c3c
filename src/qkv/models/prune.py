"""Head pruning (Michel et al. 2019; Voita et al. 2019): physically remove attention heads.

Removing head ``i`` deletes its rows ``i*d_h .. (i+1)*d_h`` from the query projection and
its columns from the output projection, so the pruned model computes exactly what the
unpruned one computes with that head's mask set to 0 (:func:`qkv.interp.mask_heads`).
Key/value heads go with them: with ``h_kv = h`` each query head has its own; with grouped
heads (Ainslie et al. 2023) a key/value head is removed once no query head reads it, and
pruning must leave the same number of query heads in every remaining group.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from qkv.attn.mha import MultiHeadAttention
from qkv.models.config import TransformerConfig
from qkv.models.naming import attention_modules, layer_index, layer_kind


def _resolve(model: nn.Module, key: int | str) -> tuple[str, MultiHeadAttention]:
    mods = attention_modules(model)
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TypeError(f"prune_heads keys must be layer indices or module names, got {key!r}")
    if isinstance(key, str):
        if key not in mods:
            raise ValueError(f"no attention module named {key!r}; attention modules: {list(mods)}")
        return key, mods[key]
    hits = [n for n in mods if layer_index(n) == key and layer_kind(n) != "cross"]
    if len(hits) != 1:
        what = "no" if not hits else f"{len(hits)} ({hits})"
        raise ValueError(
            f"layer {key} matches {what} self-attention modules; use a module name from "
            f"{list(mods)}"
        )
    return hits[0], mods[hits[0]]


def _check_no_shared_bias(model: nn.Module, name: str) -> None:
    """Refuse self-attention under a stack whose per-head position bias (ALiBi, T5
    relative) is shared by all layers: it would no longer match the head count."""
    if layer_kind(name) == "cross":
        return
    parts = name.split(".")
    for i in range(len(parts)):
        parent = model.get_submodule(".".join(parts[:i]))
        if getattr(parent, "pos_bias", None) is not None:
            raise ValueError(
                f"cannot prune heads of {name!r}: its stack "
                f"({'.'.join(parts[:i]) or type(model).__name__}) adds a per-head position "
                f"bias ({type(parent.pos_bias).__name__}) shared by every layer"
            )


def _linear(old: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    w = old.weight.detach()
    if rows is not None:
        w = w.index_select(0, rows)
    if cols is not None:
        w = w.index_select(1, cols)
    new = nn.Linear(w.shape[1], w.shape[0], bias=old.bias is not None)
    new = new.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if old.bias is not None:
            b = old.bias.detach()
            new.bias.copy_(b.index_select(0, rows) if rows is not None else b)
    new.weight.requires_grad_(old.weight.requires_grad)
    return new


def _keep(
    module: MultiHeadAttention, heads: Iterable[int], name: str
) -> tuple[list[int], list[int]]:
    """Validate a removal; return the query heads and key/value heads kept."""
    h, h_kv = module.n_heads, module.n_kv_heads
    remove = set()
    for i in heads:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"head indices for {name!r} must be ints, got {i!r}")
        if not 0 <= i < h:
            raise ValueError(f"head {i} out of range for {name!r} with n_heads={h}")
        remove.add(i)
    keep = [i for i in range(h) if i not in remove]
    if not keep:
        raise ValueError(f"cannot prune every head ({h}) of {name!r}")
    g = h // h_kv
    per_group = Counter(i // g for i in keep)
    if len(set(per_group.values())) != 1:
        raise ValueError(
            f"pruning heads {sorted(remove)} of {name!r} (n_heads={h}, n_kv_heads={h_kv}) "
            f"leaves key/value groups with different numbers of query heads "
            f"{dict(per_group)}; prune the same number of heads in every group, or whole groups"
        )
    return keep, sorted(per_group)


def prune_module(
    module: MultiHeadAttention, heads: Iterable[int], *, name: str = "attention"
) -> tuple[int, ...]:
    """Remove query heads from one attention module, in place.

    Args:
        module: the attention module.
        heads: indices of the heads to remove (current numbering).
        name: the module's name, for messages.

    Returns:
        The old indices of the heads kept, in their new order.

    Raises:
        ValueError: indices out of range, removing every head, or a grouped-query module
            left with groups of different sizes.
    """
    if not isinstance(module, MultiHeadAttention):
        raise TypeError(f"module must be a MultiHeadAttention, got {type(module).__name__}")
    keep, keep_kv = _keep(module, heads, name)
    if len(keep) == module.n_heads:
        return tuple(keep)
    d_h, dev = module.head_dim, module.out_proj.weight.device

    def span(idx: list[int], start: int = 0) -> torch.Tensor:
        # head i owns features i*d_h .. (i+1)*d_h of the concatenated heads
        return torch.tensor([start + i * d_h + j for i in idx for j in range(d_h)], device=dev)

    q_rows = span(keep)
    if module.packed:  # qkv_proj stacks the q, k and v rows
        k0 = module.q_width
        v0 = k0 + module.kv_width
        rows = torch.cat([q_rows, span(keep_kv, k0), span(keep_kv, v0)])
        module.qkv_proj = _linear(module.qkv_proj, rows, None)
    else:
        kv_rows = span(keep_kv)
        module.q_proj = _linear(module.q_proj, q_rows, None)
        module.k_proj = _linear(module.k_proj, kv_rows, None)
        module.v_proj = _linear(module.v_proj, kv_rows, None)
    module.out_proj = _linear(module.out_proj, None, q_rows)
    module.n_heads, module.n_kv_heads = len(keep), len(keep_kv)
    return tuple(keep)


def prune_heads(
    model: nn.Module, heads: Mapping[int | str, Iterable[int]]
) -> dict[str, tuple[int, ...]]:
    """Remove attention heads from a model, in place.

    ``model.prune_heads(heads)`` on the qkv models calls this. Head indices are the
    current ones: pruning twice counts from the already pruned module. The model config
    keeps its ``n_heads`` (modules now differ in head count) and lists the removed heads,
    in the unpruned numbering, in ``config.pruned_heads``: building a model from that
    config prunes them again, so a pruned model's checkpoint reloads.

    Args:
        model: a model with :class:`~qkv.attn.MultiHeadAttention` modules.
        heads: ``{layer: [head, ...]}``, where ``layer`` is a module name
            (``"decoder.layers.1.cross_attn"``) or a layer index, which names the layer's
            single self-attention module (ambiguous in encoder-decoders: use names).

    Returns:
        Module name -> the old indices of its kept heads (only modules in ``heads``).

    Raises:
        ValueError: unknown or ambiguous layers, bad indices, pruning every head, grouped
            heads left inconsistent, or a stack with a shared per-head position bias.
    """
    if not isinstance(heads, Mapping):
        raise TypeError(
            f"heads must be a mapping {{layer: [head, ...]}}, got {type(heads).__name__}"
        )
    plan = []
    for key, idx in heads.items():
        name, module = _resolve(model, key)
        idx = list(idx)
        if idx:
            _check_no_shared_bias(model, name)
        _keep(module, idx, name)  # validate every module before changing any
        plan.append((name, module, idx))
    names = [n for n, _, _ in plan]
    if len(set(names)) != len(names):
        raise ValueError(f"heads names a module twice: {names}")
    kept = {name: prune_module(module, idx, name=name) for name, module, idx in plan}
    _record_in_config(model, kept)
    return kept


def _record_in_config(model: nn.Module, kept: Mapping[str, tuple[int, ...]]) -> None:
    """Add the heads just removed to ``model.config.pruned_heads``, numbered as in the
    unpruned modules, so that building from the config prunes them again."""
    cfg = getattr(model, "config", None)
    if not isinstance(cfg, TransformerConfig):
        return
    pruned = {n: list(h) for n, h in cfg.pruned_heads.items()}
    for name, keep in kept.items():
        before = set(pruned.get(name, ()))
        current = [i for i in range(cfg.n_heads) if i not in before]  # unpruned numbering
        removed = before | (set(current) - {current[i] for i in keep})
        if removed:
            pruned[name] = sorted(removed)
    model.config = dataclasses.replace(cfg, pruned_heads=pruned)


def apply_pruned_heads(model: nn.Module) -> None:
    """Remove the heads ``model.config.pruned_heads`` lists from a freshly built model (the
    model constructors call this last).

    Raises:
        ValueError: a module name the model lacks, or heads it cannot remove.
    """
    for key, idx in model.config.pruned_heads.items():
        name, module = _resolve(model, key)
        _check_no_shared_bias(model, name)
        prune_module(module, idx, name=name)
