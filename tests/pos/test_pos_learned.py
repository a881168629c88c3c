"""Learned absolute position embeddings."""

from __future__ import annotations

import pytest
import torch

from qkv.pos import Learned


def test_adds_the_right_rows() -> None:
    torch.manual_seed(0)
    mod = Learned(max_len=10, d_model=4)
    table = torch.randn(10, 4)
    with torch.no_grad():
        mod.emb.weight.copy_(table)
    x = torch.randn(2, 6, 4)
    torch.testing.assert_close(mod(x), x + table[:6], rtol=0, atol=0)
    pos = torch.tensor([[9, 0, 3, 3, 1, 2], [4, 5, 6, 7, 8, 9]])
    torch.testing.assert_close(mod(x, positions=pos), x + table[pos], rtol=0, atol=0)
    torch.testing.assert_close(mod(x, positions=pos[1]), x + table[pos[1]], rtol=0, atol=0)
    torch.testing.assert_close(mod.encoding(pos), table[pos], rtol=0, atol=0)
    assert mod.weight is mod.emb.weight


def test_init_and_gradient() -> None:
    torch.manual_seed(0)
    mod = Learned(max_len=512, d_model=256)
    assert abs(mod.weight.std().item() - 0.02) < 1e-3
    assert abs(mod.weight.mean().item()) < 1e-3
    assert list(mod.state_dict()) == ["emb.weight"]
    mod(torch.zeros(1, 3, 256)).sum().backward()
    grad = mod.weight.grad
    assert grad is not None
    assert (grad[:3] == 1).all() and (grad[3:] == 0).all()


def test_error_past_max_len_mentions_both_numbers() -> None:
    mod = Learned(max_len=512, d_model=8)
    assert mod(torch.zeros(1, 512, 8)).shape == (1, 512, 8)
    assert mod(torch.zeros(1, 1, 8), positions=torch.tensor([511])).shape == (1, 1, 8)
    with pytest.raises(ValueError, match=r"sequence length 513 exceeds Learned max_len=512"):
        mod(torch.zeros(1, 513, 8))
    with pytest.raises(ValueError, match=r"sequence length 600 exceeds Learned max_len=512"):
        mod(torch.zeros(1, 600, 8))
    with pytest.raises(ValueError, match=r"position 512 .*513.*max_len=512"):
        mod(torch.zeros(1, 2, 8), positions=torch.tensor([0, 512]))
    with pytest.raises(ValueError, match=r"non-negative.*-3"):
        mod(torch.zeros(1, 2, 8), positions=torch.tensor([-3, 0]))


@pytest.mark.parametrize(
    ("max_len", "d_model", "match"),
    [(0, 8, r"max_len must be a positive int, got 0"), (8, -2, r"d_model .* got -2")],
)
def test_bad_sizes(max_len: int, d_model: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Learned(max_len, d_model)


def test_bad_input_shape() -> None:
    with pytest.raises(ValueError, match=r"d_model=8.*\(1, 2, 4\)"):
        Learned(16, 8)(torch.zeros(1, 2, 4))
