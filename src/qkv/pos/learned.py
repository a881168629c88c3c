"""Learned absolute position embeddings (GPT-2, BERT, ViT)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qkv.pos.sinusoidal import _check_max_len, _resolve_positions


class Learned(nn.Module):
    """Adds a learned embedding per absolute position: ``forward(x) = x + E[positions]``.

    The table is an ``nn.Embedding(max_len, d_model)`` held in the submodule ``emb`` (so the
    parameter is ``emb.weight``), initialised from ``N(0, 0.02^2)`` as in GPT-2.

    Args:
        max_len: number of positions in the table.
        d_model: feature width ``d``.

    Raises:
        ValueError: if ``max_len`` or ``d_model`` is not a positive int.
    """

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        for name, value in (("max_len", max_len), ("d_model", d_model)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.max_len = max_len
        self.d_model = d_model
        self.emb = nn.Embedding(max_len, d_model)
        self.reset_parameters()

    @property
    def weight(self) -> Tensor:
        """The table ``(max_len, d_model)``, i.e. ``emb.weight``."""
        return self.emb.weight

    def reset_parameters(self) -> None:
        """Re-draw the table from ``N(0, 0.02^2)``."""
        nn.init.normal_(self.emb.weight, mean=0.0, std=0.02)

    def encoding(self, positions: Tensor) -> Tensor:
        """The table rows for ``positions``, without adding them to anything.

        Args:
            positions: integer tensor of any shape ``(...)``.

        Returns:
            Tensor ``(..., d_model)``.

        Raises:
            TypeError: if ``positions`` is not an integer tensor.
            ValueError: if a position is negative or ``>= max_len``.
        """
        if (
            not isinstance(positions, Tensor)
            or positions.is_floating_point()
            or positions.is_complex()
        ):
            got = positions.dtype if isinstance(positions, Tensor) else type(positions).__name__
            raise TypeError(f"Learned: positions must be an integer tensor, got {got}")
        _check_max_len(positions, 0, self.max_len, "Learned")
        return self.emb(positions.to(device=self.emb.weight.device, dtype=torch.long))

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Add the learned position embedding to ``x``.

        Args:
            x: input ``(b, s, d_model)``.
            positions: absolute positions ``(s,)`` or ``(b, s)``; defaults to ``arange(s)``.

        Returns:
            ``x + E[positions]``, shape ``(b, s, d_model)``.

        Raises:
            ValueError: if ``x`` has the wrong shape or a position is outside ``[0, max_len)``.
            TypeError: if ``positions`` is not an integer tensor.
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must have shape (b, s, d_model={self.d_model}), got {tuple(x.shape)}"
            )
        b, s, _ = x.shape
        pos = _resolve_positions(positions, b, s, self.emb.weight.device, "Learned")
        _check_max_len(None if positions is None else pos, s, self.max_len, "Learned")
        return x + self.emb(pos)  # (b, s, d)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"
