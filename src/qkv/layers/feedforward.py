"""Position-wise feed-forward network, plain or gated (GLU variants)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.layers.dropout import dropout

Activation = Literal[
    "relu", "gelu", "gelu_tanh", "quick_gelu", "silu", "swiglu", "geglu", "geglu_tanh"
]


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


def _quick_gelu(x: Tensor) -> Tensor:
    """``x * sigmoid(1.702 x)``: the GELU approximation OpenAI's CLIP was trained with
    (Hendrycks & Gimpel 2016, sec. 2)."""
    return x * torch.sigmoid(1.702 * x)


# name -> (elementwise function, gated?)
_ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], bool]] = {
    "relu": (F.relu, False),
    "gelu": (F.gelu, False),
    "gelu_tanh": (_gelu_tanh, False),
    "quick_gelu": (_quick_gelu, False),
    "silu": (F.silu, False),
    "swiglu": (F.silu, True),
    "geglu": (F.gelu, True),
    "geglu_tanh": (_gelu_tanh, True),
}


class FeedForward(nn.Module):
    """The Transformer's position-wise feed-forward network (Vaswani et al. 2017, eq. 2).

    Plain (``relu``, ``gelu``, ``gelu_tanh``, ``silu``)::

        y = fc2(dropout(act(fc1(x))))

    Gated (``swiglu``: SiLU gate, ``geglu``: exact-GELU gate, ``geglu_tanh``: tanh-GELU
    gate as in T5 v1.1 / Flan-T5; Shazeer 2020, "GLU Variants Improve Transformer")::

        y = fc2(dropout(act(fc_gate(x)) * fc1(x)))

    In Llama's naming ``fc_gate`` is ``gate_proj``, ``fc1`` is ``up_proj`` and ``fc2`` is
    ``down_proj``. ``gelu`` is the exact (erf) GELU; ``gelu_tanh`` is the tanh approximation
    used by GPT-2 ("gelu_new"); ``quick_gelu`` is ``x * sigmoid(1.702 x)`` (OpenAI's CLIP).

    Args:
        d_model: input and output width ``d``.
        d_ff: hidden width.
        activation: one of ``"relu"``, ``"gelu"``, ``"gelu_tanh"``, ``"quick_gelu"``,
            ``"silu"``, ``"swiglu"``,
            ``"geglu"``, ``"geglu_tanh"``.
        dropout: dropout probability on the hidden activations, in ``[0, 1)``.
        bias: whether the linear layers have biases.

    Attributes:
        gated: ``True`` for ``swiglu``/``geglu``/``geglu_tanh`` (then ``fc_gate`` exists).

    Raises:
        ValueError: if ``d_model`` or ``d_ff`` is not a positive int, ``activation`` is unknown
            or ``dropout`` is outside ``[0, 1)``.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: Activation = "relu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("d_ff", d_ff)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(_ACTIVATIONS)}, got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.activation = activation
        self._act, self.gated = _ACTIVATIONS[activation]
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.fc_gate = nn.Linear(d_model, d_ff, bias=bias) if self.gated else None
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the network position-wise.

        Args:
            x: input of shape ``(..., d_model)``, typically ``(b, s, d)``.

        Returns:
            Tensor of shape ``(..., d_model)``.
        """
        if self.fc_gate is not None:
            h = self._act(self.fc_gate(x)) * self.fc1(x)  # (..., d_ff)
        else:
            h = self._act(self.fc1(x))  # (..., d_ff)
        return self.fc2(dropout(self.dropout, h))  # (..., d_model)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}, gated={self.gated}"
