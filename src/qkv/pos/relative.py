"""T5's learned, bucketed relative position bias (Raffel et al., 2020, section 2.1)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _check_buckets(bidirectional: bool, num_buckets: int, max_distance: int) -> None:
    """Reject settings for which the bucketing divides by zero or takes ``log(<= 0)``."""
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, int) or num_buckets <= 0:
        raise ValueError(f"num_buckets must be a positive int, got {num_buckets!r}")
    if isinstance(max_distance, bool) or not isinstance(max_distance, int) or max_distance <= 0:
        raise ValueError(f"max_distance must be a positive int, got {max_distance!r}")
    least = 4 if bidirectional else 2
    if num_buckets < least:
        raise ValueError(
            f"num_buckets must be >= {least} with bidirectional={bidirectional}, got {num_buckets}"
        )
    max_exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
    if max_distance <= max_exact:
        raise ValueError(
            f"max_distance ({max_distance}) must exceed the {max_exact} exact buckets "
            f"(num_buckets={num_buckets}, bidirectional={bidirectional})"
        )


class RelativeBias(nn.Module):
    """Learned scalar bias per head and bucket of relative distance, added to the scores.

    ``bias[0, h, i, j] = E[bucket(k_pos_j - q_pos_i), h]`` with ``q_pos_i = i + offset`` and
    ``k_pos_j = j``. Buckets are exact for small distances and logarithmically wider up to
    ``max_distance``, beyond which all distances share a bucket; see :meth:`bucket`. The table
    is ``nn.Embedding(num_buckets, n_heads)`` named ``relative_attention_bias``, as in Hugging
    Face's ``T5Attention``, so weights map one-to-one. T5 uses ``bidirectional=True`` in the
    encoder and ``False`` in the decoder, and computes the bias only in the first layer.

    Args:
        n_heads: number of heads ``h``.
        num_buckets: number of buckets (32 in T5).
        max_distance: distance from which all positions share the last bucket (128 in T5).
        bidirectional: whether keys after the query get their own buckets.

    Raises:
        ValueError: if a size is not a positive int, or the bucket settings are degenerate
            (fewer than 4 buckets bidirectional / 2 otherwise, or ``max_distance`` not larger
            than the number of exact buckets).
    """

    def __init__(
        self,
        n_heads: int,
        num_buckets: int = 32,
        max_distance: int = 128,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads <= 0:
            raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
        _check_buckets(bool(bidirectional), num_buckets, max_distance)
        self.n_heads = n_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bool(bidirectional)
        self.relative_attention_bias = nn.Embedding(num_buckets, n_heads)

    @staticmethod
    def bucket(
        relative_position: Tensor, bidirectional: bool, num_buckets: int, max_distance: int
    ) -> Tensor:
        """T5's ``_relative_position_bucket`` (from Mesh TensorFlow).

        With ``bidirectional``, half the buckets are for positive offsets (keys after the
        query). Of the remaining buckets, half hold exact distances ``0 .. max_exact - 1`` and
        the others cover ``[max_exact, max_distance)`` logarithmically:
        ``max_exact + floor(log(d / max_exact) / log(max_distance / max_exact)
        * (n - max_exact))``, capped at ``n - 1``. Without ``bidirectional``, positive offsets
        (future keys) share bucket 0 with distance 0.

        Args:
            relative_position: integer tensor ``memory_position - query_position``, any shape.
            bidirectional: see above.
            num_buckets: total number of buckets.
            max_distance: distance from which all positions share the last bucket.

        Returns:
            Long tensor of the same shape, values in ``[0, num_buckets)``.

        Raises:
            ValueError: on degenerate bucket settings (see the class).
        """
        _check_buckets(bidirectional, num_buckets, max_distance)
        relative_buckets = torch.zeros_like(relative_position, dtype=torch.long)
        if bidirectional:
            num_buckets //= 2
            relative_buckets += (relative_position > 0).to(torch.long) * num_buckets
            relative_position = torch.abs(relative_position)
        else:
            relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
        # Now relative_position >= 0.
        max_exact = num_buckets // 2
        is_small = relative_position < max_exact
        # Same float32 arithmetic as T5 so the bucket boundaries match bit for bit. The clamp
        # only touches entries that take the `is_small` branch; it avoids casting log(0) = -inf.
        large_pos = relative_position.clamp(min=1).float()
        if_large = max_exact + (
            torch.log(large_pos / max_exact)
            / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).to(torch.long)
        if_large = torch.clamp(if_large, max=num_buckets - 1)
        return relative_buckets + torch.where(is_small, relative_position.long(), if_large)

    def forward(
        self,
        s_q: int,
        s_k: int,
        *,
        offset: int | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """The additive bias for ``s_q`` queries against ``s_k`` keys.

        Args:
            s_q: number of queries.
            s_k: number of keys.
            offset: absolute position of query 0 minus that of key 0; ``None`` aligns the
                queries to the end of the keys (``s_k - s_q``), as in KV-cache decoding.
            device: device of the result; defaults to that of the embedding.

        Returns:
            Tensor ``(1, h, s_q, s_k)`` in the embedding's dtype.

        Raises:
            ValueError: if ``s_q`` or ``s_k`` is not a positive int, or ``offset`` not an int.
        """
        for name, value in (("s_q", s_q), ("s_k", s_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int)):
            raise ValueError(f"offset must be an int or None, got {offset!r}")
        weight = self.relative_attention_bias.weight  # (num_buckets, h)
        device = weight.device if device is None else device
        off = s_k - s_q if offset is None else offset
        q_pos = torch.arange(s_q, device=device) + off  # (s_q,)
        k_pos = torch.arange(s_k, device=device)  # (s_k,)
        rel = k_pos[None, :] - q_pos[:, None]  # (s_q, s_k)
        buckets = self.bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)
        values = self.relative_attention_bias(buckets.to(weight.device))  # (s_q, s_k, h)
        return values.permute(2, 0, 1).unsqueeze(0).to(device)  # (1, h, s_q, s_k)

    def extra_repr(self) -> str:
        return (
            f"n_heads={self.n_heads}, num_buckets={self.num_buckets}, "
            f"max_distance={self.max_distance}, bidirectional={self.bidirectional}"
        )
