"""The output (vocabulary) projection, with a decoding layout for its weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: rows (tokens) up to which a prepared head multiplies by its transposed copy
_FEW_ROWS = 64


class OutputHead(nn.Linear):
    """``logits = x W^T + b``: an ``nn.Linear`` (same parameters, same state dict, tied to
    the token embedding in most models) that decodes faster.

    BLAS multiplies a few rows by a transposed ``(vocab, d)`` weight far slower than by a
    contiguous ``(d, vocab)`` matrix (MKL, 8 rows, d = 256, vocab 8192: 2.5x). While
    :meth:`prepare_decoding` is in effect (generation sets it around its loop), the head
    keeps such a copy and uses it for inputs of at most 64 rows when no gradient is
    wanted; everything else takes ``nn.Linear``'s path.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._decoding_weight: Tensor | None = None  # (d, vocab), contiguous

    def prepare_decoding(self) -> None:
        """Make the transposed copy of the weight (memory: one more head)."""
        self._decoding_weight = self.weight.detach().t().contiguous()

    def release_decoding(self) -> None:
        """Drop the copy."""
        self._decoding_weight = None

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d) -> (..., vocab)``."""
        wt = self._decoding_weight
        if wt is None or torch.is_grad_enabled() or x.numel() > _FEW_ROWS * x.shape[-1]:
            return F.linear(x, self.weight, self.bias)
        out = torch.matmul(x, wt)  # (..., vocab)
        return out if self.bias is None else out + self.bias
