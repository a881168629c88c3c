"""Transformer-XL (Dai et al. 2019) for :class:`~qkv.models.DecoderLM`: segment-level
recurrence with relative positions (``LMConfig(pos="xl", mem_len=M, segment_len=L)``).

Each layer's input states of the previous segment are kept as memory (sec. 3.2)::

    h~^{n-1}_{t+1} = [SG(m^{n-1}_t) ; h^{n-1}_{t+1}]
    q = h^{n-1}_{t+1} W_q,   k, v = h~^{n-1}_{t+1} W_k, W_v

with ``SG`` stop-gradient: the new segment's queries attend to the memory and to
themselves (causally), no gradient flows into the memory, and positions are relative
(:class:`~qkv.pos.XLRelativeScore`, sec. 3.3), so the states cached from the last segment
mean the same thing in the next one. A :class:`SegmentMemory` carries the last ``mem_len``
states of every layer from one call to the next.

* Training: ``DecoderLM.forward`` on a sequence longer than ``segment_len`` runs it segment
  by segment with a fresh memory (the paper's training on consecutive segments, here the
  segments of one training example).
* Evaluation: :func:`stream_nll` walks a long token stream segment by segment, reusing the
  memory; with ``reuse_memory=False`` it recomputes the context window for every segment
  instead (the vanilla Transformer's evaluation, sec. 3.1), for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.attn.functional import MaskLike
from qkv.models.blocks import DecoderLayer
from qkv.models.decoder import Decoder, LayerCache


class SegmentMemory:
    """The cached layer inputs of the previous segment(s): one ``(b, m, d)`` tensor per
    layer, detached, at most ``mem_len`` positions, plus which of them are real tokens.

    Args:
        n_layers: layers of the model.
        mem_len: most positions kept per layer (Transformer-XL's ``M``).

    Raises:
        ValueError: non-positive sizes.
    """

    def __init__(self, n_layers: int, mem_len: int) -> None:
        for name, val in (("n_layers", n_layers), ("mem_len", mem_len)):
            if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                raise ValueError(f"SegmentMemory: {name} must be a positive int, got {val!r}")
        self.n_layers, self.mem_len = n_layers, mem_len
        self.states: list[Tensor | None] = [None] * n_layers
        self.mask: Tensor | None = None  # (b, m) bool, True = real token

    @property
    def length(self) -> int:
        """Positions held (0 before the first segment)."""
        first = self.states[0]
        return 0 if first is None else first.shape[1]

    def update(self, inputs: Sequence[Tensor], mask: Tensor) -> None:
        """Append a segment's layer inputs ``(b, s, d)`` and its ``(b, s)`` padding mask,
        keeping the last ``mem_len`` positions, detached (no gradient into the memory)."""
        if len(inputs) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} layer inputs, got {len(inputs)}")
        new = []
        for old, x in zip(self.states, inputs):
            both = x if old is None else torch.cat([old, x], dim=1)
            new.append(both[:, -self.mem_len :].detach())
        self.states = new
        both_mask = mask if self.mask is None else torch.cat([self.mask, mask], dim=1)
        self.mask = both_mask[:, -self.mem_len :]


class XLDecoderLayer(DecoderLayer):
    """A causal decoder layer whose self-attention also reads a memory of the previous
    segment's inputs to this layer (``mem``): keys and values from ``[mem; x]`` (each
    normalized first in a pre-norm layer), queries from ``x``."""

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        mask: MaskLike = None,
        padding_mask: Tensor | None = None,
        src_padding_mask: Tensor | None = None,
        attn_bias: Tensor | None = None,
        positions: Tensor | None = None,
        cache: Any = None,
        cross_cache: Any = None,
        mem: Tensor | None = None,
    ) -> Tensor:
        """Apply the layer; ``mem`` ``(b, m, d)`` are the cached inputs of this layer (see
        :meth:`DecoderLayer.forward` for the rest; ``padding_mask`` then covers ``m + s``).
        """
        if mem is None:
            return super().forward(
                x,
                memory,
                mask=mask,
                padding_mask=padding_mask,
                attn_bias=attn_bias,
                positions=positions,
                cache=cache,
            )
        if cache is not None or self.cross_attn is not None:
            raise ValueError("a Transformer-XL layer takes a memory or a cache, not both")
        pre = self.placement == "pre"
        # the memory goes through the same norm as the segment (pre-norm), not the residual
        kv_mem = self.self_attn_norm(mem) if pre else mem

        def attend(h: Tensor) -> Tensor:
            kv = torch.cat([kv_mem, h], dim=1)  # (b, m + s, d)
            return self.self_attn(  # type: ignore[no-any-return]
                h, kv, kv, mask=mask, padding_mask=padding_mask, is_causal=True
            )

        x = self._sub(x, self.self_attn_norm, attend)
        return self._sub(x, self.ff_norm, self.ff)


class XLDecoder(Decoder):
    """A :class:`~qkv.models.decoder.Decoder` of :class:`XLDecoderLayer` s that reads and
    updates a :class:`SegmentMemory` (``segment_memory=``)."""

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        padding_mask: Tensor | None = None,
        src_padding_mask: Tensor | None = None,
        mask: MaskLike = None,
        positions: Tensor | None = None,
        cache: Sequence[LayerCache] | None = None,
        segment_memory: SegmentMemory | None = None,
    ) -> Tensor:
        """Decode a segment ``(b, s, d)``; with ``segment_memory``, attend to it and append
        this segment's layer inputs to it (see :meth:`Decoder.forward` for the rest;
        ``padding_mask`` covers the segment's ``s`` tokens).

        Raises:
            ValueError: a memory together with a cache or a cross-attention memory.
        """
        if segment_memory is None:
            return super().forward(
                x, memory, padding_mask=padding_mask, mask=mask, positions=positions, cache=cache
            )
        if cache is not None or memory is not None:
            raise ValueError("segment_memory cannot be combined with a cache or a memory")
        b, s = x.shape[:2]
        seg_mask = (
            torch.ones(b, s, dtype=torch.bool, device=x.device)
            if padding_mask is None
            else padding_mask
        )
        keys_mask = None
        if segment_memory.length:
            assert segment_memory.mask is not None
            keys_mask = torch.cat([segment_memory.mask, seg_mask], dim=1)  # (b, m + s)
        elif padding_mask is not None:
            keys_mask = padding_mask
        inputs = []
        for i, layer in enumerate(self.layers):
            inputs.append(x)
            mem = segment_memory.states[i]
            x = layer(x, mask=mask, padding_mask=keys_mask, mem=mem)
        segment_memory.update(inputs, seg_mask)
        return x if self.norm is None else self.norm(x)  # (b, s, d)


def stream_nll(
    model: nn.Module,
    ids: Tensor,
    *,
    segment_len: int,
    context: int | None = None,
    reuse_memory: bool = True,
    stride: int | None = None,
) -> tuple[float, int]:
    """Negative log-likelihood of a long token stream, evaluated segment by segment.

    With ``reuse_memory`` (Transformer-XL, sec. 3.2) each segment of ``segment_len`` tokens
    runs once, attending to the memory the previous segments left (the model's
    ``mem_len`` states per layer). Without it (the vanilla evaluation of sec. 3.1), every
    ``stride`` new tokens cost a fresh forward pass over the last ``context + stride``
    tokens, so each prediction sees up to ``context`` tokens of context recomputed from
    scratch; ``stride = 1`` is the paper's sliding window.

    Args:
        model: a :class:`~qkv.models.DecoderLM` (with ``pos="xl"`` and ``mem_len`` for
            ``reuse_memory``).
        ids: ``(b, n)`` token ids; token ``t + 1`` is predicted from tokens ``<= t``.
        segment_len: tokens per forward pass with memory.
        context: tokens of recomputed context without memory (default ``mem_len``).
        reuse_memory: evaluate with the memory (True) or by recomputation (False).
        stride: new tokens per recomputed window (default ``segment_len``).

    Returns:
        ``(sum of the NLL in nats, number of predicted tokens)``.

    Raises:
        ValueError: non-positive sizes, or ``reuse_memory`` on a model without memory.
    """
    cfg = model.config  # type: ignore[union-attr]
    mem_len = getattr(cfg, "mem_len", 0)
    context = mem_len if context is None else context
    stride = segment_len if stride is None else stride
    for name, val in (("segment_len", segment_len), ("stride", stride)):
        if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"context must be an int >= 0, got {context!r}")
    if reuse_memory and not mem_len:
        raise ValueError("reuse_memory needs a model with pos='xl' and mem_len > 0")
    n = ids.shape[1]
    total, count = 0.0, 0
    with torch.no_grad():
        if reuse_memory:
            memory = model.make_memory()  # type: ignore[operator]
            for start in range(0, n - 1, segment_len):
                seg = ids[:, start : min(start + segment_len, n - 1)]
                logits = model(seg, segment_memory=memory)  # (b, s, vocab)
                total, count = _add_nll(
                    logits, ids[:, start + 1 : start + 1 + seg.shape[1]], total, count
                )
            return total, count
        for start in range(0, n - 1, stride):
            end = min(start + stride, n - 1)
            window = ids[:, max(0, start - context) : end]
            logits = model(window)[:, -(end - start) :]  # the new tokens' predictions
            total, count = _add_nll(logits, ids[:, start + 1 : end + 1], total, count)
    return total, count


def _add_nll(logits: Tensor, targets: Tensor, total: float, count: int) -> tuple[float, int]:
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum")
    return total + float(nll), count + targets.numel()


def bits_per_token(nll: float, count: int) -> float:
    """Mean NLL in bits (bits per character for a character-level model)."""
    return nll / max(count, 1) / math.log(2)


__all__ = ["SegmentMemory", "XLDecoder", "XLDecoderLayer", "bits_per_token", "stream_nll"]
