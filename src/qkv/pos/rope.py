"""Rotary position embedding, RoPE (Su et al., 2021, "RoFormer")."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qkv.pos.sinusoidal import _resolve_positions


class RoPE(nn.Module):
    """Rotates pairs of query/key features by an angle proportional to their position.

    For a pair ``(x1, x2)`` at position ``m`` with frequency
    ``theta_i = base^(-2i / rotary_dim)``, ``i = 0 .. rotary_dim/2 - 1``:

        (x1, x2) -> (x1 cos(m theta_i) - x2 sin(m theta_i), x1 sin(m theta_i) + x2 cos(m theta_i))

    i.e. ``x1 + j x2`` is multiplied by ``exp(j m theta_i)``. Rotations preserve norms, and
    ``<RoPE(q, m), RoPE(k, n)>`` depends on ``m - n`` only, which is what makes the attention
    scores relative (Su et al., 2021, eq. 16).

    Two feature layouts are in use and their weights are not interchangeable:

    * ``interleaved=False`` (default): pairs are ``(i, i + rotary_dim/2)``, the "rotate_half"
      layout of GPT-NeoX and Hugging Face Llama.
    * ``interleaved=True``: pairs are ``(2i, 2i + 1)``, as in the paper, GPT-J and Meta's Llama.

    Only the first ``rotary_dim`` features are rotated (partial rotary as in GPT-NeoX/GPT-J);
    the rest pass through. The angles are formed in float64 (see :meth:`cos_sin`); the rotation
    runs in float32 (float64 if ``x`` is float64) and the result is cast back to ``x.dtype``.

    Args:
        head_dim: per-head width ``d_h``.
        base: frequency base (10000 in the paper; Llama 3 uses 500000).
        rotary_dim: number of leading features to rotate; defaults to ``head_dim``. Must be even
            and at most ``head_dim``.
        interleaved: feature pairing layout, see above.

    Raises:
        ValueError: if ``head_dim`` is not a positive int, ``rotary_dim`` is not a positive even
            int ``<= head_dim``, or ``base`` is not positive.
    """

    def __init__(
        self,
        head_dim: int,
        base: float = 10000.0,
        rotary_dim: int | None = None,
        interleaved: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0:
            raise ValueError(f"head_dim must be a positive int, got {head_dim!r}")
        if rotary_dim is None:
            rotary_dim = head_dim
        if isinstance(rotary_dim, bool) or not isinstance(rotary_dim, int) or rotary_dim <= 0:
            raise ValueError(f"rotary_dim must be a positive int or None, got {rotary_dim!r}")
        if rotary_dim % 2:
            raise ValueError(
                f"rotary_dim must be even (features rotate in pairs), got {rotary_dim}"
            )
        if rotary_dim > head_dim:
            raise ValueError(f"rotary_dim ({rotary_dim}) must be <= head_dim ({head_dim})")
        if not base > 0:
            raise ValueError(f"base must be positive, got base={base!r}")
        self.head_dim = head_dim
        self.rotary_dim = rotary_dim
        self.base = float(base)
        self.interleaved = bool(interleaved)

    def inv_freq(
        self, device: torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """The frequencies ``theta_i = base^(-2i / rotary_dim)``.

        Computed on demand in float64 (then cast) rather than stored as a buffer, so that
        ``module.half()`` cannot round them.

        Args:
            device: where to put the result.
            dtype: float dtype of the result.

        Returns:
            Tensor ``(rotary_dim // 2,)``.
        """
        device = torch.device("cpu") if device is None else torch.device(device)
        wide = torch.float32 if device.type == "mps" else torch.float64  # MPS lacks float64
        two_i = torch.arange(0, self.rotary_dim, 2, device=device, dtype=wide)  # (r/2,)
        return (1.0 / (self.base ** (two_i / self.rotary_dim))).to(dtype)

    def cos_sin(
        self, positions: Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        """Cosines and sines of the rotation angles ``positions * theta_i``.

        The angles are formed in float64 (float32 on MPS): in float32, ``pos * theta`` for
        ``pos`` in the thousands is already off by ~1e-4 rad. The table is small
        (``s x rotary_dim/2``), so this costs little; the result is cast to ``dtype``.

        Args:
            positions: integer tensor of any shape ``(...)``.
            dtype: float dtype of the result.

        Returns:
            ``(cos, sin)``, each ``(..., rotary_dim // 2)``.
        """
        wide = torch.float32 if positions.device.type == "mps" else torch.float64
        angle = positions.to(wide).unsqueeze(-1) * self.inv_freq(positions.device, wide)
        return angle.cos().to(dtype), angle.sin().to(dtype)  # (..., r/2) each

    def forward(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Rotate the first ``rotary_dim`` features of ``x`` by their positions.

        Args:
            x: queries or keys ``(b, h, s, head_dim)``.
            positions: absolute positions ``(s,)`` or ``(b, s)``; defaults to ``arange(s)``.
                With a KV cache, pass the positions of the new tokens.

        Returns:
            Tensor ``(b, h, s, head_dim)``, dtype of ``x``.

        Raises:
            ValueError: if ``x`` or ``positions`` has the wrong shape.
            TypeError: if ``positions`` is not an integer tensor.
        """
        if x.dim() != 4 or x.shape[-1] != self.head_dim:
            raise ValueError(
                f"x must have shape (b, h, s, head_dim={self.head_dim}), got {tuple(x.shape)}"
            )
        b, _, s, _ = x.shape
        pos = _resolve_positions(positions, b, s, x.device, "RoPE")  # (s,) or (b', s)
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        cos, sin = self.cos_sin(pos, compute)  # (s, r/2) or (b', s, r/2)
        if pos.dim() == 2:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (b', 1, s, r/2)
        r = self.rotary_dim
        rot = x[..., :r].to(compute)  # (b, h, s, r)
        if self.interleaved:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]  # (b, h, s, r/2) each
            out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
            out = out.flatten(-2)  # (b, h, s, r)
        else:
            x1, x2 = rot[..., : r // 2], rot[..., r // 2 :]  # (b, h, s, r/2) each
            out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (b, h, s, r)
        out = out.to(x.dtype)
        if r == self.head_dim:
            return out
        return torch.cat((out, x[..., r:]), dim=-1)  # (b, h, s, d_h)

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, base={self.base:g}, rotary_dim={self.rotary_dim}, "
            f"interleaved={self.interleaved}"
        )
