"""Normalization layers: LayerNorm, RMSNorm and a small factory.

Both norms act on the last dimension, ``d``, of an input of shape ``(..., d)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

NormKind = Literal["layer", "rms"]
NORM_KINDS: tuple[str, ...] = ("layer", "rms")


def _check_d_eps(d: int, eps: float) -> None:
    if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
        raise ValueError(f"d must be a positive int, got {d!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")


class LayerNorm(nn.LayerNorm):
    """Layer normalization over the last dimension (Ba et al. 2016, "Layer Normalization").

    ``y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias``, with the biased variance,
    exactly :class:`torch.nn.LayerNorm`. It is a subclass, so the parameters are named
    ``weight`` and ``bias`` and Hugging Face checkpoints map onto it one to one.

    Args:
        d: width of the normalized (last) dimension.
        eps: added to the variance for numerical stability.
        bias: whether to learn an additive ``bias``; with ``False`` the ``bias`` attribute
            is ``None`` (as in GPT-NeoX-style "no bias" models and nanoGPT's option).

    Raises:
        ValueError: if ``d`` is not a positive int or ``eps`` is not positive.
    """

    def __init__(self, d: int, eps: float = 1e-5, bias: bool = True) -> None:
        _check_d_eps(d, eps)
        super().__init__(d, eps=eps, elementwise_affine=True, bias=bias)


class RMSNorm(nn.Module):
    """Root-mean-square normalization (Zhang & Sennrich 2019, "Root Mean Square Layer
    Normalization"), as used by T5 and Llama.

    ``y = x / sqrt(mean(x**2) + eps) * weight``, mean over the last dimension. There is no
    mean subtraction and no bias. The whole computation runs in float32 (float64 for float64
    inputs) and the result is cast back to the input dtype, so bf16/fp16 inputs are accumulated accurately and come
    out in their own dtype. (Hugging Face's ``LlamaRMSNorm`` casts to the input dtype *before*
    multiplying by ``weight``; in float32 the two are identical, in bf16 they differ by at
    most one rounding.)

    Args:
        d: width of the normalized (last) dimension.
        eps: added to the mean square for numerical stability.

    Raises:
        ValueError: if ``d`` is not a positive int or ``eps`` is not positive.
    """

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        _check_d_eps(d, eps)
        super().__init__()
        self.d = d
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``x``.

        Args:
            x: input of shape ``(..., d)``.

        Returns:
            Tensor of the same shape and dtype as ``x``.

        Raises:
            ValueError: if the last dimension of ``x`` is not ``d``.
        """
        if x.shape[-1] != self.d:
            raise ValueError(f"x.shape[-1] ({x.shape[-1]}) must equal d ({self.d})")
        # At least fp32 so low-precision inputs do not lose the mean of squares; fp64 stays fp64.
        acc = torch.promote_types(x.dtype, torch.float32)
        xa = x.to(acc)  # (..., d)
        ms = xa.pow(2).mean(dim=-1, keepdim=True)  # (..., 1)
        y = xa * torch.rsqrt(ms + self.eps) * self.weight.to(acc)  # (..., d)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.d}, eps={self.eps}"


def make_norm(kind: NormKind, d: int, eps: float | None = None) -> nn.Module:
    """Build a normalization layer by name.

    Args:
        kind: ``"layer"`` for :class:`LayerNorm` or ``"rms"`` for :class:`RMSNorm`.
        d: width of the normalized (last) dimension.
        eps: numerical-stability constant; ``None`` keeps the class default
            (``1e-5`` for LayerNorm, ``1e-6`` for RMSNorm).

    Returns:
        The norm module.

    Raises:
        ValueError: if ``kind`` is not one of ``"layer"``, ``"rms"`` (or ``d``/``eps`` are bad).
    """
    if kind == "layer":
        return LayerNorm(d) if eps is None else LayerNorm(d, eps=eps)
    if kind == "rms":
        return RMSNorm(d) if eps is None else RMSNorm(d, eps=eps)
    raise ValueError(f"kind must be one of {NORM_KINDS}, got {kind!r}")
