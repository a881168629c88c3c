"""Linformer (Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity").

Keys and values are projected along the sequence axis to ``k`` rows before attention
(sec. 4, eq. 7)::

    head_i = softmax(Q W_q (E K W_k)^T / sqrt(d_h)) (F V W_v),   E, F: (k, n),

so the score matrix is ``(s, k)`` instead of ``(s, s)``: time and memory ``O(s k)``. ``E``
and ``F`` are learned, one pair per layer, shared by the heads ("headwise sharing",
sec. 4); an input shorter than ``n = max_len`` uses their first ``s`` columns.

Projecting the sequence mixes every position into every projected row, so Linformer is
bidirectional only (an encoder's self-attention): :class:`LinformerAttention` refuses
causal masks and caches.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qkv.attn.functional import BackendName, MaskLike, attention
from qkv.attn.mha import MultiHeadAttention


def pooling_projection(k: int, n: int, *, device: torch.device | str | None = None) -> Tensor:
    """A ``(k, n)`` projection that averages ``k`` contiguous segments of ``n`` positions
    (the "mean pooling" projection of Wang et al. 2020, sec. 4): the identity when
    ``k == n``, so Linformer with it becomes exact softmax attention.

    Raises:
        ValueError: ``k`` not in ``[1, n]``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, n={n}], got {k!r}")
    edges = torch.linspace(0, n, k + 1).round().long()  # segment boundaries
    seg = torch.bucketize(torch.arange(n), edges[1:], right=True)  # (n,) segment of each
    p = torch.zeros(k, n)
    p[seg, torch.arange(n)] = 1.0
    return (p / p.sum(1, keepdim=True)).to(device)  # (k, n), rows sum to 1


def linformer_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    e: Tensor,
    f: Tensor,
    *,
    padding_mask: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: BackendName = "auto",
) -> Tensor:
    """``softmax(q (e k)^T * scale) (f v)``: Linformer's attention of projected keys.

    Args:
        q: ``(b, h, s_q, d)``.
        k: ``(b, h_kv, s, d)``.
        v: ``(b, h_kv, s, d_v)``.
        e: ``(p, n)`` key projection, ``n >= s`` (its first ``s`` columns are used).
        f: ``(p, n)`` value projection.
        padding_mask: ``(b, s)`` bool, True = real token; padded keys and values are zeroed
            before the projection, so they add nothing to any projected row.
        scale: score scale (default ``1/sqrt(d)``).
        dropout_p: dropout on the ``(s_q, p)`` attention weights.
        backend: the backend of the (small, dense) attention that follows.

    Returns:
        ``(b, h, s_q, d_v)``.

    Raises:
        ValueError: a sequence longer than the projections.
    """
    s = k.shape[-2]
    if s > e.shape[1] or s > f.shape[1]:
        raise ValueError(
            f"Linformer projections cover {min(e.shape[1], f.shape[1])} positions, got a "
            f"sequence of {s} (raise max_len)"
        )
    if padding_mask is not None:
        keep = padding_mask[:, None, :, None].to(k.dtype)  # (b, 1, s, 1)
        k, v = k * keep, v * keep
    ke = torch.matmul(e[:, :s].to(k.dtype), k)  # (b, h_kv, p, d)
    vf = torch.matmul(f[:, :s].to(v.dtype), v)  # (b, h_kv, p, d_v)
    return attention(q, ke, vf, scale=scale, dropout_p=dropout_p, backend=backend)  # type: ignore[return-value]


class LinformerAttention(MultiHeadAttention):
    """Multi-head self-attention with Linformer's projected keys and values (Wang et al.
    2020): :class:`~qkv.attn.MultiHeadAttention`'s projections plus the learned
    ``proj_k`` (``E``) and ``proj_v`` (``F``), ``nn.Linear(max_len, k, bias=False)`` each.

    Args:
        d_model, n_heads: as in :class:`~qkv.attn.MultiHeadAttention`.
        max_len: longest sequence ``n`` (the projections' input size).
        k: projected length.
        **kwargs: the other arguments of :class:`~qkv.attn.MultiHeadAttention`.

    Raises:
        ValueError: non-positive ``max_len`` or ``k``.
    """

    def __init__(self, d_model: int, n_heads: int, *, max_len: int, k: int, **kwargs: object):
        super().__init__(d_model, n_heads, **kwargs)  # type: ignore[arg-type]
        for name, val in (("max_len", max_len), ("k", k)):
            if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        self.max_len, self.k = max_len, k
        self.proj_k = nn.Linear(max_len, k, bias=False)
        self.proj_v = nn.Linear(max_len, k, bias=False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_len={self.max_len}, k={self.k}"

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
        """Linformer attention of the projected heads (see
        :meth:`MultiHeadAttention.attend`).

        Raises:
            ValueError: causal attention, a mask, an ``attn_bias``, ``return_weights``,
                cross-attention, or a sequence longer than ``max_len``.
        """
        refused = [
            what
            for what, bad in (
                ("causal attention (projections mix every position)", is_causal),
                ("a mask (only padding_mask)", mask is not None),
                ("an additive attn_bias", attn_bias is not None),
                ("return_weights", return_weights),
                ("cross-attention or a cache", not self_attention or q.shape[2] != k.shape[2]),
            )
            if bad
        ]
        if refused:
            raise ValueError(f"LinformerAttention cannot take {', '.join(refused)}")
        b, s = k.shape[0], k.shape[2]
        if padding_mask is not None and (
            padding_mask.dtype != torch.bool or tuple(padding_mask.shape) != (b, s)
        ):
            raise ValueError(
                f"padding_mask must be a bool (b, s_k) = ({b}, {s}) tensor with True = real "
                f"token, got {padding_mask.dtype} {tuple(padding_mask.shape)}"
            )
        out = linformer_attention(
            q,
            k,
            v,
            self.proj_k.weight,
            self.proj_v.weight,
            padding_mask=padding_mask,
            scale=self.scale,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
        )
        return out, None


__all__ = ["LinformerAttention", "linformer_attention", "pooling_projection"]
