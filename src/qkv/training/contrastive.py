"""CLIP's symmetric contrastive loss (Radford et al. 2021, fig. 3; the InfoNCE loss of van den
Oord et al. 2018 taken both ways)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def contrastive_loss(logits_per_image: Tensor, positives: Tensor | None = None) -> Tensor:
    """The mean of the image->text and text->image cross entropies of a similarity matrix.

    With ``positives`` None, image ``i`` belongs with text ``i`` (CLIP's pseudocode:
    ``(CE(logits, arange(n)) + CE(logits.T, arange(n))) / 2``). When several texts fit an
    image (the same caption twice in a batch), ``positives`` marks every pair that belongs
    together, and each row's target is spread evenly over its positives, so a duplicate is
    never pushed away as a negative.

    Args:
        logits_per_image: ``(n, n)`` scaled similarities, rows images, columns texts.
        positives: ``(n, n)`` bool, True where image ``i`` and text ``j`` belong together;
            every row and column needs one (the diagonal always qualifies).

    Returns:
        The scalar loss (mean over the ``2 n`` rows and columns).

    Raises:
        ValueError: a non-square matrix, or ``positives`` of another shape or with an empty
            row or column.
    """
    n = logits_per_image.shape[0]
    if logits_per_image.ndim != 2 or logits_per_image.shape[1] != n:
        raise ValueError(
            f"logits_per_image must be square (n, n), got {tuple(logits_per_image.shape)}"
        )
    if positives is None:
        labels = torch.arange(n, device=logits_per_image.device)
        return (
            F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)
        ) / 2
    if positives.shape != logits_per_image.shape:
        raise ValueError(
            f"positives must be {tuple(logits_per_image.shape)}, got {tuple(positives.shape)}"
        )
    if not bool(positives.any(0).all() and positives.any(1).all()):
        raise ValueError("positives needs a True in every row and every column")
    p = positives.to(logits_per_image.dtype)
    per_image = F.cross_entropy(logits_per_image, p / p.sum(1, keepdim=True))
    per_text = F.cross_entropy(logits_per_image.T, p.T / p.T.sum(1, keepdim=True))
    return (per_image + per_text) / 2


__all__ = ["contrastive_loss"]
