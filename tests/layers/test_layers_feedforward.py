"""Tests for qkv.layers.feedforward against hand-written formulas, torch and HF."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from qkv.layers import FeedForward

D, D_FF = 16, 40


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 7, D, generator=torch.Generator().manual_seed(seed))


def _lin(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return x @ layer.weight.T + (0.0 if layer.bias is None else layer.bias)


# Written from the definitions, not via torch.nn.functional's activations.
_HAND = {
    "relu": lambda z: torch.where(z > 0, z, torch.zeros_like(z)),
    "gelu": lambda z: 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0))),
    "gelu_tanh": lambda z: (
        0.5 * z * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))
    ),
    "silu": lambda z: z * torch.sigmoid(z),
}


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh", "silu"])
@pytest.mark.parametrize("bias", [True, False])
def test_plain_activations_match_formula(activation: str, bias: bool) -> None:
    torch.manual_seed(0)
    ff = FeedForward(D, D_FF, activation=activation, bias=bias)  # type: ignore[arg-type]
    assert not ff.gated and ff.fc_gate is None
    x = _x()
    expected = _lin(_HAND[activation](_lin(x, ff.fc1)), ff.fc2)
    torch.testing.assert_close(ff(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("activation", "gate"), [("swiglu", "silu"), ("geglu", "gelu"), ("geglu_tanh", "gelu_tanh")]
)
@pytest.mark.parametrize("bias", [True, False])
def test_gated_activations_match_formula(activation: str, gate: str, bias: bool) -> None:
    torch.manual_seed(0)
    ff = FeedForward(D, D_FF, activation=activation, bias=bias)  # type: ignore[arg-type]
    assert ff.gated and ff.fc_gate is not None
    assert ff.fc_gate.weight.shape == ff.fc1.weight.shape == (D_FF, D)
    x = _x()
    expected = _lin(_HAND[gate](_lin(x, ff.fc_gate)) * _lin(x, ff.fc1), ff.fc2)
    torch.testing.assert_close(ff(x), expected, rtol=1e-5, atol=1e-5)


def test_swiglu_w1_w2_w3_formula() -> None:
    # Shazeer 2020, eq. FFN_SwiGLU(x, W, V, W2) = (Swish(xW) * xV) W2, no biases; Llama names
    # them w1 (gate), w3 (up), w2 (down).
    torch.manual_seed(1)
    ff = FeedForward(D, D_FF, activation="swiglu", bias=False)
    w1, w3, w2 = ff.fc_gate.weight, ff.fc1.weight, ff.fc2.weight
    x = _x(1)
    expected = F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)
    torch.testing.assert_close(ff(x), expected, rtol=1e-6, atol=1e-6)


def test_swiglu_matches_hf_llama_mlp() -> None:
    torch.manual_seed(2)
    cfg = LlamaConfig(
        hidden_size=D,
        intermediate_size=D_FF,
        num_attention_heads=2,
        num_key_value_heads=2,
        hidden_act="silu",
        mlp_bias=False,
    )
    ref = LlamaMLP(cfg)
    ff = FeedForward(D, D_FF, activation="swiglu", bias=False)
    with torch.no_grad():
        ff.fc_gate.weight.copy_(ref.gate_proj.weight)
        ff.fc1.weight.copy_(ref.up_proj.weight)
        ff.fc2.weight.copy_(ref.down_proj.weight)
    x = _x(2)
    torch.testing.assert_close(ff(x), ref(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_matches_transformer_encoder_layer_ff_block(activation: str) -> None:
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(
        D, nhead=2, dim_feedforward=D_FF, dropout=0.0, activation=activation, batch_first=True
    ).eval()
    ff = FeedForward(D, D_FF, activation=activation).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        ff.fc1.load_state_dict(layer.linear1.state_dict())
        ff.fc2.load_state_dict(layer.linear2.state_dict())
    x = _x(3)
    expected = layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))
    torch.testing.assert_close(ff(x), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ff(x), layer._ff_block(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "swiglu"])
def test_dropout_only_in_train_mode(activation: str) -> None:
    torch.manual_seed(4)
    ff = FeedForward(D, D_FF, activation=activation, dropout=0.5)  # type: ignore[arg-type]
    ref = FeedForward(D, D_FF, activation=activation, dropout=0.0)  # type: ignore[arg-type]
    ref.load_state_dict(ff.state_dict())
    x = _x(4)
    ff.eval()
    torch.testing.assert_close(ff(x), ref(x), rtol=0, atol=0)
    ff.train()
    y1, y2 = ff(x), ff(x)
    assert not torch.allclose(y1, ref(x))
    assert not torch.allclose(y1, y2)


def test_dropout_acts_on_hidden_units() -> None:
    torch.manual_seed(5)
    ff = FeedForward(D, D_FF, activation="swiglu", dropout=0.5).train()
    seen: dict[str, torch.Tensor] = {}
    ff.dropout.register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o))
    x = _x(5)
    y = ff(x)
    h = F.silu(ff.fc_gate(x)) * ff.fc1(x)  # the gated hidden units, before dropout
    torch.testing.assert_close(seen["inp"], h)
    kept = seen["out"] != 0
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(seen["out"][kept], 2.0 * h[kept])  # inverted dropout, 1/(1-p)
    torch.testing.assert_close(y, ff.fc2(seen["out"]))


def test_bad_args() -> None:
    with pytest.raises(ValueError, match=r"d_model must be a positive int, got 0"):
        FeedForward(0, D_FF)
    with pytest.raises(ValueError, match=r"d_ff must be a positive int, got -3"):
        FeedForward(D, -3)
    with pytest.raises(ValueError, match=r"activation must be one of .*'swiglu'.*got 'tanh'"):
        FeedForward(D, D_FF, activation="tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        FeedForward(D, D_FF, dropout=1.0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got -0.1"):
        FeedForward(D, D_FF, dropout=-0.1)


def test_parameter_names_and_bias_flag() -> None:
    assert set(dict(FeedForward(D, D_FF).named_parameters())) == {
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    }
    assert set(dict(FeedForward(D, D_FF, "geglu", bias=False).named_parameters())) == {
        "fc1.weight",
        "fc_gate.weight",
        "fc2.weight",
    }


def test_backward_reaches_every_parameter() -> None:
    ff = FeedForward(D, D_FF, activation="geglu")
    ff(_x()).square().sum().backward()
    for name, p in ff.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
