"""Residual connection with a norm, placed before (pre-norm) or after (post-norm)."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from qkv.layers.dropout import dropout
from qkv.layers.norms import NORM_KINDS, NormKind, make_norm

Placement = Literal["pre", "post"]


class Residual(nn.Module):
    """Wrap a sublayer (attention, feed-forward, ...) in a residual connection and a norm.

    Pre-norm (GPT-2; Xiong et al. 2020, "On Layer Normalization in the Transformer
    Architecture")::

        y = x + dropout(sublayer(norm(x), *args, **kwargs))

    Post-norm (Vaswani et al. 2017, "Attention Is All You Need", Sec. 5.4)::

        y = norm(x + dropout(sublayer(x, *args, **kwargs)))

    A pre-norm stack leaves the residual stream un-normalized, so the model must apply a
    final norm after the last block (GPT-2's ``ln_f``); post-norm stacks need none.

    If the sublayer returns a tuple (for example attention returning ``(out, weights)``),
    the residual is applied to the first element and the rest is passed through unchanged:
    the result is ``(y, *rest)``.

    Args:
        sublayer: module mapping ``(..., d_model)`` to ``(..., d_model)`` (or a tuple whose
            first element is that).
        d_model: width ``d`` of the residual stream.
        norm: ``"layer"``, ``"rms"`` or a ready-made norm module.
        placement: ``"pre"`` or ``"post"``.
        dropout: dropout probability on the sublayer output, in ``[0, 1)``.
        eps: norm epsilon when ``norm`` is a string; ``None`` keeps the norm's default.

    Raises:
        ValueError: if ``placement`` or ``norm`` is unknown, ``dropout`` is outside
            ``[0, 1)``, or ``eps`` is given together with a norm module.
    """

    def __init__(
        self,
        sublayer: nn.Module,
        d_model: int,
        *,
        norm: NormKind | nn.Module = "layer",
        placement: Placement = "pre",
        dropout: float = 0.0,
        eps: float | None = None,
    ) -> None:
        super().__init__()
        if placement not in ("pre", "post"):
            raise ValueError(f"placement must be one of ('pre', 'post'), got {placement!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if isinstance(norm, nn.Module):
            if eps is not None:
                raise ValueError(
                    f"eps ({eps!r}) applies only when norm is a string; "
                    f"got a module ({type(norm).__name__})"
                )
            self.norm = norm
        elif norm in NORM_KINDS:
            self.norm = make_norm(norm, d_model, eps)
        else:
            raise ValueError(f"norm must be one of {NORM_KINDS} or an nn.Module, got {norm!r}")
        self.sublayer = sublayer
        self.placement = placement
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor | tuple[Any, ...]:
        """Apply ``sublayer`` with the residual connection and norm.

        Args:
            x: residual stream of shape ``(..., d_model)``, typically ``(b, s, d)``.
            *args: passed to ``sublayer`` after its first input.
            **kwargs: passed to ``sublayer``.

        Returns:
            ``y`` of shape ``(..., d_model)``, or ``(y, *rest)`` if the sublayer returned a
            tuple ``(out, *rest)``.
        """
        h = self.norm(x) if self.placement == "pre" else x
        out = self.sublayer(h, *args, **kwargs)
        rest: tuple[Any, ...] | None = None
        if isinstance(out, tuple):
            out, rest = out[0], tuple(out[1:])
        y = x + dropout(self.dropout, out)  # (..., d)
        if self.placement == "post":
            y = self.norm(y)
        return y if rest is None else (y, *rest)

    def extra_repr(self) -> str:
        return f"placement={self.placement!r}"
