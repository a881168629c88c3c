"""Fixed sinusoidal absolute position encoding (Vaswani et al., 2017, section 3.5)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _resolve_positions(
    positions: Tensor | None, b: int, s: int, device: torch.device, owner: str
) -> Tensor:
    """Return validated absolute positions, ``(s,)`` or ``(b', s)`` with ``b'`` in ``{1, b}``.

    Shared by the absolute encodings (:class:`Sinusoidal`, ``Learned``, ``RoPE``).

    Args:
        positions: integer tensor ``(s,)`` or ``(b, s)``, or ``None`` for ``arange(s)``.
        b: batch size of the input.
        s: sequence length of the input.
        device: device the positions must end up on.
        owner: class name used in error messages.

    Returns:
        A long tensor on ``device``.

    Raises:
        TypeError: if ``positions`` is not an integer tensor.
        ValueError: if its shape does not match ``(s,)`` or ``(b, s)``.
    """
    if positions is None:
        return torch.arange(s, device=device)  # (s,)
    if not isinstance(positions, Tensor) or positions.is_floating_point() or positions.is_complex():
        got = positions.dtype if isinstance(positions, Tensor) else type(positions).__name__
        raise TypeError(f"{owner}: positions must be an integer tensor, got {got}")
    shape = tuple(positions.shape)
    ok = (positions.dim() == 1 and shape[0] == s) or (
        positions.dim() == 2 and shape[1] == s and shape[0] in (1, b)
    )
    if not ok:
        raise ValueError(
            f"{owner}: positions must have shape (s,)=({s},) or (b, s)=({b}, {s}), got {shape}"
        )
    return positions.to(device=device, dtype=torch.long)


def _check_max_len(positions: Tensor | None, s: int, max_len: int, owner: str) -> None:
    """Raise if any requested position is outside ``[0, max_len)``.

    Args:
        positions: explicit positions, or ``None`` for ``arange(s)``.
        s: sequence length (used when ``positions`` is ``None``).
        max_len: size of the table.
        owner: class name used in error messages.

    Raises:
        ValueError: naming ``max_len`` and the length that would be needed.
    """
    if positions is None:
        if s > max_len:
            raise ValueError(f"sequence length {s} exceeds {owner} max_len={max_len}")
        return
    if positions.numel() == 0 or torch.compiler.is_compiling():
        # A compiled graph cannot branch on tensor values without a break; there the
        # table lookup's own bounds check (inductor's indirect-indexing assert) stands in.
        return
    # One host sync; only paid when a finite table is indexed with explicit positions.
    lo, hi = (int(v) for v in positions.aminmax())
    if lo < 0:
        raise ValueError(f"{owner}: positions must be non-negative, got min position {lo}")
    if hi >= max_len:
        raise ValueError(
            f"position {hi} needs sequence length {hi + 1}, which exceeds {owner} max_len={max_len}"
        )


def _accurate_dtype(device: torch.device) -> torch.dtype:
    """float64 where the backend has it (MPS does not), else float32."""
    return torch.float32 if device.type == "mps" else torch.float64


def sinusoidal_table(positions: Tensor, d_model: int, base: float = 10000.0) -> Tensor:
    """Rows of the sinusoidal table for the given positions, in float64 (float32 on MPS).

    ``PE[pos, 2i] = sin(pos / base^(2i / d_model))``,
    ``PE[pos, 2i + 1] = cos(pos / base^(2i / d_model))``.

    Args:
        positions: integer tensor of any shape ``(...)``.
        d_model: even feature width.
        base: wavelength base (10000 in the paper).

    Returns:
        Tensor ``(..., d_model)``.
    """
    dtype = _accurate_dtype(positions.device)
    two_i = torch.arange(0, d_model, 2, dtype=dtype, device=positions.device)  # (d/2,)
    denom = torch.tensor(base, dtype=dtype, device=positions.device) ** (two_i / d_model)
    angle = positions.to(dtype).unsqueeze(-1) / denom  # (..., d/2)
    # Interleave so that even features are sines and odd features cosines.
    return torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(-2)  # (..., d)


class Sinusoidal(nn.Module):
    """Adds the fixed sinusoidal position encoding of "Attention Is All You Need" (sec. 3.5).

    ``PE[pos, 2i] = sin(pos / base^(2i / d_model))`` and
    ``PE[pos, 2i + 1] = cos(pos / base^(2i / d_model))``; ``forward`` returns ``x + PE``.
    The table is computed in float64 and cast to ``x.dtype``. Scaling the token embeddings by
    ``sqrt(d_model)`` and the dropout after the sum, both in the paper, are left to the caller.

    Args:
        d_model: feature width ``d``; must be even.
        max_len: if given, the table for positions ``[0, max_len)`` is cached in a
            non-persistent buffer ``pe`` and longer inputs are rejected; if ``None``, rows are
            computed on the fly for any position.
        base: wavelength base (10000 in the paper).

    Raises:
        ValueError: if ``d_model`` is not a positive even int, ``max_len`` is not a positive
            int, or ``base`` is not positive.
    """

    pe: Tensor | None

    def __init__(self, d_model: int, max_len: int | None = None, base: float = 10000.0) -> None:
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"d_model must be a positive int, got {d_model!r}")
        if d_model % 2:
            raise ValueError(f"d_model must be even for sin/cos pairs, got d_model={d_model}")
        if max_len is not None and (
            isinstance(max_len, bool) or not isinstance(max_len, int) or max_len <= 0
        ):
            raise ValueError(f"max_len must be a positive int or None, got {max_len!r}")
        if not base > 0:
            raise ValueError(f"base must be positive, got base={base!r}")
        self.d_model = d_model
        self.max_len = max_len
        self.base = float(base)
        if max_len is None:
            self.pe = None
        else:
            table = sinusoidal_table(torch.arange(max_len), d_model, self.base)  # (max_len, d)
            self.register_buffer("pe", table, persistent=False)

    def encoding(self, positions: Tensor) -> Tensor:
        """The table rows for ``positions``, without adding them to anything.

        Args:
            positions: integer tensor of any shape ``(...)``.

        Returns:
            Tensor ``(..., d_model)``: float64 when computed on the fly, the buffer's dtype
            when ``max_len`` is set.

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
            raise TypeError(f"Sinusoidal: positions must be an integer tensor, got {got}")
        if self.pe is None:
            return sinusoidal_table(positions, self.d_model, self.base)
        _check_max_len(positions, 0, self.pe.shape[0], "Sinusoidal")
        return self.pe[positions.to(device=self.pe.device, dtype=torch.long)]  # (..., d)

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Add the position encoding to ``x``.

        Args:
            x: input ``(b, s, d_model)``.
            positions: absolute positions ``(s,)`` or ``(b, s)``; defaults to ``arange(s)``.

        Returns:
            ``x + PE[positions]``, shape ``(b, s, d_model)``, dtype of ``x``.

        Raises:
            ValueError: if ``x`` has the wrong shape, or positions exceed ``max_len``.
            TypeError: if ``positions`` is not an integer tensor.
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must have shape (b, s, d_model={self.d_model}), got {tuple(x.shape)}"
            )
        b, s, _ = x.shape
        pos = _resolve_positions(positions, b, s, x.device, "Sinusoidal")  # (s,) or (b, s)
        if self.pe is None:
            pe = sinusoidal_table(pos, self.d_model, self.base)  # (s, d) or (b, s, d)
        else:
            _check_max_len(None if positions is None else pos, s, self.pe.shape[0], "Sinusoidal")
            pe = self.pe[pos.to(self.pe.device)]  # (s, d) or (b, s, d)
        return x + pe.to(x.dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}, base={self.base:g}"
