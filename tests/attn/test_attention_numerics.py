"""The numerics contract (docs/architecture.md, "Numerics"), on every backend.

1. A masked-out key/value position (one that no query of its batch row and head may attend
   to: padding, a document no query belongs to) never influences the output or any
   gradient, whatever it holds (NaN, +-inf, 1e38); its own gradient is zero.
2. A non-finite query row may give a non-finite output row; every other row's output is
   unaffected.

Each case poisons a run and compares it with the same run on clean inputs, and with the
``math`` reference on clean inputs, forward and backward (``flex`` forward only on CPU,
where FlexAttention has no backward). ``"once"`` is no backend but
:func:`~qkv.attn.weights.weights_and_output`, which ``record_attention`` runs instead of the
module's backend when it records every weight: it keeps the same contract.
"""

from __future__ import annotations

import pytest
import torch

from qkv import masks
from qkv.attn import attention, available_backends, make_problem
from qkv.attn.weights import weights_and_output

BACKENDS = [b for b in ("math", "sdpa", "auto", "blocksparse", "flex") if b in available_backends()]
BACKENDS.append("once")  # weights_and_output: what record_attention runs for every weight
POISONS = [float("nan"), float("inf"), float("-inf"), 1e38]
LENGTHS = [5, 8, 0]  # batch row 2 sees no key at all: its rows give zeros


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """One call per backend first: FlexAttention's compiler and the first block-sparse
    plan take tens of seconds on a loaded CPU, once, outside the timed cases."""
    q = torch.randn(3, 2, 8, 4)
    with torch.no_grad():
        for backend in BACKENDS:
            _attend(backend, q, q, q, masks.padding(LENGTHS))


def _attend(backend: str, q, k, v, mask) -> torch.Tensor:
    if backend == "once":
        return weights_and_output(make_problem(q, k, v, mask))[0]
    return attention(q, k, v, mask=mask, backend=backend)


def _can_grad(backend: str) -> bool:
    return backend != "flex" or torch.cuda.is_available()


def _mask(kind: str, b: int, s: int):
    lengths = torch.tensor(LENGTHS[:b])
    if kind == "padding":
        return masks.padding(lengths)
    if kind == "padding&causal":
        return masks.padding(lengths) & masks.causal()
    if kind == "document":  # keys of document 9 belong to no query's document
        ids = torch.zeros(b, s, dtype=torch.long)
        ids[:, 5:] = 9
        return masks.document(ids, q_ids=torch.zeros(b, s, dtype=torch.long))
    if kind == "bool tensor":
        return (torch.arange(s)[None, :] < lengths[:, None])[:, None, None, :]  # (b,1,1,s_k)
    if kind == "additive":
        keep = (torch.arange(s)[None, :] < lengths[:, None])[:, None, None, :]
        return torch.zeros(b, 1, 1, s).masked_fill(~keep, float("-inf"))
    raise AssertionError(kind)


def _hidden(kind: str, b: int, s: int) -> torch.Tensor:
    """``(b, s_k)`` bool: key positions no query sees (where the poison goes)."""
    if kind == "document":
        out = torch.zeros(b, s, dtype=torch.bool)
        out[:, 5:] = True
        return out
    return ~(torch.arange(s)[None, :] < torch.tensor(LENGTHS[:b])[:, None])


def _supported(backend: str, kind: str) -> bool:
    # flex and blocksparse take lazy masks only (they build tiles from them)
    return not (backend in ("flex", "blocksparse") and kind in ("bool tensor", "additive"))


def _run(backend, q, k, v, mask, grad):
    leaves = [t.detach().clone().requires_grad_(grad) for t in (q, k, v)]
    if grad:
        out = _attend(backend, *leaves, mask)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        return out.detach(), [t.grad for t in leaves]
    with torch.no_grad():
        return _attend(backend, *leaves, mask), None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kind", ["padding", "padding&causal", "document", "bool tensor", "additive"]
)
@pytest.mark.parametrize("where", ["key", "value", "both"])
@pytest.mark.parametrize("heads", [(2, 2), (4, 2)], ids=["mha", "gqa"])
def test_masked_out_positions_never_influence_output_or_gradients(backend, kind, where, heads):
    if not _supported(backend, kind):
        pytest.skip(f"{backend} takes lazy masks only")
    h, h_kv = heads
    b, s, d = 3, 8, 4
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, n, s, d, generator=g) for n in (h, h_kv, h_kv))
    mask = _mask(kind, b, s)
    hidden = _hidden(kind, b, s)[:, None, :, None]  # (b, 1, s_k, 1)
    grad = _can_grad(backend)
    clean_out, clean_grads = _run(backend, q, k, v, mask, grad)
    ref_out, ref_grads = _run("math", q, k, v, mask, grad)
    torch.testing.assert_close(clean_out, ref_out, atol=1e-5, rtol=1e-5)
    for poison in POISONS:
        kp = torch.where(hidden, poison, k) if where in ("key", "both") else k
        vp = torch.where(hidden, poison, v) if where in ("value", "both") else v
        out, grads = _run(backend, q, kp, vp, mask, grad)
        assert torch.isfinite(out).all(), (backend, kind, where, poison)
        torch.testing.assert_close(out, clean_out, atol=1e-5, rtol=1e-5)
        if not grad:
            continue
        for name, gp, gc in zip("qkv", grads, clean_grads):
            assert torch.isfinite(gp).all(), (name, backend, kind, where, poison)
            torch.testing.assert_close(gp, gc, atol=1e-5, rtol=1e-5)
        for gp in grads[1:]:  # the hidden positions' own gradients are zero
            assert (gp.masked_select(hidden.expand_as(gp)) == 0).all()
    if grad:
        for gp, gr in zip(clean_grads, ref_grads):
            torch.testing.assert_close(gp, gr, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["none", "causal", "padding", "padding&causal"])
@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_a_non_finite_query_row_leaves_every_other_row_unaffected(backend, kind, poison):
    b, h, s, d = 3, 2, 8, 4
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(b, h, s, d, generator=g) for _ in range(3))
    mask = (
        {"none": None, "causal": masks.causal()}.get(kind)
        if kind in ("none", "causal")
        else (_mask(kind, b, s))
    )
    clean, _ = _run(backend, q, k, v, mask, grad=False)
    qp = q.clone()
    qp[0, 1, 3] = poison
    out, _ = _run(backend, qp, k, v, mask, grad=False)
    other = torch.ones(b, h, s, dtype=torch.bool)
    other[0, 1, 3] = False
    assert torch.isfinite(out[other]).all(), (backend, kind)
    torch.testing.assert_close(out[other], clean[other], atol=1e-5, rtol=1e-5)


def test_masked_scores_for_partly_hidden_keys_are_selected_not_added():
    """A key only some queries see (the future under a causal mask): the rows that do not
    see it keep finite outputs on the math reference, which masks scores by selection."""
    q, k, v = (torch.randn(1, 1, 6, 4) for _ in range(3))
    k[0, 0, 4] = float("nan")
    out = attention(q, k, v, is_causal=True, backend="math")
    assert torch.isfinite(out[0, 0, :4]).all() and torch.isnan(out[0, 0, 4:]).all()
