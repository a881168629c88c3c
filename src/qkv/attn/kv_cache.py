"""Key/value caches for incremental decoding (gpt-fast style: preallocated, no concat)."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """A preallocated self-attention cache for one layer.

    Buffers have shape ``(b, h_kv, max_len, d_h)``; :meth:`update` writes the new keys and
    values at ``[length, length + s)`` and returns views of everything cached so far.

    Args:
        batch: batch size ``b``.
        n_kv_heads: key/value heads ``h_kv``.
        max_len: capacity in tokens.
        head_dim: ``d_h`` of the keys.
        v_head_dim: ``d_h`` of the values (defaults to ``head_dim``).
        dtype, device: of the buffers.

    Raises:
        ValueError: non-positive sizes; an update past ``max_len``.
    """

    def __init__(
        self,
        batch: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        v_head_dim: int | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        for name, val in (
            ("batch", batch),
            ("n_kv_heads", n_kv_heads),
            ("max_len", max_len),
            ("head_dim", head_dim),
        ):
            if not isinstance(val, int) or val <= 0:
                raise ValueError(f"KVCache: {name} must be a positive int, got {val!r}")
        v_head_dim = head_dim if v_head_dim is None else v_head_dim
        self.k = torch.zeros(batch, n_kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros(batch, n_kv_heads, max_len, v_head_dim, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``k`` ``(b, h_kv, s, d_h)`` and ``v``; return all cached keys and values."""
        s = k.shape[2]
        if self.length + s > self.max_len:
            raise ValueError(
                f"KVCache overflow: {self.length} cached + {s} new > max_len={self.max_len}"
            )
        if k.shape[:2] != self.k.shape[:2] or k.shape[3] != self.k.shape[3]:
            raise ValueError(
                f"KVCache holds (b, h_kv, *, d_h) = {tuple(self.k.shape)}, got k {tuple(k.shape)}"
            )
        end = self.length + s
        self.k.narrow(2, self.length, s).copy_(k)  # copy_ casts to the cache dtype
        self.v.narrow(2, self.length, s).copy_(v)
        self.length = end
        return self.k.narrow(2, 0, end), self.v.narrow(2, 0, end)

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search): row ``i`` becomes old row ``index[i]``."""
        self.k = self.k.index_select(0, index)
        self.v = self.v.index_select(0, index)


class CrossKVCache:
    """Cross-attention keys/values computed once from the encoder memory and reused."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @property
    def is_set(self) -> bool:
        return self.k is not None

    def set(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k, self.v = k, v
        return k, v

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search)."""
        if self.k is not None and self.v is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)
