"""Tests for qkv.layers.norms against torch and Hugging Face references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.t5.modeling_t5 import T5LayerNorm

from qkv.layers import LayerNorm, RMSNorm, make_norm

D = 24


def _randomize(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


@pytest.fixture
def x() -> torch.Tensor:
    # A non-zero mean and a large scale so that mean subtraction and eps both matter.
    return 3.0 * torch.randn(2, 5, D, generator=torch.Generator().manual_seed(1)) + 0.7


# --- LayerNorm -------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_layernorm_matches_functional_and_nn(x: torch.Tensor, eps: float) -> None:
    ln = LayerNorm(D, eps=eps)
    _randomize(ln)
    ref = nn.LayerNorm(D, eps=eps)
    ref.load_state_dict(ln.state_dict())
    expected = F.layer_norm(x, (D,), ln.weight, ln.bias, eps)
    torch.testing.assert_close(ln(x), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(ln(x), ref(x), rtol=0, atol=1e-6)


def test_layernorm_matches_hand_formula(x: torch.Tensor) -> None:
    ln = LayerNorm(D, eps=1e-3)
    _randomize(ln)
    xd = x.double()
    mu = xd.mean(-1, keepdim=True)
    var = xd.var(-1, unbiased=False, keepdim=True)
    expected = (xd - mu) / torch.sqrt(var + 1e-3) * ln.weight.double() + ln.bias.double()
    torch.testing.assert_close(ln(x), expected.float(), rtol=1e-5, atol=1e-5)


def test_layernorm_no_bias(x: torch.Tensor) -> None:
    ln = LayerNorm(D, bias=False)
    _randomize(ln)
    assert ln.bias is None
    assert set(ln.state_dict()) == {"weight"}
    ref = nn.LayerNorm(D, bias=False)
    ref.load_state_dict(ln.state_dict())
    torch.testing.assert_close(ln(x), ref(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(ln(x), F.layer_norm(x, (D,), ln.weight, None, 1e-5))


def test_layernorm_state_dict_names_match_nn() -> None:
    assert set(LayerNorm(D).state_dict()) == set(nn.LayerNorm(D).state_dict()) == {"weight", "bias"}
    assert isinstance(LayerNorm(D), nn.LayerNorm)


@pytest.mark.parametrize("cls", [LayerNorm, RMSNorm])
def test_norm_bad_args(cls: type[nn.Module]) -> None:
    with pytest.raises(ValueError, match=r"d must be a positive int, got 0"):
        cls(0)
    with pytest.raises(ValueError, match=r"eps must be > 0, got -1"):
        cls(D, eps=-1.0)


# --- RMSNorm ---------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-6, 1e-1])
def test_rmsnorm_matches_torch_rmsnorm(x: torch.Tensor, eps: float) -> None:
    rms = RMSNorm(D, eps=eps)
    _randomize(rms)
    ref = nn.RMSNorm(D, eps=eps)
    ref.load_state_dict(rms.state_dict())
    torch.testing.assert_close(rms(x), ref(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("hf_cls", [T5LayerNorm, LlamaRMSNorm])
def test_rmsnorm_matches_hf(x: torch.Tensor, hf_cls: type[nn.Module]) -> None:
    rms = RMSNorm(D, eps=1e-6)
    _randomize(rms)
    ref = hf_cls(D, eps=1e-6)
    ref.load_state_dict(rms.state_dict())  # same parameter name: "weight"
    torch.testing.assert_close(rms(x), ref(x), rtol=1e-6, atol=1e-6)


def test_rmsnorm_matches_hand_formula(x: torch.Tensor) -> None:
    rms = RMSNorm(D, eps=0.5)
    _randomize(rms)
    xd = x.double()
    expected = xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + 0.5) * rms.weight.double()
    torch.testing.assert_close(rms(x), expected.float(), rtol=1e-5, atol=1e-5)


def test_rmsnorm_bf16(x: torch.Tensor) -> None:
    rms = RMSNorm(D)
    _randomize(rms)
    ref32 = rms(x)
    xb = x.bfloat16()
    yb = rms(xb)
    assert yb.dtype == torch.bfloat16
    # bf16 has an 8-bit mantissa: relative error ~2**-8 from rounding the input and output.
    torch.testing.assert_close(yb.float(), ref32, rtol=2e-2, atol=2e-2)
    # Also with the weight itself in bf16 (a model cast with .to(bfloat16)).
    rms_b = RMSNorm(D).bfloat16()
    rms_b.load_state_dict(rms.state_dict())
    yb2 = rms_b(xb)
    assert yb2.dtype == torch.bfloat16
    torch.testing.assert_close(yb2.float(), ref32, rtol=3e-2, atol=3e-2)
    hf = LlamaRMSNorm(D).bfloat16()
    hf.load_state_dict(rms.state_dict())
    torch.testing.assert_close(yb2.float(), hf(xb).float(), rtol=2e-2, atol=2e-2)


def test_rmsnorm_accumulates_in_fp32() -> None:
    # In fp16 the squares of 300 overflow (90000 > 65504); a float32 accumulation does not.
    rms = RMSNorm(D)
    x = torch.full((1, D), 300.0)
    y = rms(x.half())
    assert y.dtype == torch.float16
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), torch.ones(1, D), rtol=1e-3, atol=1e-3)


def test_rmsnorm_gradcheck() -> None:
    rms = RMSNorm(6, eps=1e-2).double()
    _randomize(rms)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rms, (x,))


def test_rmsnorm_wrong_width() -> None:
    with pytest.raises(ValueError, match=r"x.shape\[-1\] \(5\) must equal d \(24\)"):
        RMSNorm(D)(torch.randn(2, 5))


# --- make_norm -------------------------------------------------------------------------------


def test_make_norm_kinds_and_eps() -> None:
    ln = make_norm("layer", D)
    assert isinstance(ln, LayerNorm) and ln.eps == 1e-5
    rms = make_norm("rms", D)
    assert isinstance(rms, RMSNorm) and rms.eps == 1e-6
    assert make_norm("layer", D, eps=1e-3).eps == 1e-3
    assert make_norm("rms", D, eps=1e-3).eps == 1e-3
    assert make_norm("rms", 7).weight.shape == (7,)


def test_make_norm_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"kind must be one of \('layer', 'rms'\), got 'batch'"):
        make_norm("batch", D)  # type: ignore[arg-type]
