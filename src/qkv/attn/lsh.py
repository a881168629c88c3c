"""LSH attention (Kitaev et al. 2020, "Reformer: The Efficient Transformer", sec. 3).

Queries and keys are one projection (shared QK); a key is the query normalized to unit
length. Each hash round ``r`` draws a random rotation ``R_r`` (``d x n_buckets/2``) and
puts vector ``x`` in bucket ``argmax([x R_r; -x R_r])`` (angular LSH, Andoni et al. 2015),
so similar vectors tend to share a bucket. The sequence is sorted by (round, bucket,
position), cut into chunks of ``bucket_size``, and each chunk attends to itself and to the
previous chunk (the one before the first chunk is the last). Within that window:

* a position never attends to itself unless nothing else is allowed: its own score is
  replaced by ``-1e5`` (:data:`SELF_SCORE`), since ``q . q/|q|`` would dominate;
* causal attention compares original positions; padded keys are never attended (and
  padding is hashed into a bucket of its own, after the others).

Rounds are combined with weights ``softmax_r(logsumexp of round r's scores)`` (eq. 5-6:
each round's normalizer), which is exactly what attention over the union of the rounds'
windows would give if no key appeared twice. Cost ``O(n_hashes s bucket_size d)``; memory
``O(s d)``: the chunks run in one autograd Function (:mod:`qkv.attn._lsh_chunked`) that
keeps ``qk``, ``v``, the sorted positions and the output, and recomputes each group of
chunks' scores in the backward pass (FlashAttention-style).

This follows ``transformers``' ``LSHSelfAttention`` (and trax) step for step; with the
same rotations (:func:`draw_rotations` draws them as ``transformers`` does from
``hash_seed``) both give the same output (``tests/interop/test_interop_reformer.py``).
Sequences of at most ``bucket_size`` tokens, and decoding with a cache, attend to every
key with the same rules (``transformers`` does the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.attn._lsh_chunked import NORM_EPS, SELF_SCORE, lsh_chunked, unit_keys
from qkv.attn._lsh_hash import default_buckets, draw_rotations, hash_buckets
from qkv.attn.functional import MaskLike
from qkv.attn.kv_cache import KVCache
from qkv.attn.problem import compute_dtype
from qkv.masks import Causal


def _softmax_rows(dots: Tensor, dropout_p: float) -> tuple[Tensor, Tensor]:
    """``(weights, logsumexp)`` of rows that always hold a finite score (their own).

    The weights come from ``softmax`` (normalized after subtracting the row maximum), not
    ``exp(dots - logsumexp)``: a row that sees only itself sits at ``-1e5``, where float32
    rounds the log-sum-exp by ~0.004 and the weights would sum to 0.996.
    """
    top = dots.amax(dim=-1, keepdim=True)  # finite: every row holds its own score
    e = torch.exp(dots - top)  # one exponential serves both (softmax + logsumexp: two)
    total = e.sum(dim=-1, keepdim=True)
    w = e / total
    lse = top + total.log()
    if dropout_p > 0:
        w = F.dropout(w, p=dropout_p, training=True)
    return w, lse


def full_shared_qk_attention(
    q: Tensor,
    qk: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Shared-QK attention of ``q`` to every key, with LSH attention's rules (unit keys,
    :data:`SELF_SCORE`, causal by position): what LSH attention computes when the whole
    sequence fits in one chunk, and for decoding steps.

    Args:
        q: ``(b, h, s_q, d)`` the new positions' shared-QK vectors (aligned to the end).
        qk: ``(b, h, s_k, d)`` every position's shared-QK vectors (``q`` at the end).
        v: ``(b, h, s_k, d_v)``.
        causal, padding_mask, dropout_p: as in :func:`lsh_attention`.

    Returns:
        ``(b, h, s_q, d_v)``.
    """
    s_q, s_k = q.shape[-2], qk.shape[-2]
    dots = q @ unit_keys(qk).transpose(-2, -1)  # (b, h, s_q, s_k)
    q_pos = torch.arange(s_k - s_q, s_k, device=q.device)[:, None]  # (s_q, 1)
    k_pos = torch.arange(s_k, device=q.device)[None, :]  # (1, s_k)
    if causal:
        dots = dots.masked_fill(q_pos < k_pos, float("-inf"))
    if padding_mask is not None:
        dots = dots.masked_fill(~padding_mask[:, None, None, :], float("-inf"))
    dots = dots.masked_fill(q_pos == k_pos, SELF_SCORE)
    w, _ = _softmax_rows(dots, dropout_p)
    return w @ v  # (b, h, s_q, d_v)


