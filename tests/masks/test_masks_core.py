"""Mask algebra and materialization for causal and padding masks."""

import pytest
import torch

from qkv import masks


def test_causal_dense_is_lower_triangle_and_bottom_right():
    assert torch.equal(masks.causal().to_dense(4, 4), torch.ones(4, 4, dtype=torch.bool).tril())
    # s_q < s_k: queries are the last two positions
    expect = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(masks.causal().to_dense(2, 4), expect)
    assert torch.equal(
        masks.causal(offset=0).to_dense(2, 4), torch.ones(2, 4, dtype=torch.bool).tril()
    )


def test_padding_from_lengths_and_from_bool():
    a = masks.padding([2, 3]).to_dense(1, 3)
    real = torch.tensor([[True, True, False], [True, True, True]])
    b = masks.padding(real).to_dense(1, 3)
    assert a.shape == b.shape == (2, 1, 1, 3)
    assert torch.equal(a[:, 0, 0], real) and torch.equal(a, b)


def test_and_or_not():
    c = masks.causal()
    p = masks.padding([1, 3])
    tri = torch.ones(3, 3, dtype=torch.bool).tril()
    pad = torch.arange(3)[None, :] < torch.tensor([1, 3])[:, None]  # (b, s_k)
    assert torch.equal((c & p).to_dense(3, 3), tri[None, None] & pad[:, None, None])
    assert torch.equal((c | p).to_dense(3, 3), tri[None, None] | pad[:, None, None])
    assert torch.equal((~c).to_dense(3, 3), ~tri)
    assert torch.equal(
        (c & torch.eye(3, dtype=torch.bool)).to_dense(3, 3), torch.eye(3, dtype=torch.bool)
    )
    bias = c.to_bias(3, 3)
    assert torch.equal(bias == 0, tri) and torch.isneginf(bias[~tri]).all()


def test_mask_errors():
    with pytest.raises(ValueError, match=r"padding\(lengths\) must be >= 0, got \[2, -1\]"):
        masks.padding([2, -1])
    with pytest.raises(ValueError, match=r"padding lengths \[2, 5\] exceed s_k=3"):
        masks.padding([2, 5]).to_dense(3, 3)
    with pytest.raises(ValueError, match=r"different batch sizes \[2, 3\]"):
        masks.padding([1, 2]) & masks.padding([1, 2, 3])
    with pytest.raises(TypeError, match="cannot combine a qkv Mask with int"):
        masks.causal() & 3
    with pytest.raises(ValueError, match="s_q must be a non-negative int, got -1"):
        masks.causal().to_dense(-1, 3)
    with pytest.raises(TypeError, match="integer lengths, got dtype torch.float32"):
        masks.padding(torch.tensor([1.0]))
