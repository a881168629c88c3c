"""Score functions ``f(q, k) -> (..., s_q, s_k)`` for ``softmax(f(Q, K)) V``.

``"dot"`` and ``"scaled_dot"`` are built into :func:`qkv.attention`; the learned scores here
are modules that can be passed as ``score=``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def dot(q: Tensor, k: Tensor) -> Tensor:
    """Luong et al. (2015) "dot": ``q k^T``.

    Args:
        q: ``(..., s_q, d)``.
        k: ``(..., s_k, d)``.

    Returns:
        Scores ``(..., s_q, s_k)``.
    """
    return q @ k.transpose(-2, -1)


class Bilinear(nn.Module):
    """Luong et al. (2015) "general" score: ``q W k^T``.

    Args:
        d_q: query feature size.
        d_k: key feature size (defaults to ``d_q``).

    Raises:
        ValueError: a non-positive size.
    """

    def __init__(self, d_q: int, d_k: int | None = None) -> None:
        super().__init__()
        d_k = d_q if d_k is None else d_k
        for name, val in (("d_q", d_q), ("d_k", d_k)):
            if not isinstance(val, int) or val <= 0:
                raise ValueError(f"Bilinear: {name} must be a positive int, got {val!r}")
        self.weight = nn.Parameter(torch.empty(d_q, d_k))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        """Return ``(q W) k^T`` of shape ``(..., s_q, s_k)``."""
        if q.shape[-1] != self.weight.shape[0] or k.shape[-1] != self.weight.shape[1]:
            raise ValueError(
                f"Bilinear(d_q={self.weight.shape[0]}, d_k={self.weight.shape[1]}) got "
                f"q {tuple(q.shape)} and k {tuple(k.shape)}"
            )
        return (q @ self.weight) @ k.transpose(-2, -1)


class Additive(nn.Module):
    """Bahdanau et al. (2015) additive score: ``v^T tanh(W_q q + W_k k)``.

    Memory is ``O(s_q * s_k * d_attn)``: meant for the classic RNN-sized problems.

    Args:
        d_q: query feature size.
        d_k: key feature size (defaults to ``d_q``).
        d_attn: hidden size of the scoring MLP (defaults to ``d_q``).

    Raises:
        ValueError: a non-positive size.
    """

    def __init__(self, d_q: int, d_k: int | None = None, d_attn: int | None = None) -> None:
        super().__init__()
        d_k = d_q if d_k is None else d_k
        d_attn = d_q if d_attn is None else d_attn
        for name, val in (("d_q", d_q), ("d_k", d_k), ("d_attn", d_attn)):
            if not isinstance(val, int) or val <= 0:
                raise ValueError(f"Additive: {name} must be a positive int, got {val!r}")
        self.w_q = nn.Linear(d_q, d_attn, bias=False)
        self.w_k = nn.Linear(d_k, d_attn, bias=True)
        self.v = nn.Linear(d_attn, 1, bias=False)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        """Return ``v^T tanh(W_q q_i + W_k k_j)`` of shape ``(..., s_q, s_k)``."""
        if q.shape[-1] != self.w_q.in_features or k.shape[-1] != self.w_k.in_features:
            raise ValueError(
                f"Additive(d_q={self.w_q.in_features}, d_k={self.w_k.in_features}) got "
                f"q {tuple(q.shape)} and k {tuple(k.shape)}"
            )
        hq = self.w_q(q).unsqueeze(-2)  # (..., s_q, 1, d_attn)
        hk = self.w_k(k).unsqueeze(-3)  # (..., 1, s_k, d_attn)
        return self.v(torch.tanh(hq + hk)).squeeze(-1)  # (..., s_q, s_k)


def default_scale(d: int) -> float:
    """The scaled dot-product factor ``1 / sqrt(d)`` of Vaswani et al. (2017)."""
    return 1.0 / math.sqrt(d)


__all__ = ["Additive", "Bilinear", "default_scale", "dot"]
