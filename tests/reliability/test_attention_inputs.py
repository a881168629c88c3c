"""Every input to ``qkv.attention`` is either refused with a ValueError/TypeError (before a
backend can crash on it) or computed with a finite answer equal to an independent float64
reference: shapes with zeros, grouped heads, masks of every kind and shape (some that do not
broadcast), scales (nan, inf, 0, negative), dtypes, devices, backends."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qkv
from qkv import masks

_TOL = {  # (atol, rtol) against float64 on the same rounded inputs
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (3e-2, 3e-2),
}


@dataclass
class Case:
    """One call of ``qkv.attention``: its inputs and what makes them."""

    q: Any
    k: Any
    v: Any
    mask: Any = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    backend: str = "auto"
    grad: bool = False

    def call(self) -> Any:
        return qkv.attention(self.q, self.k, self.v, self.mask, backend=self.backend, **self.kwargs)


# ---------------------------------------------------------------------------------------
# an independent reference (float64, plain torch)
# ---------------------------------------------------------------------------------------
def _dense_allowed(c: Case, s_q: int, s_k: int) -> torch.Tensor | None:
    """The case's mask (lazy masks materialized) as a tensor aligned to ``(..., s_q, s_k)``,
    causality included."""
    m = c.mask
    if isinstance(m, masks.Mask):
        # (Mask.to_dense cannot materialize a mask of 0 batch rows: it evaluates row 0)
        empty = m.batch_size == 0
        m = torch.ones(0, 1, s_q, s_k, dtype=torch.bool) if empty else m.to_dense(s_q, s_k)
        if m.ndim == 4 and c.q.ndim == 3:
            m = m[:, 0]  # a batch-specific mask: its rows are q's leading dim
        elif m.ndim == 4 and c.q.ndim == 2:
            m = m[0, 0]
    if c.kwargs.get("is_causal"):
        tri = torch.arange(s_k)[None, :] <= torch.arange(s_q)[:, None] + (s_k - s_q)
        if m is None or m.dtype == torch.bool:
            m = tri if m is None else m & tri
        else:
            m = m.masked_fill(~tri, float("-inf"))
    return m


def _reference(c: Case, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """``softmax(scale q k^T + mask) v`` in float64 with rows that see nothing set to zero."""
    q, k, v = q.double(), k.double(), v.double()
    qh, kh = q.shape[-3] if q.ndim >= 3 else 1, k.shape[-3] if k.ndim >= 3 else 1
    if k.ndim == q.ndim and qh > kh > 1 and qh % kh == 0:  # grouped heads (else broadcast)
        k, v = k.repeat_interleave(qh // kh, -3), v.repeat_interleave(qh // kh, -3)
    scale = c.kwargs.get("scale")
    if scale is None:
        scale = q.shape[-1] ** -0.5 if c.kwargs.get("score", "scaled_dot") == "scaled_dot" else 1.0
    s = (q @ k.transpose(-1, -2)) * scale
    m = _dense_allowed(c, q.shape[-2], k.shape[-2])
    if m is not None:
        s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m.double()
    sees = ~torch.isneginf(s).all(-1, keepdim=True)
    w = torch.softmax(torch.where(sees, s, 0.0), -1) * sees
    return w @ v, w


# ---------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@st.composite
def valid_cases(draw: st.DrawFn) -> Case:
    """Inputs that must be computed: zeros in every size but the feature dims, grouped and
    shared key heads, every mask kind."""
    dtype = draw(st.sampled_from(DTYPES))
    nd = draw(st.sampled_from([2, 3, 4, 4]))
    b, s_q, s_k = draw(st.integers(0, 2)), draw(st.integers(0, 6)), draw(st.integers(0, 6))
    h = draw(st.sampled_from([0, 1, 2, 4]))
    h_kv = draw(st.sampled_from([x for x in (0, 1, 2, 4) if x in (h, 1) or 0 < x < h]))
    d, d_v = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    lead_q, lead_k = {4: ((b, h), (b, h_kv)), 3: ((b,), (b,)), 2: ((), ())}[nd]
    q = torch.randn(*lead_q, s_q, d, generator=g).to(dtype)
    k = torch.randn(*lead_k, s_k, d, generator=g).to(dtype)
    v = torch.randn(*lead_k, s_k, d_v, generator=g).to(dtype)
    target = (*lead_q, s_q, s_k)
    kind = draw(st.sampled_from(["none", "bool", "bias", "causal", "window", "padding", "and"]))
    mask: Any = None
    if kind in ("bool", "bias"):
        dims = target[draw(st.integers(0, len(target) - 2)) :]  # drop some leading dims
        shape = tuple(x if draw(st.booleans()) else 1 for x in dims[:-2]) + dims[-2:]
        mask = torch.rand(shape, generator=g) < 0.6
        if kind == "bias":
            bias = torch.randn(shape, generator=g, dtype=torch.float64)
            mask = bias.masked_fill(~mask, float("-inf")).to(dtype)
    elif kind == "causal":
        mask = masks.causal(offset=draw(st.sampled_from([None, 0, -2, 3])))
    elif kind == "window":
        mask = masks.sliding_window(draw(st.integers(1, 3)), causal=draw(st.booleans()))
    elif kind in ("padding", "and") and nd >= 3:
        lengths = draw(st.lists(st.integers(0, s_k), min_size=b, max_size=b))
        mask = masks.padding(lengths) if b != 1 or draw(st.booleans()) else masks.padding([s_k])
        if kind == "and":
            mask = masks.causal() & mask
    kw: dict[str, Any] = {
        "score": draw(st.sampled_from(["scaled_dot", "dot"])),
        "scale": draw(st.sampled_from([None, 0.5, 2.0])),
        "is_causal": draw(st.booleans()),
        "return_weights": draw(st.booleans()),
    }
    backend = draw(st.sampled_from(["math", "sdpa", "auto", "blocksparse"]))
    batch_mask = isinstance(mask, masks.Mask) and mask.batch_size not in (None, 1)
    if backend == "blocksparse" and (
        isinstance(mask, torch.Tensor) or kw["return_weights"] or (batch_mask and nd != 4)
    ):
        backend = "sdpa"  # what blocksparse refuses by design (it says why)
    grad = dtype in (torch.float32, torch.float64) and draw(st.booleans())
    return Case(q, k, v, mask, kw, backend, grad)


def _corrupt(c: Case, how: str, data: st.DataObject, s_q: int, s_k: int) -> Case:
    """One way to break a case of lengths ``s_q``, ``s_k`` (some break nothing: the result
    must then be right)."""
    q, k, v = c.q, c.k, c.v
    meta = torch.device("meta")  # a second device without CUDA
    if how == "empty d":
        which = data.draw(st.sampled_from(["qk", "v"]))
        if which == "qk":
            return replace(c, q=q[..., :0], k=k[..., :0])
        return replace(c, v=v[..., :0])
    if how == "scale":
        bad = data.draw(
            st.sampled_from(
                [
                    float("nan"),
                    float("inf"),
                    -float("inf"),
                    0.0,
                    -0.0,
                    -1.0,
                    1e-300,
                    "1",
                    True,
                    torch.tensor(1.0),
                ]
            )
        )
        return replace(c, kwargs=c.kwargs | {"scale": bad})
    if how == "mask shape":
        shape = tuple(data.draw(st.lists(st.integers(0, 4), min_size=1, max_size=5)))
        return replace(c, mask=torch.ones(shape, dtype=torch.bool))
    if how == "mask batch":
        n = data.draw(st.integers(0, 3))
        return replace(c, mask=masks.padding([min(1, s_k)] * n))
    if how == "mask dtype":
        dt = data.draw(st.sampled_from([torch.long, torch.uint8, torch.float64, torch.complex64]))
        return replace(c, mask=torch.ones(s_q, s_k, dtype=dt))
    if how == "mask type":
        return replace(c, mask=data.draw(st.sampled_from([[[True]], 1.0, "causal"])))
    if how == "mask device":
        return replace(c, mask=torch.ones(s_q, s_k, dtype=torch.bool, device=meta))
    if how == "kv device":
        return replace(c, k=k.to(meta), v=v.to(meta))
    if how == "dtype":
        dt = data.draw(st.sampled_from([*DTYPES, torch.float8_e4m3fn, torch.long]))
        return replace(c, k=k.to(dt))
    if how == "all dtypes":
        dt = data.draw(st.sampled_from([torch.float8_e5m2, torch.int32, torch.complex64]))
        return replace(c, q=q.to(dt), k=k.to(dt), v=v.to(dt))
    if how == "heads":  # any number of key heads, grouped or not
        h_kv = data.draw(st.integers(0, 5))
        lead = (h_kv,) if k.ndim < 3 else (*k.shape[:-3], h_kv)
        return replace(
            c,
            k=torch.randn(*lead, *k.shape[-2:]).to(k.dtype),
            v=torch.randn(*lead, *v.shape[-2:]).to(v.dtype),
        )
    if how == "kv lengths":
        return replace(c, v=v[..., : max(0, s_k - 1), :])
    if how == "feature sizes":
        return replace(c, k=torch.cat([k, k[..., :1]], -1))
    if how == "rank":
        return replace(c, q=q.reshape(-1))
    if how == "not a tensor":
        return replace(c, q=q.tolist())
    if how == "dropout":
        p = data.draw(st.sampled_from([1.0, -0.1, float("nan"), "0.1"]))
        return replace(c, kwargs=c.kwargs | {"dropout_p": p})
    if how == "score":
        return replace(c, kwargs=c.kwargs | {"score": data.draw(st.sampled_from(["cosine", 3]))})
    if how == "backend":
        return replace(
            c, backend=data.draw(st.sampled_from(["flash9", None, 3, "blocksparse-auto"]))
        )
    raise AssertionError(how)


CORRUPTIONS = [  # applied in this order: the last ones leave no tensor shape to work on
    "empty d", "scale", "mask shape", "mask batch", "mask dtype", "mask type", "mask device",
    "heads", "kv lengths", "feature sizes", "dropout", "score", "backend", "dtype",
    "kv device", "all dtypes", "rank", "not a tensor",
]  # fmt: skip


# ---------------------------------------------------------------------------------------
# the properties
# ---------------------------------------------------------------------------------------
def _check_computed(c: Case, res: Any) -> None:
    out, w = res if isinstance(res, tuple) else (res, None)
    assert torch.isfinite(out).all(), "non-finite output"
    ref_out, ref_w = _reference(c, c.q, c.k, c.v)
    atol, rtol = _TOL[c.q.dtype]
    assert out.dtype == c.q.dtype, (out.dtype, c.q.dtype)
    assert out.shape == ref_out.shape, (out.shape, ref_out.shape)
    torch.testing.assert_close(out.double(), ref_out, atol=atol, rtol=rtol)
    if w is not None:
        assert torch.isfinite(w).all() and w.shape == ref_w.shape
        torch.testing.assert_close(w.double(), ref_w, atol=atol, rtol=rtol)


def _settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings(150)
@given(c=valid_cases())
def test_valid_inputs_are_computed_right(c):
    """Never refused; finite; equal to the float64 reference, forward and backward."""
    q, k, v = (t.requires_grad_(c.grad) for t in (c.q, c.k, c.v))
    res = c.call()
    _check_computed(c, res)
    if c.grad:
        out = res[0] if isinstance(res, tuple) else res
        go = torch.randn_like(out)
        grads = torch.autograd.grad(out, (q, k, v), go, allow_unused=True)
        qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
        ref_out, _ = _reference(c, qd, kd, vd)
        ref_grads = torch.autograd.grad(ref_out, (qd, kd, vd), go.double(), allow_unused=True)
        atol, rtol = _TOL[c.q.dtype]
        for name, gr, ref in zip("qkv", grads, ref_grads):
            gr = torch.zeros_like(ref) if gr is None else gr.double()
            ref = torch.zeros_like(gr) if ref is None else ref
            assert torch.isfinite(gr).all(), name
            torch.testing.assert_close(gr, ref, atol=10 * atol, rtol=10 * rtol, msg=name)


@_settings(300)
@given(
    c=valid_cases(),
    hows=st.lists(st.sampled_from(CORRUPTIONS), min_size=1, max_size=2, unique=True),
    data=st.data(),
)
def test_any_input_is_refused_cleanly_or_computed_right(c, hows, data):
    """Broken inputs: a ValueError or TypeError from the validation, never another exception
    from inside a backend; whatever is computed is finite and right."""
    s_q, s_k = c.q.shape[-2], c.k.shape[-2]
    for how in sorted(hows, key=CORRUPTIONS.index):
        c = _corrupt(c, how, data, s_q, s_k)
    try:
        res = c.call()
    except (ValueError, TypeError):
        return
    _check_computed(c, res)
