"""Multi-head attention (Vaswani et al. 2017) with grouped/multi-query heads
(Ainslie et al. 2023; Shazeer 2019), batch-first ``(b, s, d)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.attn import _record
from qkv.attn.functional import (
    BackendName,
    MaskLike,
    Score,
    make_problem,
    pick_backend,
    unmasked_sdpa,
)
from qkv.attn.kv_cache import CrossKVCache, KVCache
from qkv.masks import Mask, Padding


class MultiHeadAttention(nn.Module):
    """Multi-head self- or cross-attention.

    ``MHA(Q, K, V) = Concat(head_1..head_h) W_o`` with
    ``head_i = attention(Q W_q^i, K W_k^j, V W_v^j)``, ``j = i // (h / h_kv)``.

    When keys and values have the model width (``kdim == vdim == d_model``: every qkv model)
    ``W_q``, ``W_k`` and ``W_v`` are stacked, in that order, in one ``qkv_proj`` of shape
    ``(h d_h + 2 h_kv d_h, d_model)`` (like ``nn.MultiheadAttention``'s ``in_proj_weight`` and
    GPT-2's ``c_attn``), so self-attention projects with one matmul; otherwise they are
    separate ``q_proj``, ``k_proj`` and ``v_proj``. :meth:`projection` gives either layout's
    ``(weight, bias)`` by name.

    Args:
        d_model: model width ``d`` (query input and output size).
        n_heads: query heads ``h``.
        n_kv_heads: key/value heads ``h_kv`` (a divisor of ``h``; 1 = multi-query).
        kdim: key input size (defaults to ``d_model``).
        vdim: value input size (defaults to ``d_model``).
        bias: biases on the four projections.
        dropout: dropout on the attention weights during training.
        backend: attention backend (see :func:`qkv.attention`).
        head_dim: per-head size ``d_h`` (defaults to ``d_model // n_heads``).
        scale: score scale (defaults to ``1/sqrt(d_h)``; T5 uses 1.0).
        rope: an optional rotary embedding applied to queries and keys (``qkv.pos.RoPE``).
        score: ``"scaled_dot"``, ``"dot"`` or a score module.

    Raises:
        ValueError: sizes that do not divide, or non-positive sizes.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        n_kv_heads: int | None = None,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        backend: BackendName = "auto",
        head_dim: int | None = None,
        scale: float | None = None,
        rope: nn.Module | None = None,
        score: Score = "scaled_dot",
    ) -> None:
        super().__init__()
        for name, val in (("d_model", d_model), ("n_heads", n_heads)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if not isinstance(n_kv_heads, int) or n_kv_heads <= 0 or n_heads % n_kv_heads:
            raise ValueError(
                f"n_kv_heads ({n_kv_heads}) must be a positive divisor of n_heads ({n_heads})"
            )
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
            head_dim = d_model // n_heads
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        kdim = d_model if kdim is None else kdim
        vdim = d_model if vdim is None else vdim
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.head_dim, self.kdim, self.vdim = head_dim, kdim, vdim
        self.dropout, self.backend, self.scale, self.score = dropout, backend, scale, score
        self.packed = kdim == d_model and vdim == d_model
        if self.packed:
            # one matmul for self-attention's queries, keys and values
            self.qkv_proj = nn.Linear(d_model, self.q_width + 2 * self.kv_width, bias=bias)
        else:
            self.q_proj = nn.Linear(d_model, self.q_width, bias=bias)
            self.k_proj = nn.Linear(kdim, self.kv_width, bias=bias)
            self.v_proj = nn.Linear(vdim, self.kv_width, bias=bias)
        self.out_proj = nn.Linear(self.q_width, d_model, bias=bias)
        self.rope = rope

    @property
    def q_width(self) -> int:
        """Output width of the query projection, ``h d_h``."""
        return self.n_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """Output width of the key and of the value projection, ``h_kv d_h``."""
        return self.n_kv_heads * self.head_dim

    def extra_repr(self) -> str:
        kv = f", n_kv_heads={self.n_kv_heads}" if self.n_kv_heads != self.n_heads else ""
        return f"d_model={self.d_model}, n_heads={self.n_heads}{kv}, backend={self.backend!r}"

    # -----------------------------------------------------------------------------------
    def _rows(self, which: str) -> slice:
        q, kv = self.q_width, self.kv_width
        rows = {
            "q": slice(0, q),
            "k": slice(q, q + kv),
            "v": slice(q + kv, q + 2 * kv),
            "kv": slice(q, q + 2 * kv),
        }
        if which not in rows or (which == "kv" and not self.packed):
            raise ValueError(f"which must be 'q', 'k' or 'v', got {which!r}")
        return rows[which]

    def projection(self, which: str) -> tuple[Tensor, Tensor | None]:
        """``(weight, bias)`` of the ``"q"``, ``"k"`` or ``"v"`` projection: weight
        ``(width, in_features)``. Views of ``qkv_proj`` when packed (writing to them writes
        the module's parameters)."""
        rows = self._rows(which)
        if not self.packed:
            lin = {"q": self.q_proj, "k": self.k_proj, "v": self.v_proj}[which]
            return lin.weight, lin.bias
        bias = self.qkv_proj.bias
        return self.qkv_proj.weight[rows], None if bias is None else bias[rows]

    def _proj(self, x: Tensor, which: str) -> Tensor:
        weight, bias = self.projection(which)
        return F.linear(x, weight, bias)

    def _heads(self, x: Tensor, heads: int) -> Tensor:
        b, s, _ = x.shape
        return x.view(b, s, heads, self.head_dim).transpose(1, 2)  # (b, heads, s, d_h)

    def project_kv(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Project memory to keys/values ``(b, h_kv, s_k, d_h)`` (no rotary)."""
        if self.packed and key is value:
            k, v = self._proj(key, "kv").split(self.kv_width, dim=-1)  # one matmul
        else:
            k, v = self._proj(key, "k"), self._proj(value, "v")
        return self._heads(k, self.n_kv_heads), self._heads(v, self.n_kv_heads)

    def _project_self(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.packed:
            q, k, v = self.qkv_proj(x).split((self.q_width, self.kv_width, self.kv_width), -1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return (
            self._heads(q, self.n_heads),
            self._heads(k, self.n_kv_heads),
            self._heads(v, self.n_kv_heads),
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        mask: MaskLike = None,
        padding_mask: Tensor | None = None,
        is_causal: bool = False,
        return_weights: bool = False,
        attn_bias: Tensor | None = None,
        positions: Tensor | None = None,
        cache: KVCache | CrossKVCache | None = None,
        head_mask: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from ``query`` to ``key``/``value`` (self-attention when both are None).

        Args:
            query: ``(b, s_q, d_model)``.
            key: ``(b, s_k, kdim)`` or None for self-attention.
            value: ``(b, s_k, vdim)``; defaults to ``key``.
            mask: bool (True = may attend), float bias, or :mod:`qkv.masks` object,
                broadcastable to ``(b, h, s_q, s_k)``.
            padding_mask: ``(b, s_k)`` bool, **True = real token** (torch's
                ``nn.MultiheadAttention`` ``key_padding_mask`` uses the opposite: True =
                padding).
            is_causal: causal self-attention (aligned to the end of the keys).
            return_weights: also return per-head weights ``(b, h, s_q, s_k)``.
            attn_bias: float additive bias broadcastable to ``(b, h, s_q, s_k)`` (ALiBi,
                T5 relative bias).
            positions: absolute positions ``(s_q,)`` or ``(b, s_q)`` for rotary embeddings.
            cache: a :class:`KVCache` (self-attention) or :class:`CrossKVCache`
                (cross-attention) for incremental decoding.
            head_mask: ``(h,)`` or ``(b, h)`` multipliers on each head's output (Michel et
                al. 2019 head importance; 0 removes a head).

        Returns:
            ``(b, s_q, d_model)``, or ``(out, weights)`` with weights ``(b, h, s_q, s_k)``.
        """
        if query.ndim != 3 or query.shape[-1] != self.d_model:
            raise ValueError(
                f"query must be (b, s_q, d_model={self.d_model}), got {tuple(query.shape)}"
            )
        b, s_q, _ = query.shape
        self_attn = key is None
        if self_attn and value is not None:
            raise ValueError("value given without key; pass both for cross-attention")
        if self.rope is not None and isinstance(cache, CrossKVCache):
            raise ValueError("rotary embeddings are for self-attention, not a cross cache")

        if isinstance(cache, CrossKVCache) and cache.is_set:
            q = self._heads(self._proj(query, "q"), self.n_heads)  # (b, h, s_q, d_h)
            k, v = cache.k, cache.v  # (b, h_kv, s_k, d_h), projected once
            assert k is not None and v is not None
        else:
            if self_attn:
                q, k, v = self._project_self(query)
            else:
                value = key if value is None else value
                assert key is not None
                if key.ndim != 3 or key.shape[-1] != self.kdim or key.shape[0] != b:
                    raise ValueError(
                        f"key must be (b={b}, s_k, kdim={self.kdim}), got {tuple(key.shape)}"
                    )
                if value.shape[:2] != key.shape[:2] or value.shape[-1] != self.vdim:
                    raise ValueError(
                        f"value must be (b, s_k, vdim={self.vdim}) matching key "
                        f"{tuple(key.shape)}, got {tuple(value.shape)}"
                    )
                q = self._heads(self._proj(query, "q"), self.n_heads)
                k, v = self.project_kv(key, value)  # (b, h_kv, s_k, d_h)
            if self.rope is not None:
                q = self.rope(q, positions)
                k = self.rope(k, positions if self_attn else None)
            if isinstance(cache, KVCache):
                k, v = cache.update(k, v)
            elif isinstance(cache, CrossKVCache):
                k, v = cache.set(k, v)

        out, weights = self.attend(
            q,
            k,
            v,
            mask=mask,
            padding_mask=padding_mask,
            attn_bias=attn_bias,
            is_causal=is_causal,
            return_weights=return_weights,
            self_attention=self_attn,
        )
        if head_mask is not None:
            hm = head_mask.to(out.dtype)
            hm = hm.view(1, -1, 1, 1) if hm.ndim == 1 else hm.view(b, -1, 1, 1)
            out = out * hm  # (b, h, s_q, d_h)
        out = out.transpose(1, 2).reshape(b, s_q, self.q_width)
        out = self.out_proj(out)  # (b, s_q, d_model)
        return (out, weights) if return_weights else out  # type: ignore[return-value]

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        mask: MaskLike = None,
        padding_mask: Tensor | None = None,
        attn_bias: Tensor | None = None,
        is_causal: bool = False,
        return_weights: bool = False,
        self_attention: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Attention of projected heads: the step between the projections and ``out_proj``.

        The projections, rotary embeddings, caches and head mask belong to
        :meth:`forward`; this is the one place where the heads meet. Subclasses that
        compute another function of the same heads (:class:`~qkv.attn.FavorAttention`,
        :class:`~qkv.attn.LinformerAttention`) replace it; exact attention stays here,
        with its backends.

        Args:
            q: ``(b, h, s_q, d_h)`` queries (after rotary embeddings).
            k: ``(b, h_kv, s_k, d_h)`` keys, cached ones included.
            v: ``(b, h_kv, s_k, d_h)`` values.
            mask, padding_mask, attn_bias, is_causal, return_weights: as in :meth:`forward`.
            self_attention: whether keys come from the queries' own sequence.

        Returns:
            ``(out, weights)``: ``out`` ``(b, h, s_q, d_h)``; ``weights`` ``(b, h, s_q, s_k)``
            when ``return_weights``, else None.
        """
        b, s_q, s_k = q.shape[0], q.shape[2], k.shape[2]
        dropout_p = self.dropout if self.training else 0.0
        rec = _record.current()
        weights: Tensor | None = None
        if (
            mask is None
            and padding_mask is None
            and attn_bias is None
            and not return_weights
            and rec is None
            and self.backend in ("auto", "sdpa")
            and isinstance(self.score, str)
            and (not is_causal or s_q == s_k or s_q == 1)
        ):
            # Nothing to mask beyond plain causality: exactly what "auto" and "sdpa" run,
            # without building a Problem (a decoding step is dominated by per-op overhead).
            out = unmasked_sdpa(
                q,
                k,
                v,
                score=self.score,  # type: ignore[arg-type]
                scale=self.scale,
                is_causal=is_causal,
                dropout_p=dropout_p,
            )
        else:
            full_mask = self._combine_masks(mask, padding_mask, attn_bias, b, s_q, s_k)
            p = make_problem(
                q,
                k,
                v,
                full_mask,
                score=self.score,
                scale=self.scale,
                is_causal=is_causal,
                dropout_p=dropout_p,
                return_weights=return_weights,
            )
            backend = "math" if return_weights and self.backend == "auto" else self.backend
            runner = pick_backend(p, backend)  # checked also when a recorder gives the output
            # a recorder of every weight computes the output with them (once, not twice)
            recorded = None if rec is None else rec(self, p, {"self_attention": self_attention})
            if recorded is not None:
                out = recorded
            else:
                res = runner.run(p)
                out, weights = res if isinstance(res, tuple) else (res, None)
        return out, weights

    @staticmethod
    def _combine_masks(
        mask: MaskLike,
        padding_mask: Tensor | None,
        attn_bias: Tensor | None,
        b: int,
        s_q: int,
        s_k: int,
    ) -> MaskLike:
        if padding_mask is not None:
            if padding_mask.dtype != torch.bool or tuple(padding_mask.shape) != (b, s_k):
                raise ValueError(
                    f"padding_mask must be a bool (b, s_k) = ({b}, {s_k}) tensor with "
                    f"True = real token, got {padding_mask.dtype} "
                    f"{tuple(padding_mask.shape)}"
                )
            kpm = padding_mask[:, None, None, :]  # (b, 1, 1, s_k)
            if mask is None:
                mask = kpm
            elif isinstance(mask, Mask):
                mask = mask & Padding(padding_mask)  # stays lazy: block-sparse reads both
            elif mask.dtype == torch.bool:
                mask = mask & kpm
            else:
                mask = mask.masked_fill(~kpm, float("-inf"))
        if attn_bias is None:
            return mask
        if isinstance(mask, Mask):
            mask = mask.to_dense(s_q, s_k, device=attn_bias.device)
            mask = mask if mask.ndim == 4 else mask[None, None]
        if mask is None:
            return attn_bias
        if mask.dtype == torch.bool:
            return attn_bias.masked_fill(~mask, float("-inf"))
        return attn_bias + mask

    # -----------------------------------------------------------------------------------
    @classmethod
    def from_torch(
        cls, m: nn.MultiheadAttention, *, backend: BackendName = "auto"
    ) -> MultiHeadAttention:
        """Copy a ``torch.nn.MultiheadAttention`` into an equivalent qkv module.

        The result is batch-first whatever ``m.batch_first`` is. Masks keep qkv's
        convention (True = may attend / real token).

        Raises:
            ValueError: ``add_bias_kv`` or ``add_zero_attn``, which qkv does not model.
        """
        if not isinstance(m, nn.MultiheadAttention):
            raise TypeError(f"from_torch needs nn.MultiheadAttention, got {type(m).__name__}")
        if m.bias_k is not None or m.add_zero_attn:
            raise ValueError("from_torch: add_bias_kv and add_zero_attn are not supported")
        has_bias = m.in_proj_bias is not None
        out = cls(
            m.embed_dim,
            m.num_heads,
            kdim=m.kdim,
            vdim=m.vdim,
            bias=has_bias,
            dropout=m.dropout,
            backend=backend,
        )
        # cast before copying: copying into default-dtype (float32) parameters would round
        # a float64 module's weights
        out = out.to(device=m.out_proj.weight.device, dtype=m.out_proj.weight.dtype)
        d = m.embed_dim
        with torch.no_grad():
            if m._qkv_same_embed_dim:
                out.qkv_proj.weight.copy_(m.in_proj_weight)
            else:
                for which, w in zip("qkv", (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)):
                    out.projection(which)[0].copy_(w)
            out.out_proj.weight.copy_(m.out_proj.weight)
            if has_bias:
                for which, bias in zip("qkv", m.in_proj_bias.split(d, dim=0)):
                    out.projection(which)[1].copy_(bias)  # type: ignore[union-attr]
                out.out_proj.bias.copy_(m.out_proj.bias)
        return out
