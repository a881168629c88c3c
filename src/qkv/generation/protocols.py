"""What decoding needs of a model, as ``typing.Protocol``s.

:mod:`qkv.generation` sits below :mod:`qkv.models` in the layers (``model.generate`` calls
down into it), so it never names the model classes: any module with these methods decodes.
``DecoderLM`` is a :class:`CausalLM`; ``Seq2SeqTransformer`` is an :class:`EncoderDecoder`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, TypeAlias, runtime_checkable

import torch
from torch import Tensor, nn

from qkv.attn.kv_cache import CrossKVCache, KVCache

#: Per decoder layer, a self-attention cache (language models) or a self- and a
#: cross-attention cache (encoder-decoders), as the models' ``make_cache`` returns them.
Cache: TypeAlias = list[KVCache] | list[tuple[KVCache, CrossKVCache]]


@runtime_checkable
class Decodable(Protocol):
    """The ``nn.Module`` surface decoding uses, plus preallocated caches."""

    training: bool

    def make_cache(
        self,
        batch: int,
        max_len: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Any:
        """Caches for ``batch`` rows of at most ``max_len`` decoder tokens."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The module's parameters (their dtype and device size the caches)."""
        ...

    def modules(self) -> Iterator[nn.Module]:
        """The module tree (output heads get a decoding copy of their weight)."""
        ...

    def train(self, mode: bool = True) -> Any:
        """Switch training mode (decoding runs in eval mode and restores it)."""
        ...


@runtime_checkable
class CausalLM(Decodable, Protocol):
    """A decoder-only language model: ``model(input_ids, ...) -> (b, s, vocab)`` logits."""

    def __call__(
        self,
        input_ids: Tensor,
        *,
        padding_mask: Tensor | None = None,
        positions: Tensor | None = None,
        cache: Any = None,
    ) -> Tensor:
        """Logits ``(b, s, vocab)`` of ``input_ids`` ``(b, s)`` (the new tokens only with a
        cache; ``padding_mask`` ``(b, s_total)`` covers cached + new tokens)."""
        ...


@runtime_checkable
class EncoderDecoder(Decodable, Protocol):
    """An encoder-decoder: ``encode`` the source once, ``decode`` target tokens against it."""

    def encode(self, src: Tensor, src_padding_mask: Tensor | None = None) -> Tensor:
        """Memory ``(b, s_src, d)`` of source ids ``(b, s_src)``."""
        ...

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        *,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
        cache: Any = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Logits ``(b, s, tgt_vocab)`` of target ids ``(b, s)`` against ``memory``."""
        ...


class LeanStep(Protocol):
    """A model's optional lean one-token decoding step, ``model.make_decode_step(cache,
    ...)`` after the prefill (``qkv.models`` documents it): bit-identical logits to the
    model call, without its per-call overhead."""

    def usable(self) -> bool:
        """Whether it may run now (no attention recorder or hook wants to see the calls)."""
        ...

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` of what it prepared, after the caches kept them."""
        ...

    def __call__(
        self, token: Tensor, positions: Tensor, padding_mask: Tensor | None = None
    ) -> Tensor:
        """Logits ``(b, vocab)`` of ``token`` ``(b, 1)`` at ``positions`` ``(b, 1)``."""
        ...


#: Anything :func:`qkv.generation.generate` decodes.
Generative: TypeAlias = CausalLM | EncoderDecoder


def is_encoder_decoder(model: object) -> bool:
    """True when ``model`` encodes a source and decodes against it (duck typing)."""
    return callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))
