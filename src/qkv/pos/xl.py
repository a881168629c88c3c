"""Transformer-XL's relative positional encoding (Dai et al. 2019, sec. 3.3), as a score
module: attention scores that depend on the distance between query and key, never on
absolute positions, so a segment can attend to the cached states of the one before it.

For query ``i`` and key ``j`` at distance ``i - j`` (eq. after "(d)" in sec. 3.3)::

    A_ij = q_i . k_j  +  q_i . W_R R_{i-j}  +  u . k_j  +  v . W_R R_{i-j}
         = (q_i + u) . k_j  +  (q_i + v) . W_R R_{i-j}

with ``R`` the sinusoid table of :func:`sinusoid_embedding` (not learned), ``W_R`` a
learned projection (``r_proj``) and ``u``, ``v`` learned per-head biases. XLNet (Yang et al.
2019) uses the same term, with a segment term added.

:class:`XLRelativeScore` is a ``score=`` for :class:`~qkv.attn.MultiHeadAttention` (the
scale ``1/sqrt(d_h)`` is applied by the attention, after the score). Queries are aligned to
the end of the keys: with ``m`` memory states before ``s`` new tokens, query ``i`` sits at
position ``m + i``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def sinusoid_embedding(pos_seq: Tensor, d_model: int) -> Tensor:
    """``[sin(p w), cos(p w)]`` for each position ``p``, ``w_k = 10000^(-2k/d)`` (the layout
    of Transformer-XL's and XLNet's ``PositionalEmbedding``: all sines, then all cosines).

    Args:
        pos_seq: ``(n,)`` float positions (relative distances).
        d_model: embedding width (even).

    Returns:
        ``(n, d_model)``.
    """
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d_model, 2.0, device=pos_seq.device) / d_model))
    angles = pos_seq[:, None] * inv_freq[None, :]  # (n, d/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (n, d)


def distances(s_q: int, s_k: int, *, device: torch.device | str | None = None) -> Tensor:
    """The relative distances :func:`shift_relative` expects, ``s_k - 1`` down to
    ``-(s_q - 1)`` (``s_q + s_k - 1`` of them, float)."""
    return torch.arange(s_k - 1, -s_q, -1.0, device=device)


def shift_relative(scores: Tensor, s_k: int) -> Tensor:
    """Turn scores against distances into scores against keys.

    Column ``p`` of ``scores`` holds distance ``s_k - 1 - p`` (:func:`distances`); query
    ``i`` sits at position ``s_k - s_q + i``, so its score for key ``j`` is column
    ``s_q - 1 - i + j``: each row is a shifted window (the "relative shift" of Dai et al.).
    One padded copy read with a row stride one longer than the window: with a zero column
    appended, element ``(i, j)`` of the result is element ``s_q - 1 + i n + j`` of the
    flattened rows, so a slice and a reshape give it (no ``as_strided``: it compiles).

    Args:
        scores: ``(..., s_q, s_q + s_k - 1)``.
        s_k: number of keys.

    Returns:
        ``(..., s_q, s_k)``.
    """
    s_q, n = scores.shape[-2], scores.shape[-1]
    if n != s_q + s_k - 1:
        raise ValueError(f"scores must have s_q + s_k - 1 = {s_q + s_k - 1} columns, got {n}")
    lead = scores.shape[:-2]
    flat = F.pad(scores, (0, 1)).reshape(*lead, s_q * (n + 1))
    return flat[..., s_q - 1 : s_q - 1 + s_q * n].reshape(*lead, s_q, n)[..., :s_k]


class XLRelativeScore(nn.Module):
    """The relative attention score of Transformer-XL (see the module docstring).

    Parameters: ``r_proj`` (``W_R``, ``nn.Linear(d_model, h d_h, bias=False)``), ``u`` and
    ``v`` (``(h, d_h)`` each; ``r_w_bias`` and ``r_r_bias`` in the reference code).

    Args:
        d_model: model width (the sinusoid table's width).
        n_heads: heads ``h``.
        head_dim: ``d_h``.

    Raises:
        ValueError: an odd ``d_model`` or non-positive sizes.
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int) -> None:
        super().__init__()
        for name, val in (("d_model", d_model), ("n_heads", n_heads), ("head_dim", head_dim)):
            if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if d_model % 2:
            raise ValueError(f"the sinusoid table needs an even d_model, got {d_model}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, head_dim
        self.r_proj = nn.Linear(d_model, n_heads * head_dim, bias=False)
        self.u = nn.Parameter(torch.zeros(n_heads, head_dim))
        self.v = nn.Parameter(torch.zeros(n_heads, head_dim))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, head_dim={self.head_dim}"

    def relative_keys(
        self, s_q: int, s_k: int, *, device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        """``W_R R`` for :func:`distances` ``(s_q, s_k)``: ``(h, s_q + s_k - 1, d_h)``."""
        table = sinusoid_embedding(distances(s_q, s_k, device=device), self.d_model)
        r = self.r_proj(table.to(dtype))  # (n, h d_h)
        return r.view(-1, self.n_heads, self.head_dim).transpose(0, 1)  # (h, n, d_h)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        """``(q + u) k^T + shift((q + v) (W_R R)^T)``, unscaled.

        Args:
            q: ``(b, h, s_q, d_h)``.
            k: ``(b, h, s_k, d_h)``.

        Returns:
            ``(b, h, s_q, s_k)``.
        """
        s_q, s_k = q.shape[-2], k.shape[-2]
        u = self.u.to(q.dtype)[:, None, :]  # (h, 1, d_h)
        v = self.v.to(q.dtype)[:, None, :]
        content = (q + u) @ k.transpose(-2, -1)  # (b, h, s_q, s_k)
        r = self.relative_keys(s_q, s_k, device=q.device, dtype=q.dtype)  # (h, n, d_h)
        position = shift_relative((q + v) @ r.transpose(-2, -1), s_k)  # (b, h, s_q, s_k)
        return content + position


__all__ = ["XLRelativeScore", "distances", "shift_relative", "sinusoid_embedding"]
