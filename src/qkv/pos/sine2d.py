"""DETR's 2-D sine position encoding (Carion et al. 2020, sec. 3.2 and appendix A.4): the
sinusoids of Vaswani et al. (2017) applied to the row and to the column of each feature-map
cell, half of the channels each, coordinates normalized to ``(0, 2 pi]``."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sine_2d(
    height: int,
    width: int,
    d_model: int,
    *,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The position of every cell of an ``(H, W)`` grid, flattened row-major.

    With ``y = (r + 1) / (H + eps) * scale`` and ``x = (c + 1) / (W + eps) * scale``
    (``eps = 1e-6``) and ``F = d_model / 2`` features per coordinate, feature ``k`` of a
    coordinate ``t`` is ``sin(t / T^(2 floor(k/2) / F))`` for even ``k`` and ``cos(...)`` for
    odd ``k``; the row's ``F`` features come first, then the column's, as in the reference
    ``PositionEmbeddingSine(normalize=True)`` and ``transformers``'
    ``DetrSinePositionEmbedding``.

    Args:
        height: rows ``H``.
        width: columns ``W``.
        d_model: width ``d`` (a multiple of 4).
        temperature: ``T``.
        scale: the normalized coordinates' range.
        device: where to build it.
        dtype: its dtype (computed in it, as the reference does).

    Returns:
        ``(H W, d_model)``.

    Raises:
        ValueError: ``d_model`` not a multiple of 4, or sizes that are not positive ints.
    """
    for name, value in (("height", height), ("width", width), ("d_model", d_model)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if d_model % 4:
        raise ValueError(f"d_model must be a multiple of 4, got {d_model}")
    feats = d_model // 2
    eps = 1e-6
    y = torch.arange(1, height + 1, dtype=dtype, device=device) / (height + eps) * scale  # (H,)
    x = torch.arange(1, width + 1, dtype=dtype, device=device) / (width + eps) * scale  # (W,)
    k = torch.arange(feats, dtype=torch.int64, device=device).to(dtype)
    dim_t = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / feats)  # (F,)

    def encode(t: Tensor) -> Tensor:
        p = t[:, None] / dim_t  # (n, F)
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)  # (n, F)

    pos_y = encode(y)[:, None, :].expand(height, width, feats)  # (H, W, F)
    pos_x = encode(x)[None, :, :].expand(height, width, feats)  # (H, W, F)
    return torch.cat((pos_y, pos_x), dim=-1).reshape(height * width, d_model)  # (H W, d)


__all__ = ["sine_2d"]
