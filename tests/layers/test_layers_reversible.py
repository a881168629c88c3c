"""Reversible layers: gradients equal those of the same blocks run by plain autograd
(dropout and LSH rotations replayed), activation memory independent of depth, the chunked
feed-forward, and parity of a reversible LSH stack with ``transformers``' ReformerLayer."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from qkv.attn import MultiHeadAttention
from qkv.attn.lsh import LSHSelfAttention
from qkv.layers import ChunkedFeedForward, FeedForward, LayerNorm, chunked, reversible_stack
from qkv.models.reversible import ReversibleLayer


def _layers(n: int, *, lsh: bool, chunk: int = 0, dropout: float = 0.1) -> nn.ModuleList:
    torch.manual_seed(0)
    layers = []
    for _ in range(n):
        attn: nn.Module = (
            LSHSelfAttention(16, 2, bucket_size=4, n_hashes=2, dropout=dropout)
            if lsh
            else MultiHeadAttention(16, 2, dropout=dropout)
        )
        ff = (
            ChunkedFeedForward(16, 32, "gelu", dropout, chunk_size=chunk)
            if chunk
            else FeedForward(16, 32, "gelu", dropout)
        )
        layers.append(
            ReversibleLayer(attn, ff, LayerNorm(16), LayerNorm(16), causal=True, dropout=dropout)
        )
    return nn.ModuleList(layers).double().train()


def _plain(layers: nn.ModuleList, x: Tensor, **kw) -> tuple[Tensor, Tensor]:
    """The eager reference: the same blocks under ordinary autograd (all activations kept),
    drawing random numbers in the same order as the reversible pass."""
    x1 = x2 = x
    for blk in layers:
        y1 = x1 + blk.f(x2, **kw)
        x1, x2 = y1, x2 + chunked(blk.g, y1, blk.chunk)
    return x1, x2


def _grads(layers: nn.ModuleList, x: Tensor, run, seed: int = 1) -> list[Tensor]:
    for p in layers.parameters():
        p.grad = None
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)  # the same dropout masks and LSH rotations on both sides
    y1, y2 = run(layers, x)
    ((y1 * 1.5 + y2) ** 2).sum().backward()
    return [x.grad] + [p.grad.clone() for p in layers.parameters()]


@pytest.mark.parametrize("lsh", [False, True], ids=["softmax", "lsh"])
@pytest.mark.parametrize("chunk", [0, 3])
def test_gradients_equal_the_plain_blocks(lsh: bool, chunk: int) -> None:
    layers = _layers(3, lsh=lsh, chunk=chunk)
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 8:] = False
    rev = _grads(layers, x, lambda m, x: reversible_stack(m, x, x, padding_mask=mask))
    ref = _grads(layers, x, lambda m, x: _plain(m, x, padding_mask=mask))
    assert len(rev) == len(ref) and all(g is not None for g in rev)
    for a, b in zip(rev, ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_forward_equals_without_gradients() -> None:
    layers = _layers(2, lsh=False, dropout=0.0).eval()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    with torch.no_grad():
        a = reversible_stack(layers, x, x)
    b = reversible_stack(layers, x, x)
    for u, w in zip(a, b):
        torch.testing.assert_close(u, w, atol=0, rtol=0)
    assert b[0].requires_grad


def _saved_bytes(fn) -> int:
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_activation_memory_does_not_grow_with_depth() -> None:
    """What autograd keeps for the backward pass: the reversible stack's two outputs,
    whatever its depth; plain blocks keep every layer's activations."""
    x = torch.randn(2, 32, 16, dtype=torch.float64, requires_grad=True)
    rev, plain = {}, {}
    for n in (2, 6):
        layers = _layers(n, lsh=False, dropout=0.0)
        rev[n] = _saved_bytes(lambda m=layers: reversible_stack(m, x, x))
        plain[n] = _saved_bytes(lambda m=layers: _plain(m, x))
    assert rev[2] == rev[6] == 2 * x.numel() * x.element_size()
    assert plain[6] > 2.5 * plain[2]


def test_chunked_feedforward_equals_the_plain_one() -> None:
    torch.manual_seed(0)
    ff = FeedForward(16, 64, "swiglu")
    cff = ChunkedFeedForward(16, 64, "swiglu", chunk_size=5)
    cff.load_state_dict(ff.state_dict())
    x = torch.randn(3, 23, 16, requires_grad=True)
    a, b = ff(x), cff(x)
    torch.testing.assert_close(a, b)
    ga = torch.autograd.grad(a.sum(), (x, ff.fc1.weight))
    gb = torch.autograd.grad(b.sum(), (x, cff.fc1.weight))
    for u, w in zip(ga, gb):
        torch.testing.assert_close(u, w)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        ChunkedFeedForward(16, 64, chunk_size=0)


def test_parity_with_transformers_reformer_layers(kit) -> None:
    """Two reversible LSH layers with chunked feed-forward against ``transformers``'
    ReformerLayer (the two streams, before Reformer's concatenating norm)."""
    tr = pytest.importorskip("transformers")
    from transformers.models.reformer.modeling_reformer import ReformerLayer

    cfg = tr.ReformerConfig(
        hidden_size=32,
        num_attention_heads=2,
        attention_head_size=16,
        feed_forward_size=48,
        hidden_act="relu",
        lsh_attn_chunk_length=8,
        num_hashes=2,
        num_buckets=4,
        hash_seed=5,
        is_decoder=True,
        attn_layers=["lsh", "lsh"],
        chunk_size_feed_forward=4,
        hidden_dropout_prob=0.0,
        lsh_attention_probs_dropout_prob=0.0,
        axial_pos_embds=False,
    )
    hf = nn.ModuleList([ReformerLayer(cfg, i) for i in range(2)]).double().eval()
    torch.manual_seed(2)
    for p in hf.parameters():
        nn.init.normal_(p, std=0.3)
    ours = nn.ModuleList()
    for h in hf:
        attn = LSHSelfAttention(32, 2, bucket_size=8, n_hashes=2, n_buckets=4, seed=5)
        ff = ChunkedFeedForward(32, 48, "relu", chunk_size=4)
        layer = ReversibleLayer(attn, ff, nn.LayerNorm(32), nn.LayerNorm(32), causal=True).double()
        sa, fw = h.attention, h.feed_forward
        with torch.no_grad():
            attn.qk_proj.weight.copy_(sa.self_attention.query_key.weight)
            attn.v_proj.weight.copy_(sa.self_attention.value.weight)
            attn.out_proj.weight.copy_(sa.output.dense.weight)
            layer.self_attn_norm.load_state_dict(sa.layer_norm.state_dict())
            layer.ff_norm.load_state_dict(fw.layer_norm.state_dict())
            ff.fc1.load_state_dict(fw.dense.dense.state_dict())
            ff.fc2.load_state_dict(fw.output.dense.state_dict())
        ours.append(layer.eval())
    x = torch.randn(2, 32, 32, dtype=torch.float64)
    a, h_ = x, x
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for layer in hf:
            out = layer(prev_attn_output=a, hidden_states=h_)
            a, h_ = out.attn_output, out.hidden_states
        y1, y2 = reversible_stack(ours, x, x)
    assert kit.diff(y1, a) <= kit.atol and kit.diff(y2, h_) <= kit.atol
