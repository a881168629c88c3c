"""What every model shares: its config, the attention backend switch, cache allocation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from qkv.attn.functional import available_backends
from qkv.attn.kv_cache import KVCache
from qkv.attn.mha import MultiHeadAttention
from qkv.models.config import TransformerConfig
from qkv.models.prune import apply_pruned_heads, prune_heads


def _check_backend(name: str) -> None:
    known = available_backends()
    if name not in known:
        raise ValueError(f"attn_backend must be one of {known}, got {name!r}")


class TransformerModel(nn.Module):
    """Base class of the qkv models.

    Args:
        config: the model's config, kept as :attr:`config`.

    Raises:
        ValueError: an ``attn_backend`` that is not registered.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        _check_backend(config.attn_backend)
        self.config = config

    @property
    def backend(self) -> str:
        """The attention backend of every attention module (``config.attn_backend``)."""
        return self.config.attn_backend

    def set_backend(self, name: str) -> None:
        """Switch every attention module to backend ``name`` and record it in the config.

        Raises:
            ValueError: an unknown backend (the registered ones are listed).
        """
        _check_backend(name)
        for m in self.modules():
            if isinstance(m, MultiHeadAttention):
                m.backend = name
        self.config = dataclasses.replace(self.config, attn_backend=name)

    def _prune_from_config(self) -> None:
        """Remove the heads ``config.pruned_heads`` lists (each model's constructor ends
        with this)."""
        apply_pruned_heads(self)

    def prune_heads(self, heads: Mapping[int | str, Iterable[int]]) -> dict[str, tuple[int, ...]]:
        """Remove attention heads in place (Michel et al. 2019); see
        :func:`qkv.models.prune.prune_heads`.

        Args:
            heads: ``{layer index or module name: [head, ...]}``.

        Returns:
            Module name -> the old indices of the heads it kept.
        """
        return prune_heads(self, heads)

    def _kv_caches(
        self,
        attns: Iterable[MultiHeadAttention],
        batch: int,
        max_len: int,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> list[KVCache]:
        """One self-attention cache per attention module, sized by its (possibly pruned)
        key/value heads.

        The dtype defaults to the autocast dtype when autocast is on for the device (the
        projections then produce that dtype), else to the parameters' dtype.
        """
        p = next(self.parameters())
        dev = p.device if device is None else torch.device(device)
        if dtype is None:
            on = torch.is_autocast_enabled(dev.type)
            dtype = torch.get_autocast_dtype(dev.type) if on else p.dtype
        return [
            KVCache(batch, a.n_kv_heads, max_len, a.head_dim, dtype=dtype, device=dev)
            for a in attns
        ]
