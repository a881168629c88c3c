"""ALiBi: attention with linear biases (Press et al., 2022, "Train Short, Test Long")."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def alibi_slopes(n_heads: int) -> list[float]:
    """Per-head slopes of ALiBi, exactly as the reference ``get_slopes`` of the ALiBi repo.

    For ``n`` a power of two the slopes are the geometric sequence ``2^(-8/n), 2^(-16/n), ...,
    2^(-8)`` (start and ratio ``2^(-8/n)``). Otherwise, with ``c`` the largest power of two
    below ``n``, they are the ``c`` slopes for ``c`` heads followed by the first ``n - c`` of
    every other slope (``[0::2]``) for ``2c`` heads.

    Args:
        n_heads: number of heads ``h``.

    Returns:
        ``h`` Python floats.

    Raises:
        ValueError: if ``n_heads`` is not a positive int.
    """
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads <= 0:
        raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")

    def power_of_2(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)  # == 2**(-2**-(log2(n) - 3)) in the reference
        return [start * start**i for i in range(n)]

    if n_heads & (n_heads - 1) == 0:
        return power_of_2(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_2(closest) + power_of_2(2 * closest)[0::2][: n_heads - closest]


class ALiBi(nn.Module):
    """Additive per-head linear distance bias for the attention scores.

    ``bias[0, h, i, j] = -m_h * (q_pos_i - k_pos_j)`` with ``q_pos_i = i + offset`` and
    ``k_pos_j = j``, where ``m_h`` are the slopes of :func:`alibi_slopes`. With ``causal=True``
    entries with ``k_pos > q_pos`` are 0 (the causal mask removes them separately); with
    ``causal=False`` the symmetric ``-m_h * |q_pos - k_pos|`` is used, a common encoder variant.
    (The reference implementation adds ``m_h * j`` instead, which differs from this by a
    per-row constant that softmax ignores; the form here is exact for any ``offset``.)

    Args:
        n_heads: number of heads ``h``.
        causal: use the one-sided (decoder) or symmetric (encoder) distance.

    Raises:
        ValueError: if ``n_heads`` is not a positive int.
    """

    slopes: Tensor

    def __init__(self, n_heads: int, causal: bool = True) -> None:
        super().__init__()
        slopes = torch.tensor(alibi_slopes(n_heads), dtype=torch.float32)  # (h,)
        self.n_heads = n_heads
        self.causal = bool(causal)
        # Deterministic, so not saved in checkpoints.
        self.register_buffer("slopes", slopes, persistent=False)

    def bias(
        self,
        s_q: int,
        s_k: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        offset: int | None = None,
    ) -> Tensor:
        """The additive bias for ``s_q`` queries against ``s_k`` keys.

        Args:
            s_q: number of queries.
            s_k: number of keys.
            device: device of the result; defaults to that of ``slopes``.
            dtype: dtype of the result (computed in float32).
            offset: absolute position of query 0 minus that of key 0; ``None`` aligns the
                queries to the end of the keys (``s_k - s_q``), as in KV-cache decoding.

        Returns:
            Tensor ``(1, h, s_q, s_k)``.

        Raises:
            ValueError: if ``s_q`` or ``s_k`` is not a positive int, or ``offset`` not an int.
        """
        for name, value in (("s_q", s_q), ("s_k", s_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int)):
            raise ValueError(f"offset must be an int or None, got {offset!r}")
        off = s_k - s_q if offset is None else offset
        device = self.slopes.device if device is None else device
        q_pos = torch.arange(s_q, device=device) + off  # (s_q,)
        k_pos = torch.arange(s_k, device=device)  # (s_k,)
        rel = q_pos[:, None] - k_pos[None, :]  # (s_q, s_k)
        dist = rel.clamp(min=0) if self.causal else rel.abs()  # (s_q, s_k)
        slopes = self.slopes.to(device=device, dtype=torch.float32)  # (h,)
        # Negate the integer distance, not the slope, so that distance 0 gives +0.0, not -0.0.
        out = slopes[:, None, None] * (-dist).to(torch.float32)  # (h, s_q, s_k)
        return out.unsqueeze(0).to(dtype)  # (1, h, s_q, s_k)

    def forward(
        self,
        s_q: int,
        s_k: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        offset: int | None = None,
    ) -> Tensor:
        """Same as :meth:`bias`."""
        return self.bias(s_q, s_k, device=device, dtype=dtype, offset=offset)

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, causal={self.causal}"