def lsh_attention(
    qk: Tensor,
    v: Tensor,
    rotations: Tensor,
    *,
    bucket_size: int,
    causal: bool = False,
    padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """LSH self-attention (see the module docstring).

    Args:
        qk: ``(b, h, s, d)`` shared query/key vectors (queries as they are, keys
            length-normalized here).
        v: ``(b, h, s, d_v)`` values.
        rotations: ``(h, d, n_hashes, n_buckets/2)`` (:func:`draw_rotations`).
        bucket_size: chunk length; a sequence of at most this many tokens attends fully.
        causal: no attention to later positions.
        padding_mask: ``(b, s)`` bool, True = real token.
        dropout_p: dropout on the attention weights.

    Returns:
        ``(b, h, s, d_v)`` in ``qk``'s dtype (float32 arithmetic for half inputs).

    Raises:
        ValueError: mismatched shapes or a non-positive ``bucket_size``.
    """
    if qk.ndim != 4 or v.shape[:3] != qk.shape[:3] or rotations.ndim != 4:
        raise ValueError(
            f"lsh_attention needs qk (b, h, s, d), v (b, h, s, d_v) and rotations "
            f"(h, d, n_hashes, n_buckets/2), got {tuple(qk.shape)}, {tuple(v.shape)}, "
            f"{tuple(rotations.shape)}"
        )
    if rotations.shape[:2] != (qk.shape[1], qk.shape[3]):
        raise ValueError(
            f"rotations must be (h={qk.shape[1]}, d={qk.shape[3]}, n_hashes, n_buckets/2), "
            f"got {tuple(rotations.shape)}"
        )
    if isinstance(bucket_size, bool) or not isinstance(bucket_size, int) or bucket_size <= 0:
        raise ValueError(f"bucket_size must be a positive int, got {bucket_size!r}")
    dtype = qk.dtype
    ctype = compute_dtype(dtype)
    qk, v = qk.to(ctype), v.to(ctype)
    b, s = qk.shape[0], qk.shape[2]
    if s <= bucket_size:
        out = full_shared_qk_attention(
            qk, qk, v, causal=causal, padding_mask=padding_mask, dropout_p=dropout_p
        )
        return out.to(dtype)
    pad = -s % bucket_size
    if pad:  # pad to whole chunks with padding tokens (their own bucket, never attended)
        real = torch.ones(b, s, dtype=torch.bool, device=qk.device)
        padding_mask = F.pad(real if padding_mask is None else padding_mask, (0, pad))
        qk, v = F.pad(qk, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
        out = lsh_attention(
            qk,
            v,
            rotations,
            bucket_size=bucket_size,
            causal=causal,
            padding_mask=padding_mask,
            dropout_p=dropout_p,
        )
        return out[:, :, :s].to(dtype)
    out = _lsh_chunks(qk, v, rotations, bucket_size, causal, padding_mask, dropout_p)
    return out.to(dtype)


def _lsh_chunks(
    qk: Tensor,
    v: Tensor,
    rotations: Tensor,
    c: int,
    causal: bool,
    padding_mask: Tensor | None,
    dropout_p: float,
) -> Tensor:
    s = qk.shape[2]
    n_hashes = rotations.shape[2]
    buckets, n = hash_buckets(qk, rotations, padding_mask)  # (b, h, n_hashes, s)
    with torch.no_grad():
        offsets = torch.arange(n_hashes, device=qk.device)[:, None] * n  # rounds apart
        # a stable sort of (round, bucket) keeps positions in order: (round, bucket, position)
        order = (buckets + offsets).flatten(2).sort(dim=-1, stable=True).indices  # (b, h, L)
        pos = order % s  # (b, h, L) original position of each sorted slot
    return lsh_chunked(qk, v, pos, padding_mask, c, causal, dropout_p)


class LSHSelfAttention(nn.Module):
    """Reformer's multi-head LSH self-attention (Kitaev et al. 2020): ``qk_proj`` (shared
    queries and keys), ``v_proj``, ``out_proj``; :func:`lsh_attention` in between.

    Its forward takes the arguments of :class:`~qkv.attn.MultiHeadAttention`'s that it can
    honour (``is_causal``, ``padding_mask``, a self-attention :class:`~qkv.attn.KVCache`,
    ``head_mask``), so blocks hold either. A decoding step attends to every cached key
    (:func:`full_shared_qk_attention`).

    Rotations are drawn anew on every call from torch's global generator (Reformer
    re-hashes every forward pass; the reversible layers replay the generator in backward),
    or, with ``seed``, from a generator seeded with it on every call (the same buckets each
    time, ``transformers``' ``hash_seed``).

    Args:
        d_model: model width.
        n_heads: heads ``h``.
        head_dim: ``d_h`` (default ``d_model // n_heads``).
        bucket_size: chunk length (Reformer: 64).
        n_hashes: hash rounds (Reformer trains with 1-4; more is closer to full attention).
        n_buckets: buckets per round (even); None = :func:`default_buckets` of the length.
        bias: biases on the projections (Reformer: none).
        dropout: dropout on the attention weights.
        seed: fixed hashing seed, or None.

    Raises:
        ValueError: sizes that do not fit, or an odd ``n_buckets``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        head_dim: int | None = None,
        bucket_size: int = 64,
        n_hashes: int = 2,
        n_buckets: int | None = None,
        bias: bool = False,
        dropout: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        for name, val in (
            ("d_model", d_model),
            ("n_heads", n_heads),
            ("bucket_size", bucket_size),
            ("n_hashes", n_hashes),
        ):
            if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
            head_dim = d_model // n_heads
        if n_buckets is not None and (n_buckets < 2 or n_buckets % 2):
            raise ValueError(f"n_buckets must be an even int >= 2 or None, got {n_buckets!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, head_dim
        self.n_kv_heads = n_heads  # for caches: keys are the shared-QK vectors
        self.bucket_size, self.n_hashes, self.n_buckets = bucket_size, n_hashes, n_buckets
        self.dropout, self.seed = dropout, seed
        width = n_heads * head_dim
        self.qk_proj = nn.Linear(d_model, width, bias=bias)
        self.v_proj = nn.Linear(d_model, width, bias=bias)
        self.out_proj = nn.Linear(width, d_model, bias=bias)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, bucket_size={self.bucket_size}, "
            f"n_hashes={self.n_hashes}, n_buckets={self.n_buckets}"
        )

    def rotations(self, length: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """This call's rotations for a sequence of ``length`` tokens (see the class)."""
        n = self.n_buckets or default_buckets(length, self.bucket_size)
        gen = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        return draw_rotations(
            self.n_heads, self.head_dim, self.n_hashes, n, generator=gen, device=device, dtype=dtype
        )

    def _heads(self, x: Tensor) -> Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.n_heads, self.head_dim).transpose(1, 2)  # (b, h, s, d_h)

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
        cache: KVCache | None = None,
        head_mask: Tensor | None = None,
        rotations: Tensor | None = None,
    ) -> Tensor:
        """LSH self-attention of ``query`` ``(b, s, d_model)``.

        Args:
            query: ``(b, s, d_model)``.
            key, value: must be None (self-attention only).
            mask: None or a plain :class:`~qkv.masks.Causal` (as ``is_causal``).
            padding_mask: ``(b, s_k)`` bool, True = real token (``s_k`` counts the cache).
            is_causal: causal attention.
            return_weights, attn_bias: refused (no attention matrix is formed).
            positions: ignored (LSH attention needs no positions).
            cache: a self-attention :class:`~qkv.attn.KVCache` (keys = shared-QK vectors).
            head_mask: ``(h,)`` or ``(b, h)`` multipliers on each head's output.
            rotations: this call's rotations ``(h, d_h, n_hashes, n_buckets/2)``; default
                :meth:`rotations`.

        Returns:
            ``(b, s, d_model)``.

        Raises:
            ValueError: cross-attention, a mask other than causal, ``attn_bias`` or
                ``return_weights``, or inputs of the wrong shape.
        """
        if isinstance(mask, Causal) and mask.offset is None:
            mask, is_causal = None, True
        refused = [
            what
            for what, bad in (
                ("cross-attention (key/value)", key is not None or value is not None),
                ("a mask (only is_causal and padding_mask)", mask is not None),
                ("an additive attn_bias", attn_bias is not None),
                ("return_weights (no attention matrix is formed)", return_weights),
            )
            if bad
        ]
        if refused:
            raise ValueError(f"LSHSelfAttention cannot take {', '.join(refused)}")
        if query.ndim != 3 or query.shape[-1] != self.d_model:
            raise ValueError(
                f"query must be (b, s, d_model={self.d_model}), got {tuple(query.shape)}"
            )
        b, s, _ = query.shape
        qk, v = self._heads(self.qk_proj(query)), self._heads(self.v_proj(query))
        dropout_p = self.dropout if self.training else 0.0
        if cache is not None:
            qk_all, v_all = cache.update(qk, v)  # (b, h, s_k, d_h)
            _check_padding(padding_mask, b, qk_all.shape[2])
            out = full_shared_qk_attention(
                qk, qk_all, v_all, causal=is_causal, padding_mask=padding_mask, dropout_p=dropout_p
            )
        else:
            _check_padding(padding_mask, b, s)
            if rotations is None:
                rotations = self.rotations(s + (-s % self.bucket_size), qk.device, qk.dtype)
            out = lsh_attention(
                qk,
                v,
                rotations,
                bucket_size=self.bucket_size,
                causal=is_causal,
                padding_mask=padding_mask,
                dropout_p=dropout_p,
            )
        if head_mask is not None:
            hm = head_mask.to(out.dtype)
            out = out * (hm.view(1, -1, 1, 1) if hm.ndim == 1 else hm.view(b, -1, 1, 1))
        out = out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim)
        return self.out_proj(out)  # type: ignore[no-any-return]


def _check_padding(padding_mask: Tensor | None, b: int, s_k: int) -> None:
    if padding_mask is not None and (
        padding_mask.dtype != torch.bool or tuple(padding_mask.shape) != (b, s_k)
    ):
        raise ValueError(
            f"padding_mask must be a bool (b, s_k) = ({b}, {s_k}) tensor with True = real "
            f"token, got {padding_mask.dtype} {tuple(padding_mask.shape)}"
        )


__all__ = [
    "NORM_EPS",
    "SELF_SCORE",
    "LSHSelfAttention",
    "default_buckets",
    "draw_rotations",
    "full_shared_qk_attention",
    "hash_buckets",
    "lsh_attention",
]
