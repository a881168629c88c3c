"""qkv.attention at the edges: bad inputs refused before any backend runs, empty keys and
empty batches, and half precision that keeps the fused kernels' accuracy."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

import qkv
from qkv import masks
from qkv.attn import functional
from qkv.attn.functional import Backend

BACKENDS = ["math", "sdpa", "auto"]


def _qkv(*shape_q, s_k=5, h_kv=None, d_v=None, dtype=torch.float64, grad=False):
    """q of ``shape_q`` ``(b, h, s_q, d)``, k and v of ``(b, h_kv, s_k, d | d_v)``."""
    b, h, _, d = shape_q
    h_kv = h if h_kv is None else h_kv
    d_v = d if d_v is None else d_v
    q = torch.randn(*shape_q, dtype=dtype)
    k = torch.randn(b, h_kv, s_k, d, dtype=dtype)
    v = torch.randn(b, h_kv, s_k, d_v, dtype=dtype)
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


# ---------------------------------------------------------------------------------------
# bad input: refused by make_problem, whatever the backend
# ---------------------------------------------------------------------------------------
def _bad_inputs() -> dict[str, tuple[type[Exception], str, Callable[[], dict]]]:
    q, k, v = _qkv(2, 3, 4, 8)
    meta = torch.device("meta")  # a second device without CUDA
    return {
        "padding of another batch": (
            ValueError,
            r"mask padding\(\[1, 2, 3\]\) has batch size 3.*\(2, 3\)",
            lambda: dict(q=q, k=k, v=v, mask=masks.padding([1, 2, 3])),
        ),
        "combined lazy mask of another batch": (
            ValueError,
            r"has batch size 3",
            lambda: dict(q=q, k=k, v=v, mask=masks.causal() & masks.padding([1, 2, 3])),
        ),
        "batch mask without a batch dim": (
            ValueError,
            r"has batch size 2.*give q a batch dimension",
            lambda: dict(q=q[0, 0], k=k[0, 0], v=v[0, 0], mask=masks.padding([1, 2])),
        ),
        "empty padding lengths": (
            ValueError,
            r"mask padding\(\[\]\) has batch size 0",
            lambda: dict(q=q, k=k, v=v, mask=masks.padding([])),
        ),
        "empty padding tensor": (
            ValueError,
            r"has batch size 0",
            lambda: dict(q=q, k=k, v=v, mask=masks.padding(torch.zeros(0, dtype=torch.long))),
        ),
        "tensor mask of another batch": (
            ValueError,
            r"mask of shape \(3, 1, 4, 5\) does not broadcast.*\(2, 3, 4, 5\)",
            lambda: dict(q=q, k=k, v=v, mask=torch.ones(3, 1, 4, 5, dtype=torch.bool)),
        ),
        "tensor mask of other heads": (
            ValueError,
            r"mask of shape \(2, 2, 4, 5\) does not broadcast",
            lambda: dict(q=q, k=k, v=v, mask=torch.zeros(2, 2, 4, 5)),
        ),
        "k on another device": (
            ValueError,
            r"one device, got q on cpu, k on meta, v on cpu",
            lambda: dict(q=q, k=k.to(meta), v=v),
        ),
        "mask on another device": (
            ValueError,
            r"mask must be on q's device cpu, got a mask on meta",
            lambda: dict(q=q, k=k, v=v, mask=torch.ones(4, 5, dtype=torch.bool, device=meta)),
        ),
        "empty head dim in q and k": (
            ValueError,
            r"q must have a non-empty feature dim \(d > 0\), got shape \(2, 3, 4, 0\)",
            lambda: dict(q=q[..., :0], k=k[..., :0], v=v),
        ),
        "empty head dim in v": (
            ValueError,
            r"v must have a non-empty feature dim .*\(2, 3, 5, 0\)",
            lambda: dict(q=q, k=k, v=v[..., :0]),
        ),
        "nan scale": (
            ValueError,
            r"scale must be a finite positive number, got nan",
            lambda: dict(scale=float("nan")),
        ),
        "inf scale": (ValueError, r"scale must be .*, got inf", lambda: dict(scale=float("inf"))),
        "-inf scale": (
            ValueError,
            r"scale must be .*, got -inf",
            lambda: dict(scale=float("-inf")),
        ),
        "zero scale": (ValueError, r"scale must be .*, got 0.0", lambda: dict(scale=0.0)),
        "negative scale": (ValueError, r"scale must be .*, got -1", lambda: dict(scale=-1)),
        "string scale": (
            TypeError,
            r"scale must be a float or None, got str",
            lambda: dict(scale="1"),
        ),
        "zero query heads against two key heads": (
            ValueError,
            r"leading \(batch/head\) dims that do not broadcast",
            lambda: dict(q=q[:, :0], k=k[:, :2], v=v[:, :2]),
        ),
        "float8 inputs": (
            TypeError,
            r"q, k, v must be one of float16, bfloat16, float32, float64, got torch.float8",
            lambda: dict(
                q=q.to(torch.float8_e4m3fn),
                k=k.to(torch.float8_e4m3fn),
                v=v.to(torch.float8_e4m3fn),
            ),
        ),
    }


BAD = _bad_inputs()


@pytest.mark.parametrize("backend", [*BACKENDS, "blocksparse", "flex", "spy"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_before_any_backend(case, backend, monkeypatch):
    error, match, make = BAD[case]
    ran = []
    monkeypatch.setitem(
        functional._BACKENDS, "spy", Backend("spy", ran.append, lambda p: None, None)
    )
    q, k, v = _qkv(2, 3, 4, 8)
    kw = dict(q=q, k=k, v=v) | make()
    with pytest.raises(error, match=match):
        qkv.attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), backend=backend, **kw)
    assert ran == []


def test_good_neighbours_of_the_refused_inputs_run():
    """What the checks must let through: matching lazy batches, 3-d q with a batch mask,
    a tiny positive scale, an empty padding mask on an empty batch."""
    q, k, v = _qkv(2, 3, 4, 8)
    ref = qkv.attention(q, k, v, masks.padding([1, 5]).to_dense(4, 5), backend="math")
    for backend in [*BACKENDS, "blocksparse"]:
        out = qkv.attention(q, k, v, masks.padding([1, 5]), backend=backend)
        torch.testing.assert_close(out, ref)
    out3 = qkv.attention(q[:, 0], k[:, 0], v[:, 0], masks.padding([1, 5]), backend="math")
    torch.testing.assert_close(out3, ref[:, 0])
    out = qkv.attention(q, k, v, scale=1e-30, return_weights=True)[1]
    torch.testing.assert_close(out, torch.full_like(out, 0.2))
    e = _qkv(0, 3, 4, 8)
    for backend in [*BACKENDS, "blocksparse"]:
        assert qkv.attention(*e, masks.padding([]), backend=backend).shape == (0, 3, 4, 8)


# ---------------------------------------------------------------------------------------
# empty keys, empty batches, zero heads
# ---------------------------------------------------------------------------------------
EMPTY_KEY_MASKS = {
    "none": lambda: None,
    "causal": lambda: masks.causal(),
    "padding": lambda: masks.padding([0, 0]),
    "bool": lambda: torch.ones(4, 0, dtype=torch.bool),
    "bias": lambda: torch.zeros(1, 1, 4, 0, dtype=torch.float64),
}


@pytest.mark.parametrize("mask", sorted(EMPTY_KEY_MASKS))
@pytest.mark.parametrize("backend", [*BACKENDS, "blocksparse"])
@pytest.mark.parametrize("h_kv", [4, 2])
def test_no_keys_give_zeros_forward_and_backward(backend, mask, h_kv):
    m = EMPTY_KEY_MASKS[mask]()
    if backend == "blocksparse" and isinstance(m, torch.Tensor):
        pytest.skip("blocksparse reads lazy masks only")
    q, k, v = _qkv(2, 4, 4, 8, s_k=0, h_kv=h_kv, d_v=6, grad=True)
    want_w = backend != "blocksparse"
    res = qkv.attention(q, k, v, m, backend=backend, return_weights=want_w)
    out, w = res if want_w else (res, None)
    assert out.shape == (2, 4, 4, 6) and torch.all(out == 0)
    if w is not None:
        assert w.shape == (2, 4, 4, 0)
    grads = torch.autograd.grad(out.sum() + (0 if w is None else w.sum()), (q, k, v))
    for g, t in zip(grads, (q, k, v)):
        assert g.shape == t.shape and torch.all(g == 0)


def test_no_keys_in_half_precision_and_through_the_module():
    q, k, v = _qkv(1, 2, 3, 8, s_k=0, dtype=torch.float16)
    for backend in BACKENDS:
        out, w = qkv.attention(q, k, v, backend=backend, return_weights=True)
        assert out.dtype == w.dtype == torch.float16 and torch.all(out == 0)
    mha = qkv.MultiHeadAttention(16, 4).eval()
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 0, 16)
    torch.testing.assert_close(mha(x, memory), mha.out_proj.bias.expand(2, 3, 16))


@pytest.mark.parametrize("backend", [*BACKENDS, "blocksparse"])
@pytest.mark.parametrize("empty", ["batch", "heads", "queries"])
def test_empty_batch_heads_or_queries_under_a_sparse_mask(backend, empty):
    """s = 2048 and a sliding window: the sizes at which "auto" consults blocksparse."""
    b, h, s_q = {"batch": (0, 2, 2048), "heads": (1, 0, 2048), "queries": (1, 2, 0)}[empty]
    q, k, v = _qkv(b, h, s_q, 8, s_k=2048, grad=True)
    out = qkv.attention(q, k, v, masks.sliding_window(16), backend=backend)
    assert out.shape == (b, h, s_q, 8)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(g.shape == t.shape for g, t in zip(grads, (q, k, v)))


# ---------------------------------------------------------------------------------------
# half precision: float32 scores and softmax, like the fused kernels
# ---------------------------------------------------------------------------------------
def _err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.double() - ref).abs().max().item()


def test_float16_dot_products_past_65504_stay_finite_and_exact():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 64) * c for c in (60.0, 60.0, 1.0))
    q, k, v = q.half(), k.half(), v.half()
    assert (q.double() @ k.double().transpose(-1, -2)).abs().max() > 65504  # fp16's max
    ref_out, ref_w = qkv.attention(
        q.double(), k.double(), v.double(), return_weights=True, backend="math"
    )
    sdpa_err = _err(qkv.attention(q, k, v, backend="sdpa"), ref_out)
    for backend in BACKENDS:  # return_weights: math, or sdpa + attention_weights
        for grad in (False, True):  # without gradients: the row-chunked weights
            qg = q.clone().requires_grad_(grad)
            out, w = qkv.attention(qg, k, v, return_weights=True, backend=backend)
            assert out.dtype == w.dtype == torch.float16
            assert torch.isfinite(out).all() and torch.isfinite(w).all()
            assert _err(out, ref_out) <= 2 * sdpa_err + 1e-3
            assert _err(w, ref_w) <= 1e-3  # float16 rounding of weights in [0, 1]
            if grad:
                (g,) = torch.autograd.grad(out.float().sum() + w.float().sum(), qg)
                assert torch.isfinite(g).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_math_is_as_accurate_as_sdpa(dtype):
    """Against a float64 reference on the same rounded inputs, the math backend's output and
    weights (float32 scores, softmax and weighted sum) are no worse than sdpa's kernel
    (weights: no worse than one rounding to ``dtype``). Before: bf16 out ~6x worse."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 128, 64) * c for c in (4.0, 4.0, 1.0))
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    mask = masks.sliding_window(40)
    ref_out, ref_w = qkv.attention(
        q.double(), k.double(), v.double(), mask, return_weights=True, backend="math"
    )
    sdpa_err = _err(qkv.attention(q, k, v, mask, backend="sdpa"), ref_out)
    eps = torch.finfo(dtype).eps
    for grad in (False, True):  # without gradients: the row-chunked weights
        qg = q.clone().requires_grad_(grad)
        for backend in BACKENDS:
            out, w = qkv.attention(qg, k, v, mask, return_weights=True, backend=backend)
            assert _err(out, ref_out) <= 1.25 * sdpa_err
            assert _err(w, ref_w) <= eps  # one rounding of a weight <= 1


