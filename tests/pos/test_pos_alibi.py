"""ALiBi slopes and biases (Press et al., 2022)."""

from __future__ import annotations

import math

import pytest
import torch

from qkv.pos import ALiBi, alibi_slopes


def reference_get_slopes(n: int) -> list[float]:
    """`get_slopes` from github.com/ofirpress/attention_with_linear_biases (models/transformer)."""

    def get_slopes_power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        ratio = start
        return [start * ratio**i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest_power_of_2 = 2 ** math.floor(math.log2(n))
    return (
        get_slopes_power_of_2(closest_power_of_2)
        + reference_get_slopes(2 * closest_power_of_2)[0::2][: n - closest_power_of_2]
    )


def test_slopes_8_heads_are_powers_of_one_half() -> None:
    expected = torch.tensor([2.0**-i for i in range(1, 9)])
    assert torch.equal(ALiBi(8).slopes, expected)
    assert alibi_slopes(8) == [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 7, 12, 16, 20, 24, 32, 40, 64, 96])
def test_slopes_match_reference(n: int) -> None:
    ref = reference_get_slopes(n)
    assert alibi_slopes(n) == pytest.approx(ref, rel=1e-15, abs=0)
    mod = ALiBi(n)
    assert mod.slopes.dtype == torch.float32 and mod.slopes.shape == (n,)
    assert torch.equal(mod.slopes, torch.tensor(ref, dtype=torch.float32))


def test_slopes_12_and_6_heads_spelled_out() -> None:
    # 12 heads: the 8-head slopes 2^-1..2^-8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 (16-head [0::2]).
    twelve = [2.0**-k for k in range(1, 9)] + [2.0 ** -(k + 0.5) for k in range(4)]
    assert alibi_slopes(12) == pytest.approx(twelve, rel=1e-12)
    # 6 heads: the 4-head slopes 2^-2, 2^-4, 2^-6, 2^-8, then 2^-1, 2^-3 (8-head [0::2]).
    six = [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]
    assert alibi_slopes(6) == pytest.approx(six, rel=1e-12)


def test_bias_3x3_by_hand() -> None:
    m0, m1 = 1 / 16, 1 / 256  # slopes for 2 heads
    causal = ALiBi(2).bias(3, 3)
    expected_causal = torch.tensor(
        [
            [[0, 0, 0], [-m0, 0, 0], [-2 * m0, -m0, 0]],
            [[0, 0, 0], [-m1, 0, 0], [-2 * m1, -m1, 0]],
        ]
    ).unsqueeze(0)
    assert causal.shape == (1, 2, 3, 3) and causal.dtype == torch.float32
    assert torch.equal(causal, expected_causal)
    assert not causal[causal == 0].signbit().any()  # +0.0, not -0.0

    symmetric = ALiBi(2, causal=False)(3, 3)
    expected_sym = torch.tensor(
        [
            [[0, -m0, -2 * m0], [-m0, 0, -m0], [-2 * m0, -m0, 0]],
            [[0, -m1, -2 * m1], [-m1, 0, -m1], [-2 * m1, -m1, 0]],
        ]
    ).unsqueeze(0)
    assert torch.equal(symmetric, expected_sym)


def test_decode_step_by_hand() -> None:
    m = 1 / 4  # first slope for 4 heads
    step = ALiBi(4).bias(1, 5)
    assert step.shape == (1, 4, 1, 5)
    assert torch.equal(step[0, 0, 0], torch.tensor([-4 * m, -3 * m, -2 * m, -m, 0.0]))
    torch.testing.assert_close(step, ALiBi(4).bias(5, 5)[:, :, -1:], rtol=0, atol=0)
    # Explicit offsets: query 0 at absolute position 2.
    shifted = ALiBi(4).bias(1, 5, offset=2)
    assert torch.equal(shifted[0, 0, 0], torch.tensor([-2 * m, -m, 0.0, 0.0, 0.0]))
    assert torch.equal(
        ALiBi(4, causal=False).bias(1, 5, offset=2)[0, 0, 0],
        torch.tensor([-2 * m, -m, 0.0, -m, -2 * m]),
    )


def test_causal_softmax_equals_reference_arange_bias() -> None:
    """The reference adds slope * j to every row; with the causal mask softmax is the same."""
    torch.manual_seed(0)
    h, s = 6, 9
    scores = torch.randn(1, h, s, s, dtype=torch.float64)
    allowed = torch.ones(s, s, dtype=torch.bool).tril()
    slopes = torch.tensor(reference_get_slopes(h), dtype=torch.float64)
    ref_bias = slopes[:, None, None] * torch.arange(s, dtype=torch.float64)  # (h, 1, s)
    ref = (scores + ref_bias).masked_fill(~allowed, -math.inf).softmax(-1)
    ours = (scores + ALiBi(h).bias(s, s, dtype=torch.float64)).masked_fill(~allowed, -math.inf)
    torch.testing.assert_close(ours.softmax(-1), ref, atol=1e-6, rtol=1e-6)


def test_dtype_device_and_state_dict() -> None:
    mod = ALiBi(4)
    assert mod.bias(2, 3, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert mod.bias(2, 3, device="cpu").device.type == "cpu"
    assert "slopes" not in mod.state_dict()


@pytest.mark.parametrize("n_heads", [0, -4, 2.5])
def test_bad_n_heads(n_heads: int) -> None:
    with pytest.raises(ValueError, match=rf"n_heads must be a positive int, got {n_heads}"):
        ALiBi(n_heads)


def test_bad_bias_args() -> None:
    mod = ALiBi(4)
    with pytest.raises(ValueError, match=r"s_q must be a positive int, got 0"):
        mod.bias(0, 3)
    with pytest.raises(ValueError, match=r"s_k must be a positive int, got -1"):
        mod(2, -1)
    with pytest.raises(ValueError, match=r"offset must be an int or None, got 1.5"):
        mod.bias(2, 3, offset=1.5)  # type: ignore[arg-type]
