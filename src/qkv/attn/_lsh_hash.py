"""LSH attention's hashing (Kitaev et al. 2020, sec. 3; angular LSH, Andoni et al. 2015):
random rotations drawn as ``transformers`` draws them, and each position's bucket per round.

:mod:`qkv.attn.lsh` sorts and chunks by these buckets; its names re-export these.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Most rotated coordinates computed at once while hashing (4 MiB in float32).
HASH_ELEMENTS: int = 1 << 20


def default_buckets(length: int, bucket_size: int) -> int:
    """``transformers``' rule for ``num_buckets=None``: about ``2 length / bucket_size``
    buckets (the paper's choice), rounded down to a power of two (at least 2)."""
    return max(2, 2 ** ((2 * (length // bucket_size)).bit_length() - 1))


def draw_rotations(
    n_heads: int,
    head_dim: int,
    n_hashes: int,
    n_buckets: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Random rotations ``(h, d_h, n_hashes, n_buckets/2)`` with ``N(0, 1)`` entries.

    Drawn on the CPU, in this layout and order, they are what ``transformers`` draws after
    ``torch.manual_seed(hash_seed)``: pass ``torch.Generator().manual_seed(hash_seed)``.

    Raises:
        ValueError: an odd or non-positive ``n_buckets``.
    """
    if (
        isinstance(n_buckets, bool)
        or not isinstance(n_buckets, int)
        or n_buckets < 2
        or n_buckets % 2
    ):
        raise ValueError(f"n_buckets must be an even int >= 2, got {n_buckets!r}")
    shape = (n_heads, head_dim, n_hashes, n_buckets // 2)
    return torch.randn(shape, generator=generator, dtype=dtype).to(device)


def hash_buckets(
    qk: Tensor, rotations: Tensor, padding_mask: Tensor | None = None
) -> tuple[Tensor, int]:
    """Angular LSH buckets of every position in every round.

    Args:
        qk: ``(b, h, s, d)``.
        rotations: ``(h, d, n_hashes, n_buckets/2)``.
        padding_mask: ``(b, s)`` bool, True = real token. When any token is padding, padding
            gets bucket ``n_buckets`` (sorted after every real bucket).

    Returns:
        ``(buckets, n)``: ``(b, h, n_hashes, s)`` long buckets and the number of buckets
        per round (``n_buckets``, plus one with padding).
    """
    b, h, s, _ = qk.shape
    half = rotations.shape[-1]
    rot = rotations.to(qk.dtype)
    buckets = torch.empty(b, h, rotations.shape[2], s, dtype=torch.long, device=qk.device)
    # argmax([x R; -x R]) without the (b, h, n_hashes, s, n_buckets) tensor: the larger of
    # max(x R) and -min(x R), a few positions at a time (ties go to the first half, as
    # argmax's first index does)
    step = max(1, HASH_ELEMENTS // (b * h * rotations.shape[2] * half))
    for i in range(0, s, step):
        rotated = torch.einsum("bhsd,hdnr->bhnsr", qk[:, :, i : i + step].detach(), rot)
        hi, lo = rotated.max(dim=-1), rotated.min(dim=-1)  # (b, h, n_hashes, step)
        buckets[..., i : i + step] = torch.where(
            hi.values >= -lo.values, hi.indices, lo.indices + half
        )
    n = 2 * rotations.shape[-1]
    if padding_mask is not None and not bool(padding_mask.all()):
        buckets = buckets.masked_fill(~padding_mask[:, None, None, :], n)
        n += 1
    return buckets, n