def test_float32_and_float64_math_is_unchanged():
    """The upcast is for half inputs only: full precision computes the plain formula in its
    own dtype, bit for bit."""
    for dtype in (torch.float32, torch.float64):
        q, k, v = _qkv(2, 3, 6, 8, s_k=7, dtype=dtype)
        bias = torch.randn(6, 7, dtype=dtype)
        out, w = qkv.attention(q, k, v, bias, return_weights=True, backend="math")
        s = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(8)) + bias
        e = torch.exp(s - s.amax(-1, keepdim=True))
        want_w = e / e.sum(-1, keepdim=True)
        assert w.dtype == out.dtype == dtype
        assert torch.equal(w, want_w) and torch.equal(out, want_w @ v)


@pytest.mark.parametrize("keep", [[True], [True, False, True, True, False, True], [False] * 6])
@pytest.mark.parametrize("s_q", [1, 40])
def test_a_one_dimensional_key_mask_with_weights_agrees_with_math(keep, s_q):
    # a (s_k,) mask broadcasts over the rows: the row-chunked weights of the sdpa backend
    # read it as keys only (found by the Hypothesis table: an IndexError before)
    g = torch.Generator().manual_seed(0)
    s_k = len(keep)
    q = torch.randn(s_q, 4, dtype=torch.float64, generator=g)
    k = torch.randn(s_k, 4, dtype=torch.float64, generator=g)
    v = torch.randn(s_k, 3, dtype=torch.float64, generator=g)
    m = torch.tensor(keep)
    out, w = qkv.attention(q, k, v, m, backend="sdpa", return_weights=True)
    ref_out, ref_w = qkv.attention(q, k, v, m, backend="math", return_weights=True)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w, ref_w, rtol=1e-12, atol=1e-12)
    assert (w[:, ~m] == 0).all()
