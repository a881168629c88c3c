"""A lean one-token decoding step: the decoder layers of a KV-cached decode step without
module calls, per-call argument checks or mask building.

On a CPU a decoding step of a small model is dominated by Python overhead, not by
arithmetic: every layer makes some fifteen module calls, each checking its arguments and
building masks that a one-token query does not need. :class:`LeanDecoder` checks once,
when it is built after the prefill (every layer a plain :class:`DecoderLayer` with a
packed :class:`~qkv.attn.MultiHeadAttention` on the ``auto``/``sdpa`` backend and no
rotary embedding or position bias, no hooks, eval mode), and then runs the very same
tensor operations as the module path (``F.layer_norm``, ``F.linear``, the cache writes,
``F.scaled_dot_product_attention`` with the same arguments), so the logits are
bit-identical to it (tests/models/test_lean_decode.py). Whatever it does not cover gets
``None`` from :meth:`LeanDecoder.build`, and the caller takes the module path.

Why no mask for an unpadded step: the one new query is the last position, so causality
lets it see every cached key. With padding (left-padded prompts, padded sources) the mask
is the key padding mask alone, made once per step for all layers (self-attention) or once
per generation (cross-attention), and the keys and values no query sees are zeroed once,
as :func:`~qkv.attn.problem.hide_unseen` does on every call of the module path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.attn import _record
from qkv.attn.kv_cache import CrossKVCache, KVCache
from qkv.attn.mha import MultiHeadAttention
from qkv.attn.problem import hide_unseen
from qkv.attn.scores import default_scale
from qkv.layers.feedforward import FeedForward
from qkv.layers.norms import LayerNorm
from qkv.models._decode import LayerCache
from qkv.models.blocks import DecoderLayer
from qkv.models.decoder import Decoder

Fn = Callable[[Tensor], Tensor]


def hooks_active(model: nn.Module) -> bool:
    """True when any forward hook could see a call: a global one or one on a submodule
    (the lean step makes no module calls, so it must not run then)."""
    glob = nn.modules.module
    if glob._global_forward_hooks or glob._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def lean_allowed() -> bool:
    """Per step: no recorder (``record_attention`` must see every call) and no global
    forward hook was installed since the step was built."""
    glob = nn.modules.module
    return (
        _record.current() is None
        and not glob._global_forward_hooks
        and not glob._global_forward_pre_hooks
    )


def _norm_fn(norm: nn.Module) -> Fn:
    """``norm``'s computation without the module call: ``F.layer_norm`` for a layer norm
    (exactly ``nn.LayerNorm.forward``), else the bound ``forward``."""
    if type(norm) in (nn.LayerNorm, LayerNorm):
        shape, w, b, eps = norm.normalized_shape, norm.weight, norm.bias, norm.eps

        def layer_norm(x: Tensor) -> Tensor:
            return F.layer_norm(x, shape, w, b, eps)

        return layer_norm
    return norm.forward


def _ff_fn(ff: nn.Module) -> Fn:
    """The feed-forward network inlined (``FeedForward.forward`` in eval mode, without its
    three module calls), or its bound ``forward``."""
    if type(ff) is not FeedForward or any(
        m is not None and type(m) is not nn.Linear for m in (ff.fc1, ff.fc_gate, ff.fc2)
    ):
        return ff.forward
    act, w1, b1, w2, b2 = ff._act, ff.fc1.weight, ff.fc1.bias, ff.fc2.weight, ff.fc2.bias
    if ff.fc_gate is None:

        def plain(x: Tensor) -> Tensor:
            return F.linear(act(F.linear(x, w1, b1)), w2, b2)  # (b, 1, d)

        return plain
    wg, bg = ff.fc_gate.weight, ff.fc_gate.bias

    def gated(x: Tensor) -> Tensor:
        return F.linear(act(F.linear(x, wg, bg)) * F.linear(x, w1, b1), w2, b2)  # (b, 1, d)

    return gated


def _plain_attention(attn: nn.Module | None) -> bool:
    """Exact multi-head attention that the lean step reproduces operation for operation."""
    return (
        type(attn) is MultiHeadAttention
        and attn.packed
        and attn.rope is None
        and attn.backend in ("auto", "sdpa")
        and attn.score in ("scaled_dot", "dot")
        and type(attn.out_proj) is nn.Linear
        and type(attn.qkv_proj) is nn.Linear
    )


def _scale(attn: MultiHeadAttention) -> float:
    if attn.scale is not None:
        return attn.scale
    return default_scale(attn.head_dim) if attn.score == "scaled_dot" else 1.0


@dataclass
class _Cross:
    """One layer's cross-attention, its keys and values fixed after the prefill."""

    w_q: Tensor
    b_q: Tensor | None
    k: Tensor  # (b, h_kv, s_m, d_h), unseen positions zeroed
    v: Tensor
    mask: Tensor | None  # (b, 1, 1, s_m) bool, rows without keys let through; None: unpadded
    empty: Tensor | None  # (b, 1, 1, 1) bool: rows with no real source token, or None
    w_o: Tensor
    b_o: Tensor | None
    h: int
    d_h: int
    scale: float
    gqa: bool


