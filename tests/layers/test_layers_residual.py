"""Tests for qkv.layers.residual against formulas and torch.nn.TransformerEncoderLayer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qkv.layers import FeedForward, LayerNorm, Residual, RMSNorm

D, D_FF, H = 16, 32, 4


def _randomize(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _x(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(3, 6, D, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _layer_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    return F.layer_norm(x, (D,), norm.weight, norm.bias, norm.eps)


class _ScaleShift(nn.Module):
    """A sublayer taking extra positional and keyword arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, D)

    def forward(self, x: torch.Tensor, scale: float, *, shift: float = 0.0) -> torch.Tensor:
        return self.lin(x) * scale + shift


class _WithWeights(nn.Module):
    """A sublayer returning ``(out, weights, extra)`` like an attention module."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
        return self.lin(x), x.softmax(-1), "extra"


class _SelfAttn(nn.Module):
    """Adapts torch.nn.MultiheadAttention to the one-input sublayer interface."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.mha = mha

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.mha(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]


# --- formulas --------------------------------------------------------------------------------


def test_pre_norm_formula() -> None:
    torch.manual_seed(0)
    sub = nn.Linear(D, D)
    res = Residual(sub, D, placement="pre")
    _randomize(res)
    x = _x()
    expected = x + sub(_layer_norm(x, res.norm))
    torch.testing.assert_close(res(x), expected, rtol=1e-6, atol=1e-6)


def test_post_norm_formula() -> None:
    torch.manual_seed(0)
    sub = nn.Linear(D, D)
    res = Residual(sub, D, placement="post", eps=1e-3)
    _randomize(res)
    assert res.norm.eps == 1e-3
    x = _x()
    expected = _layer_norm(x + sub(x), res.norm)
    torch.testing.assert_close(res(x), expected, rtol=1e-6, atol=1e-6)


def test_rms_norm_and_injected_norm() -> None:
    sub = nn.Linear(D, D)
    res = Residual(sub, D, norm="rms", placement="pre")
    assert isinstance(res.norm, RMSNorm)
    _randomize(res)
    x = _x()
    n = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * res.norm.weight
    torch.testing.assert_close(res(x), x + sub(n), rtol=1e-5, atol=1e-5)

    custom = LayerNorm(D, bias=False)
    res2 = Residual(sub, D, norm=custom, placement="post")
    assert res2.norm is custom
    torch.testing.assert_close(res2(x), custom(x + sub(x)))


def test_args_and_kwargs_reach_the_sublayer() -> None:
    sub = _ScaleShift()
    for placement in ("pre", "post"):
        res = Residual(sub, D, placement=placement)  # type: ignore[arg-type]
        _randomize(res)
        x = _x()
        h = _layer_norm(x, res.norm) if placement == "pre" else x
        y = x + sub.lin(h) * 2.0 + 0.25
        expected = y if placement == "pre" else _layer_norm(y, res.norm)
        torch.testing.assert_close(res(x, 2.0, shift=0.25), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_tuple_returning_sublayer(placement: str) -> None:
    sub = _WithWeights()
    res = Residual(sub, D, placement=placement)  # type: ignore[arg-type]
    _randomize(res)
    x = _x()
    out = res(x)
    assert isinstance(out, tuple) and len(out) == 3
    y, weights, extra = out
    h = _layer_norm(x, res.norm) if placement == "pre" else x
    torch.testing.assert_close(weights, h.softmax(-1))
    assert extra == "extra"
    y_ref = x + sub.lin(h)
    expected = y_ref if placement == "pre" else _layer_norm(y_ref, res.norm)
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)


def test_dropout_only_in_train_mode() -> None:
    torch.manual_seed(1)
    sub = nn.Linear(D, D)
    res = Residual(sub, D, dropout=0.5)
    x = _x()
    res.eval()
    torch.testing.assert_close(res(x), x + sub(res.norm(x)), rtol=0, atol=0)
    res.train()
    delta = res(x) - x  # pre-norm: the residual stream itself is never dropped
    full = sub(res.norm(x))
    dropped = delta == 0
    assert 0 < dropped.float().mean() < 1
    torch.testing.assert_close(delta[~dropped], 2.0 * full[~dropped], rtol=1e-5, atol=1e-5)


def test_attributes_and_names() -> None:
    res = Residual(nn.Linear(D, D), D, placement="post")
    assert res.placement == "post"
    names = set(dict(res.named_children()))
    assert {"sublayer", "norm"} <= names


def test_bad_args() -> None:
    sub = nn.Linear(D, D)
    with pytest.raises(ValueError, match=r"placement must be one of \('pre', 'post'\), got 'mid'"):
        Residual(sub, D, placement="mid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"norm must be one of \('layer', 'rms'\).*got 'batch'"):
        Residual(sub, D, norm="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        Residual(sub, D, dropout=1.5)
    with pytest.raises(ValueError, match=r"eps \(0.001\) applies only when norm is a string"):
        Residual(sub, D, norm=RMSNorm(D), eps=1e-3)


# --- parity with torch.nn.TransformerEncoderLayer --------------------------------------------


def _encoder_pair(
    norm_first: bool, activation: str
) -> tuple[nn.TransformerEncoderLayer, Residual, Residual]:
    torch.manual_seed(7)
    layer = nn.TransformerEncoderLayer(
        D,
        H,
        dim_feedforward=D_FF,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
        dtype=torch.float64,
    ).eval()
    _randomize(layer)  # random norm weights/biases too, so copying them matters
    placement = "pre" if norm_first else "post"
    attn = Residual(_SelfAttn(layer.self_attn), D, placement=placement)
    ff = FeedForward(D, D_FF, activation=activation)  # type: ignore[arg-type]
    mlp = Residual(ff, D, placement=placement)
    attn.double()
    mlp.double()
    with torch.no_grad():
        attn.norm.load_state_dict(layer.norm1.state_dict())
        mlp.norm.load_state_dict(layer.norm2.state_dict())
        ff.fc1.load_state_dict(layer.linear1.state_dict())
        ff.fc2.load_state_dict(layer.linear2.state_dict())
    return layer, attn.eval(), mlp.eval()


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_matches_transformer_encoder_layer(norm_first: bool, activation: str) -> None:
    layer, attn, mlp = _encoder_pair(norm_first, activation)
    x = _x(3, torch.float64).requires_grad_()
    y = mlp(attn(x))
    y_ref = layer(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    (g,) = torch.autograd.grad(y.sin().sum(), x)
    (g_ref,) = torch.autograd.grad(y_ref.sin().sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("norm_first", [False, True])
def test_matches_transformer_encoder_layer_with_padding(norm_first: bool) -> None:
    layer, attn, mlp = _encoder_pair(norm_first, "relu")
    x = _x(4, torch.float64)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, 4:] = True  # True = padding in torch.nn's key_padding_mask convention
    pad[2, 2:] = True
    y = mlp(attn(x, key_padding_mask=pad))
    y_ref = layer(x, src_key_padding_mask=pad)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    # The mask must matter, or this test proves nothing about kwargs passing.
    assert not torch.allclose(y, mlp(attn(x)))
