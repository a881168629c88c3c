"""The FlexAttention backend against the math reference.

On CPU (torch 2.13) FlexAttention runs the forward only: float64 through its eager
implementation, float32 compiled by inductor. Forward + backward is checked on CUDA.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from qkv import masks
from qkv.attn import attention, make_problem, pick_backend

pytest.importorskip("torch.nn.attention.flex_attention")
flex = importlib.import_module("qkv.attn.flex")


def _inputs(b, h, h_kv, s_q, s_k, d=16, dtype=torch.float64, device="cpu", grad=False):
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(b, hh, s, d, generator=g, dtype=dtype).to(device).requires_grad_(grad)
        for hh, s in ((h, s_q), (h_kv, s_k), (h_kv, s_k))
    )
    return q, k, v


def _masks(device: str = "cpu") -> list:
    """The masks under test, with their tensors on ``device``."""
    ids = torch.randint(0, 3, (2, 150), generator=torch.Generator().manual_seed(1)).sort(-1).values
    lengths = torch.tensor([150, 61], device=device)
    return [
        None,
        masks.causal(),
        masks.sliding_window(9),
        masks.causal() & masks.sliding_window(20, causal=True),
        masks.dilated(4, 3) | masks.global_tokens([0, 77]),
        masks.bigbird(16, 3, 1, 2, seed=3) & masks.padding(lengths),
        masks.random_blocks(2, 32, seed=1),
        masks.prefix_lm(torch.tensor([10, 60], device=device)),
        masks.document(ids.to(device)),
        masks.sliding_window(3) & masks.padding(torch.tensor([0, 5], device=device)),
    ]


MASKS = _masks()


@pytest.mark.parametrize("mask", MASKS, ids=repr)
def test_flex_inference_matches_math_on_cpu(mask):
    q, k, v = _inputs(2, 4, 2, 150, 150)  # grouped heads, lengths not multiples of 128
    ref = attention(q, k, v, mask, backend="math")
    with torch.no_grad():
        out = attention(q, k, v, mask, backend="flex")
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)


def test_flex_compiled_float32_on_cpu():
    q, k, v = _inputs(1, 2, 2, 200, 200, dtype=torch.float32)
    mask = masks.sliding_window(33, causal=True) | masks.global_tokens([0])
    ref = attention(q, k, v, mask, backend="math")
    with torch.no_grad():
        out = attention(q, k, v, mask, backend="flex")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_flex_refuses_what_it_cannot_do():
    q, k, v = _inputs(2, 2, 2, 20, 20, grad=True)
    m = masks.sliding_window(5)
    if q.device.type == "cpu":
        with pytest.raises(ValueError, match="FlexAttention has no backward on CPU"):
            attention(q, k, v, m, backend="flex")
    q, k, v = (t.detach() for t in (q, k, v))
    with pytest.raises(ValueError, match="FlexAttention has no dropout"):
        attention(q, k, v, m, dropout_p=0.5, backend="flex")
    with pytest.raises(ValueError, match="does not return the weights"):
        attention(q, k, v, m, return_weights=True, backend="flex")
    with pytest.raises(ValueError, match="needs a lazy qkv.masks.Mask"):
        attention(q, k, v, m.to_dense(20, 20), backend="flex")
    with pytest.raises(ValueError, match="dot-product scores only"):
        attention(q, k, v, m, score=lambda a, b: a @ b.transpose(-1, -2), backend="flex")
    with pytest.raises(ValueError, match="batch size 3"):
        attention(q, k, v, masks.padding([1, 2, 3]), backend="flex")
    # never chosen by auto (compilation per shape)
    p = make_problem(q, k, v, m)
    assert pick_backend(p, "auto").name != "flex"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention's backward needs CUDA")
@pytest.mark.parametrize("index", range(len(MASKS)))
def test_flex_forward_backward_on_cuda(index):
    mask = _masks("cuda")[index]
    q, k, v = _inputs(2, 4, 2, 150, 150, dtype=torch.float32, device="cuda", grad=True)
    ref = attention(q, k, v, mask, backend="math")
    out = attention(q, k, v, mask, backend="flex")
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)  # TF32 matmuls
    go = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (q, k, v), go)
    for name, g, g_ref in zip("qkv", grads, torch.autograd.grad(ref, (q, k, v), go)):
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, g_ref, atol=2e-3, rtol=2e-3, msg=f"grad of {name}")