@dataclass
class _Layer:
    pre: bool
    norm1: Fn
    norm2: Fn
    norm3: Fn | None
    ff: Fn
    w_qkv: Tensor
    b_qkv: Tensor | None
    w_o: Tensor
    b_o: Tensor | None
    splits: tuple[int, int, int]
    h: int
    h_kv: int
    d_h: int
    scale: float
    gqa: bool
    cache: KVCache
    cross: _Cross | None


class LeanDecoder:
    """The layers of a :class:`Decoder` for one new token per row, checked once.

    Build with :meth:`build`; call with ``(b, 1, d)`` embedded tokens.
    """

    def __init__(self, layers: list[_Layer], norm: Fn | None, caches: list[KVCache]) -> None:
        self.layers, self.norm, self.caches = layers, norm, caches

    @classmethod
    def build(
        cls,
        decoder: nn.Module,
        cache: Sequence[LayerCache],
        *,
        padding_mask: Tensor | None = None,
        src_padding_mask: Tensor | None = None,
    ) -> LeanDecoder | None:
        """Check the decoder and its filled caches once; None when the lean step does not
        cover them (the caller then takes the module path).

        Args:
            decoder: the model's decoder stack.
            cache: its per-layer caches, filled by the prefill.
            padding_mask: ``(b, s_cached)`` bool over the cached tokens (left padding), or
                None: their pad keys and values are zeroed now, once.
            src_padding_mask: ``(b, s_m)`` bool over the memory of cross-attention, or None.
        """
        if type(decoder) is not Decoder or decoder.pos_bias is not None or decoder.training:
            return None
        if len(cache) != len(decoder.layers):
            return None
        layers: list[_Layer] = []
        caches: list[KVCache] = []
        for layer, entry in zip(decoder.layers, cache):
            self_cache, cross_cache = entry if isinstance(entry, tuple) else (entry, None)
            if type(layer) is not DecoderLayer or not _plain_attention(layer.self_attn):
                return None
            if not isinstance(self_cache, KVCache) or self_cache.length == 0:
                return None
            if layer.dropout.training or layer.placement not in ("pre", "post"):
                return None
            attn: MultiHeadAttention = layer.self_attn
            if self_cache.k.shape[1] != attn.n_kv_heads or self_cache.k.shape[3] != attn.head_dim:
                return None
            if caches and self_cache.length != caches[0].length:
                return None
            cross = None
            if layer.cross_attn is not None:
                if not isinstance(cross_cache, CrossKVCache) or not cross_cache.is_set:
                    return None
                if not _plain_attention(layer.cross_attn):
                    return None
                if src_padding_mask is not None and tuple(src_padding_mask.shape) != (
                    cross_cache.k.shape[0],  # type: ignore[union-attr]
                    cross_cache.k.shape[2],  # type: ignore[union-attr]
                ):
                    return None  # a mask over something else (audio frames): the model maps it
                cross = _cross_of(layer.cross_attn, cross_cache, src_padding_mask)
            elif cross_cache is not None:
                return None
            if padding_mask is not None:
                _zero_pads(self_cache, padding_mask)
            bias = attn.qkv_proj.bias
            layers.append(
                _Layer(
                    pre=layer.placement == "pre",
                    norm1=_norm_fn(layer.self_attn_norm),
                    norm2=_norm_fn(layer.ff_norm),
                    norm3=None if cross is None else _norm_fn(layer.cross_attn_norm),
                    ff=_ff_fn(layer.ff),
                    w_qkv=attn.qkv_proj.weight,
                    b_qkv=bias,
                    w_o=attn.out_proj.weight,
                    b_o=attn.out_proj.bias,
                    splits=(attn.q_width, attn.kv_width, attn.kv_width),
                    h=attn.n_heads,
                    h_kv=attn.n_kv_heads,
                    d_h=attn.head_dim,
                    scale=_scale(attn),
                    gqa=attn.n_heads != attn.n_kv_heads,
                    cache=self_cache,
                    cross=cross,
                )
            )
            caches.append(self_cache)
        norm = None if decoder.norm is None else _norm_fn(decoder.norm)
        return cls(layers, norm, caches)

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (beam search) of what was prepared once: the cross-attention
        keys, values and masks (the self-attention caches reorder themselves, their zeroed
        pad entries with their rows)."""
        for L in self.layers:
            C = L.cross
            if C is None:
                continue
            C.k, C.v = C.k.index_select(0, index), C.v.index_select(0, index)
            if C.mask is not None:
                C.mask = C.mask.index_select(0, index)
            if C.empty is not None:
                C.empty = C.empty.index_select(0, index)

    @property
    def length(self) -> int:
        """Tokens cached (the same in every layer)."""
        return self.caches[0].length

    def __call__(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        """Decode one token per row.

        Args:
            x: ``(b, 1, d)`` the embedded new tokens.
            padding_mask: ``(b, s_k)`` bool over cached + this token, or None (unpadded).

        Returns:
            ``(b, 1, d)`` after the final norm.

        Raises:
            ValueError: a full cache, or a padding mask that does not cover the keys.
        """
        n, cap = self.caches[0].length, self.caches[0].k.shape[2]
        if n >= cap:
            raise ValueError(f"KVCache overflow: {n} cached + 1 new > max_len={cap}")
        b = x.shape[0]
        kpm = None
        if padding_mask is not None:
            if tuple(padding_mask.shape) != (b, n + 1) or padding_mask.dtype != torch.bool:
                raise ValueError(
                    f"padding_mask must be a bool (b, s_k) = ({b}, {n + 1}) tensor, got "
                    f"{padding_mask.dtype} {tuple(padding_mask.shape)}"
                )
            kpm = padding_mask[:, None, None, :]  # (b, 1, 1, s_k)
        for L in self.layers:
            h = L.norm1(x) if L.pre else x
            a = self._self_attend(L, h, kpm, b, n)
            x = x + a if L.pre else L.norm1(x + a)
            if L.cross is not None:
                assert L.norm3 is not None
                h = L.norm3(x) if L.pre else x
                a = _cross_attend(L.cross, h, b)
                x = x + a if L.pre else L.norm3(x + a)
            h = L.norm2(x) if L.pre else x
            a = L.ff(h)
            x = x + a if L.pre else L.norm2(x + a)
        return x if self.norm is None else self.norm(x)  # (b, 1, d)

    @staticmethod
    def _self_attend(L: _Layer, x: Tensor, kpm: Tensor | None, b: int, n: int) -> Tensor:
        q, k, v = F.linear(x, L.w_qkv, L.b_qkv).split(L.splits, -1)
        q = q.view(b, 1, L.h, L.d_h).transpose(1, 2)  # (b, h, 1, d_h)
        k = k.view(b, 1, L.h_kv, L.d_h).transpose(1, 2)  # (b, h_kv, 1, d_h)
        v = v.view(b, 1, L.h_kv, L.d_h).transpose(1, 2)
        c = L.cache
        c.k.narrow(2, n, 1).copy_(k)  # what KVCache.update does, checked once per step
        c.v.narrow(2, n, 1).copy_(v)
        c.length = n + 1
        k, v = c.k.narrow(2, 0, n + 1), c.v.narrow(2, 0, n + 1)  # (b, h_kv, s_k, d_h)
        if kpm is None:  # one query at the end of the keys sees them all
            out = F.scaled_dot_product_attention(
                q, k, v, dropout_p=0.0, is_causal=False, scale=L.scale, enable_gqa=L.gqa
            )
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=kpm, dropout_p=0.0, scale=L.scale, enable_gqa=L.gqa
            )
        out = out.transpose(1, 2).reshape(b, 1, L.splits[0])  # (b, 1, h d_h)
        return F.linear(out, L.w_o, L.b_o)  # (b, 1, d)


def _cross_of(
    attn: MultiHeadAttention, cache: CrossKVCache, src_padding_mask: Tensor | None
) -> _Cross:
    """The cross-attention of one layer with its keys, values and mask prepared once."""
    k, v = cache.k, cache.v
    assert k is not None and v is not None
    w_q, b_q = attn.projection("q")
    mask = empty = None
    if src_padding_mask is not None:
        kpm = src_padding_mask[:, None, None, :]  # (b, 1, 1, s_m)
        unseen = ~src_padding_mask[:, None, :, None]  # (b, 1, s_m, 1)
        k, v = hide_unseen(k, unseen), hide_unseen(v, unseen)
        rows = kpm.any(dim=-1, keepdim=True)  # (b, 1, 1, 1)
        mask = kpm | ~rows  # a row without keys attends anywhere, then gives zeros
        empty = None if bool(rows.all()) else ~rows
    return _Cross(
        w_q,
        b_q,
        k,
        v,
        mask,
        empty,
        w_o=attn.out_proj.weight,
        b_o=attn.out_proj.bias,
        h=attn.n_heads,
        d_h=attn.head_dim,
        scale=_scale(attn),
        gqa=attn.n_heads != attn.n_kv_heads,
    )


def _cross_attend(C: _Cross, x: Tensor, b: int) -> Tensor:
    q = F.linear(x, C.w_q, C.b_q).view(b, 1, C.h, C.d_h).transpose(1, 2)  # (b, h, 1, d_h)
    if C.mask is None:
        out = F.scaled_dot_product_attention(
            q, C.k, C.v, dropout_p=0.0, is_causal=False, scale=C.scale, enable_gqa=C.gqa
        )
    else:
        out = F.scaled_dot_product_attention(
            q, C.k, C.v, attn_mask=C.mask, dropout_p=0.0, scale=C.scale, enable_gqa=C.gqa
        )
        if C.empty is not None:
            out = out.masked_fill(C.empty, 0.0)
    out = out.transpose(1, 2).reshape(b, 1, C.h * C.d_h)  # (b, 1, h d_h)
    return F.linear(out, C.w_o, C.b_o)  # (b, 1, d)


def _zero_pads(cache: KVCache, padding_mask: Tensor) -> None:
    """Zero the cached keys and values of pad tokens (no query ever sees them)."""
    n = cache.length
    unseen = ~padding_mask[:, None, :n, None]  # (b, 1, n, 1)
    cache.k.narrow(2, 0, n).masked_fill_(unseen, 0.0)
    cache.v.narrow(2, 0, n).masked_fill_(unseen, 0.0)


@dataclass
class DecodeStep:
    """A model's lean one-token step: embed, :class:`LeanDecoder`, head.

    Attributes:
        embed: ``embed(ids (b, 1), positions=(b, 1)) -> (b, 1, d)``.
        decoder: the lean layers.
        head: ``(b, 1, d) -> (b, 1, vocab)``.
        scale: multiplies the decoder output before the head (1.0: none).
    """

    embed: Callable[..., Tensor]
    decoder: LeanDecoder
    head: Fn
    scale: float = 1.0

    def usable(self) -> bool:
        """Whether the step may run now (:func:`lean_allowed`: no recorder, no global
        hook); otherwise the caller makes the model call."""
        return lean_allowed()

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` after the caches did (:meth:`LeanDecoder.reorder`)."""
        self.decoder.reorder(index)

    def __call__(
        self, token: Tensor, positions: Tensor, padding_mask: Tensor | None = None
    ) -> Tensor:
        """Logits ``(b, vocab)`` of one new token per row.

        Args:
            token: ``(b, 1)`` long ids.
            positions: ``(b, 1)`` long positions.
            padding_mask: ``(b, s_k)`` bool over cached + new tokens, or None.
        """
        x = self.embed(token, positions=positions)  # (b, 1, d)
        x = self.decoder(x, padding_mask)
        if self.scale != 1.0:
            x = x * self.scale
        return self.head(x)[:, -1]  # (b, vocab)


__all__ = ["DecodeStep", "LeanDecoder", "hooks_active", "lean_allowed"]
