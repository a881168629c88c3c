"""Sinusoidal position encoding against the formula of Vaswani et al. (2017), sec. 3.5."""

from __future__ import annotations

import math

import pytest
import torch

from qkv.pos import Sinusoidal


def reference_table(s: int, d: int, base: float = 10000.0) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / base^(2i/d)), PE[pos, 2i+1] = cos(...), with plain Python loops."""
    rows = []
    for pos in range(s):
        row = []
        for i in range(d // 2):
            angle = pos / base ** (2 * i / d)
            row += [math.sin(angle), math.cos(angle)]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("max_len", [None, 64])
@pytest.mark.parametrize("base", [10000.0, 100.0])
def test_matches_formula(max_len: int | None, base: float) -> None:
    d, s = 16, 50
    mod = Sinusoidal(d, max_len=max_len, base=base)
    x = torch.zeros(2, s, d)
    out = mod(x)
    ref = reference_table(s, d, base).float()
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0], ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], ref, atol=1e-6, rtol=0)


def test_adds_to_input_and_keeps_dtype() -> None:
    d, s = 8, 5
    x = torch.randn(3, s, d, dtype=torch.float64)
    out = Sinusoidal(d)(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out - x, reference_table(s, d).expand(3, s, d), atol=1e-12, rtol=0)
    assert Sinusoidal(d)(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("max_len", [None, 200])
def test_positions_argument(max_len: int | None) -> None:
    d = 16
    ref = reference_table(120, d).float()
    mod = Sinusoidal(d, max_len=max_len)
    pos_1d = torch.tensor([7, 3, 119, 0])
    out = mod(torch.zeros(2, 4, d), positions=pos_1d)
    torch.testing.assert_close(out, ref[pos_1d].expand(2, 4, d), atol=1e-6, rtol=0)
    pos_2d = torch.tensor([[0, 1, 2, 3], [100, 101, 102, 103]])
    out = mod(torch.zeros(2, 4, d), positions=pos_2d)
    torch.testing.assert_close(out, ref[pos_2d], atol=1e-6, rtol=0)
    torch.testing.assert_close(mod.encoding(pos_2d).float(), ref[pos_2d], atol=1e-6, rtol=0)


def test_buffer_is_non_persistent_and_matches() -> None:
    mod = Sinusoidal(16, max_len=50)
    assert "pe" not in mod.state_dict()
    torch.testing.assert_close(mod.pe, reference_table(50, 16), atol=1e-12, rtol=0)
    assert Sinusoidal(16).pe is None


def test_max_len_errors_name_both_lengths() -> None:
    mod = Sinusoidal(16, max_len=32)
    assert mod(torch.zeros(1, 32, 16)).shape == (1, 32, 16)  # exactly max_len is fine
    with pytest.raises(ValueError, match=r"sequence length 33 exceeds Sinusoidal max_len=32"):
        mod(torch.zeros(1, 33, 16))
    with pytest.raises(ValueError, match=r"sequence length 40 exceeds Sinusoidal max_len=32"):
        mod(torch.zeros(1, 40, 16))
    with pytest.raises(ValueError, match=r"length 33.*max_len=32"):
        mod(torch.zeros(1, 2, 16), positions=torch.tensor([0, 32]))
    with pytest.raises(ValueError, match=r"length 33.*max_len=32"):
        mod.encoding(torch.tensor([32]))
    with pytest.raises(ValueError, match="non-negative"):
        mod(torch.zeros(1, 2, 16), positions=torch.tensor([-1, 0]))
    # Without max_len any length works.
    assert Sinusoidal(16)(torch.zeros(1, 40, 16)).shape == (1, 40, 16)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_model": 15}, r"d_model must be even.*15"),
        ({"d_model": 0}, r"d_model must be a positive int, got 0"),
        ({"d_model": 16, "max_len": 0}, r"max_len must be a positive int or None, got 0"),
        ({"d_model": 16, "base": -1.0}, r"base must be positive, got base=-1.0"),
    ],
)
def test_bad_constructor_args(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Sinusoidal(**kwargs)


def test_bad_forward_inputs() -> None:
    mod = Sinusoidal(16)
    with pytest.raises(ValueError, match=r"d_model=16.*\(2, 3, 8\)"):
        mod(torch.zeros(2, 3, 8))
    with pytest.raises(ValueError, match=r"positions must have shape.*\(5,\)"):
        mod(torch.zeros(2, 3, 16), positions=torch.arange(5))
    with pytest.raises(TypeError, match="integer tensor"):
        mod(torch.zeros(2, 3, 16), positions=torch.arange(3.0))
