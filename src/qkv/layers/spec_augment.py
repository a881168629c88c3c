"""SpecAugment's masks (Park et al. 2019, "SpecAugment: A Simple Data Augmentation Method
for Automatic Speech Recognition", sec. 2): during training, ``freq_masks`` bands of up to
``freq_width`` mel channels and ``time_masks`` spans of up to ``time_width`` frames (and at
most ``time_ratio`` of the example's real frames: the paper's ``p``) are set to
``value``. Time warping is left out (the paper finds it the least useful)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _bands(
    n_masks: int, max_width: Tensor, size: Tensor, extent: int, generator: torch.Generator | None
) -> Tensor:
    """``(b, extent)`` bool, True inside one of ``n_masks`` random bands per row: widths
    uniform in ``[0, max_width]``, starts uniform in ``[0, size - width]``."""
    b = max_width.shape[0]
    dev = max_width.device
    out = torch.zeros(b, extent, dtype=torch.bool, device=dev)
    idx = torch.arange(extent, device=dev)
    for _ in range(n_masks):
        u = torch.rand(b, 2, generator=generator, device=dev)
        width = (u[:, 0] * (max_width + 1).float()).long()  # (b,)
        start = (u[:, 1] * (size - width + 1).clamp(min=1).float()).long()
        out |= (idx[None] >= start[:, None]) & (idx[None] < (start + width)[:, None])
    return out


class SpecAugment(nn.Module):
    """Frequency and time masks on ``(b, t, n_mels)`` features, in training mode only.

    Args:
        freq_masks: frequency masks per example (``m_F``).
        freq_width: widest frequency mask (``F``).
        time_masks: time masks per example (``m_T``).
        time_width: widest time mask (``T``).
        time_ratio: a time mask covers at most this share of the real frames (``p``).
        value: what masked cells become (0: the middle of the normalized features).
    """

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 15,
        time_masks: int = 2,
        time_width: int = 40,
        time_ratio: float = 0.2,
        value: float = 0.0,
    ) -> None:
        super().__init__()
        for name, v in (("freq_masks", freq_masks), ("freq_width", freq_width),
                        ("time_masks", time_masks), ("time_width", time_width)):  # fmt: skip
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if not 0.0 <= time_ratio <= 1.0:
            raise ValueError(f"time_ratio must be in [0, 1], got {time_ratio!r}")
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width
        self.time_ratio, self.value = time_ratio, value

    def masks(
        self, x: Tensor, lengths: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """The ``(b, t, n_mels)`` bool mask (True = masked) for features ``x``.

        Args:
            x: ``(b, t, n_mels)``.
            lengths: ``(b,)`` real frames (time masks stay inside them); default ``t``.
            generator: RNG for reproducible masks.
        """
        b, t, f = x.shape
        dev = x.device
        frames = torch.full((b,), t, device=dev) if lengths is None else lengths.to(dev)
        time_cap = torch.minimum(
            torch.full_like(frames, self.time_width), (frames * self.time_ratio).long()
        )
        freq_cap = torch.full((b,), min(self.freq_width, f), device=dev)
        freq = _bands(self.freq_masks, freq_cap, torch.full((b,), f, device=dev), f, generator)
        time = _bands(self.time_masks, time_cap, frames, t, generator)
        return time[:, :, None] | freq[:, None, :]  # (b, t, f)

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``x`` with random masks in training mode; ``x`` itself in eval mode."""
        if not self.training:
            return x
        return x.masked_fill(self.masks(x, lengths, generator), self.value)


__all__ = ["SpecAugment"]
