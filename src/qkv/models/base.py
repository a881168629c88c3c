"""What every model shares: its config, the attention backend switch, cache allocation,
``save_pretrained``; and what the generative ones share: ``generate``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from qkv.attn.functional import available_backends
from qkv.attn.kv_cache import KVCache
from qkv.attn.mha import MultiHeadAttention
from qkv.generation import Generated, GenerationConfig, generate
from qkv.models._pretrained import SavesToDirectory, save_pretrained
from qkv.models.config import TransformerConfig
from qkv.models.memory import check_memory, check_model_memory, dtype_name
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
        MemoryLimitError: the model does not fit in the free memory of the default device
            (checked before any parameter is allocated; not on ``meta``).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        _check_backend(config.attn_backend)
        check_model_memory(config)
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

    def save_pretrained(
        self, directory: str | Path, *, tokenizer: SavesToDirectory | None = None
    ) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (the trainer's checkpoint files)
        and, given a tokenizer, its ``tokenizer.json``; :func:`qkv.load` reads them back.
        See :func:`qkv.models.io.save_pretrained`.

        Args:
            directory: created if missing; existing model files are replaced.
            tokenizer: anything with ``save(directory)`` (``qkv.data.Tokenizer``), or None.

        Returns:
            ``directory`` as a ``Path``.
        """
        return save_pretrained(self, directory, tokenizer=tokenizer)

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
        attns = list(attns)
        size = torch.empty((), dtype=dtype).element_size()
        need = sum(2 * batch * a.n_kv_heads * max_len * a.head_dim * size for a in attns)
        check_memory(
            need,
            f"KV cache of {batch:,} rows x {max_len:,} tokens ({len(attns)} layers, "
            f"{dtype_name(dtype)})",
            device=dev,
            hint="lower the batch, --beam-size or --max-new-tokens",
        )
        return [
            KVCache(batch, a.n_kv_heads, max_len, a.head_dim, dtype=dtype, device=dev)
            for a in attns
        ]


class GenerativeModel(TransformerModel):
    """Base class of the models that generate (``DecoderLM``, ``Seq2SeqTransformer``): they
    have ``make_cache`` and :meth:`generate`. Encoder-only models (``EncoderModel``) and
    ``ViT`` do not derive from it and have no ``generate``.
    """

    def make_cache(
        self,
        batch: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Any:
        """Preallocated KV caches for ``batch`` rows of ``max_len`` decoder tokens."""
        raise NotImplementedError

    def generate(
        self,
        inputs: Tensor,
        config: GenerationConfig | None = None,
        *,
        padding_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        **overrides: Any,
    ) -> Generated:
        """Continue prompts (language models) or translate sources (encoder-decoders):
        :func:`qkv.generation.generate` with this model.

        Args:
            inputs: ``(b, s)`` prompt or source ids, right-padded.
            config: a :class:`~qkv.generation.GenerationConfig`; default its defaults
                (greedy, 64 new tokens, ``eos_id=2``).
            padding_mask: ``(b, s)`` bool, True = real token; default all real.
            generator: RNG for sampling.
            **overrides: :class:`~qkv.generation.GenerationConfig` fields
                (``max_new_tokens=20, strategy="beam"``, ...).

        Returns:
            :class:`~qkv.generation.Generated`: new tokens as lists (``tokens``) and as a
            padded ``(b, n)`` tensor (``ids``, with ``lengths``), and scores.

        Raises:
            TypeError, ValueError: see :func:`qkv.generation.generate`.
        """
        return generate(
            self, inputs, config, padding_mask=padding_mask, generator=generator, **overrides
        )
