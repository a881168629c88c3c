"""LSH attention (Reformer): the chunked, sorted computation against a dense reference of
the same function (forward and backward, float64), parity with ``transformers``'
``LSHSelfAttention`` given the same rotations, and the module's rules (self-attention only
when alone, padding, causal, caches, fresh or seeded rotations)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor

from qkv.attn import KVCache
from qkv.attn.lsh import (
    SELF_SCORE,
    LSHSelfAttention,
    default_buckets,
    draw_rotations,
    hash_buckets,
    lsh_attention,
)


def _dense_lsh(
    qk: Tensor, v: Tensor, rot: Tensor, c: int, causal: bool, pm: Tensor | None
) -> Tensor:
    """The eager reference: per round, the (s, s) matrix of how many times key j sits in
    query i's window (its chunk and the one before, over every round's sorted slots),
    ordinary attention with log-multiplicities, rounds weighted by their log-sum-exp."""
    b, h, s, d = qk.shape
    buckets, n = hash_buckets(qk, rot, pm)  # (b, h, R, s)
    rounds = rot.shape[2]
    length = rounds * s
    key = (buckets + torch.arange(rounds)[:, None] * n).flatten(2) * length + torch.arange(length)
    order = key.argsort(-1)
    chunk = torch.empty_like(order).scatter_(2, order, torch.arange(length).expand_as(order) // c)
    chunk = chunk.view(b, h, rounds, s)  # chunk of each (round, position) slot
    n_c = length // c
    qc = chunk[:, :, :, :, None, None]  # (b, h, R, s_i, 1, 1) the query's chunk
    kc = chunk.permute(0, 1, 3, 2)[:, :, None, None, :, :]  # (b, h, 1, 1, s_j, R') key slots
    count = ((kc == qc).long() + (kc == (qc - 1) % n_c).long()).sum(-1)  # (b, h, R, s, s)
    unit = qk * torch.rsqrt(qk.square().mean(-1, keepdim=True) + 1e-6) / math.sqrt(d)
    dots = (qk @ unit.transpose(-2, -1))[:, :, None]  # (b, h, 1, s, s)
    i, j = torch.arange(s)[:, None], torch.arange(s)[None, :]
    allowed = count > 0
    if causal:
        allowed = allowed & (i >= j)
    if pm is not None:
        allowed = allowed & pm[:, None, None, None, :]
    scores = torch.where(allowed, dots, float("-inf"))
    scores = torch.where(i == j, torch.full_like(scores, SELF_SCORE), scores)
    scores = scores + torch.log(count.clamp_min(1).to(scores.dtype))
    scores = torch.where(count > 0, scores, float("-inf"))
    out = torch.softmax(scores, -1) @ v[:, :, None]  # (b, h, R, s, d_v)
    lse = torch.logsumexp(scores, -1, keepdim=True)  # (b, h, R, s, 1)
    return (out * torch.softmax(lse, dim=2)).sum(2)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rounds", [1, 3])
@pytest.mark.parametrize("padded", [False, True])
def test_chunked_lsh_matches_the_dense_reference(causal: bool, rounds: int, padded: bool) -> None:
    g = torch.Generator().manual_seed(0)
    qk = torch.randn(2, 2, 32, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 32, 5, generator=g, dtype=torch.float64, requires_grad=True)
    rot = draw_rotations(2, 8, rounds, 4, generator=g, dtype=torch.float64)
    pm = None
    if padded:
        pm = torch.ones(2, 32, dtype=torch.bool)
        pm[1, 27:] = False
    out = lsh_attention(qk, v, rot, bucket_size=8, causal=causal, padding_mask=pm)
    ref = _dense_lsh(qk, v, rot, 8, causal, pm)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    grad = torch.randn_like(out)
    for a, b in zip(
        torch.autograd.grad(out, (qk, v), grad), torch.autograd.grad(ref, (qk, v), grad)
    ):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


@pytest.mark.parametrize("group", [1, 3, 64])
@pytest.mark.parametrize("rounds", [1, 2])
@pytest.mark.parametrize(("causal", "padded"), [(True, False), (False, True)])
def test_chunks_computed_a_few_at_a_time(
    monkeypatch, group: int, rounds: int, causal: bool, padded: bool
) -> None:
    """The scores are computed (and recomputed in the backward pass) a group of chunks at
    a time, groups of 1 and 3 chunks cutting the 6 chunks of a round anywhere: the same
    answer as the dense reference, forward and backward."""
    import qkv.attn._lsh_chunked as chunked

    monkeypatch.setattr(chunked, "GROUP_ELEMENTS", group * 2 * 2 * 4 * 4)  # b h 2c c
    g = torch.Generator().manual_seed(2)
    qk = torch.randn(1, 2, 24, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 24, 4, generator=g, dtype=torch.float64, requires_grad=True)
    rot = draw_rotations(2, 8, rounds, 4, generator=g, dtype=torch.float64)
    pm = None
    if padded:
        pm = torch.arange(24)[None] < 19
    out = lsh_attention(qk, v, rot, bucket_size=4, causal=causal, padding_mask=pm)
    ref = _dense_lsh(qk, v, rot, 4, causal, pm)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    for a, b in zip(
        torch.autograd.grad(out, (qk, v), grad), torch.autograd.grad(ref, (qk, v), grad)
    ):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


def test_saved_memory_is_linear_in_length() -> None:
    """The backward keeps qk, v, the sorted positions, the output and two numbers per
    position: nothing of the (n_hashes s, 2 bucket_size) scores, weights or windows."""
    s, c, rounds = 2048, 64, 4
    qk = torch.randn(1, 2, s, 16, requires_grad=True)
    v = torch.randn(1, 2, s, 16, requires_grad=True)
    rot = draw_rotations(2, 16, rounds, default_buckets(s, c))
    saved: list[int] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = lsh_attention(qk, v, rot, bucket_size=c, causal=True)
    io = qk.numel() * qk.element_size()
    assert sum(saved) <= 4 * io + 2 * s * rounds * 8 + 2 * 4 * s * 2  # + positions, M, log Z
    assert max(saved) <= io
    out.sum().backward()
    assert torch.isfinite(qk.grad).all() and torch.isfinite(v.grad).all()


def test_rows_alone_in_every_round_are_exact_in_float32() -> None:
    """Causal position 0 sees only itself in every round (score -1e5): its output is its
    value and its gradient passes through unchanged, in float32 too (the backward
    recomputes its weights from the row maximum and the normalizer apart)."""
    g = torch.Generator().manual_seed(4)
    qk = torch.randn(1, 1, 32, 8, generator=g)
    v = torch.randn(1, 1, 32, 4, generator=g, requires_grad=True)
    rot = draw_rotations(1, 8, 4, 4, generator=g)
    out = lsh_attention(qk, v, rot, bucket_size=4, causal=True)
    assert torch.equal(out[0, 0, 0], v[0, 0, 0].detach())
    (grad,) = torch.autograd.grad(out[0, 0, 0].sum(), v)
    assert torch.equal(grad[0, 0, 0], torch.ones(4))
    assert grad[0, 0, 1:].abs().max() <= 1e-6


def test_dropout_backward_matches_its_forward() -> None:
    """With dropout, the backward redraws the forward's masks: gradcheck of one draw
    (float64; the global seed fixed before each call)."""
    g = torch.Generator().manual_seed(5)
    qk = torch.randn(1, 2, 16, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 16, 3, generator=g, dtype=torch.float64, requires_grad=True)
    rot = draw_rotations(2, 4, 2, 4, generator=g, dtype=torch.float64)

    def f(qk: Tensor, v: Tensor) -> Tensor:
        torch.manual_seed(0)
        return lsh_attention(qk, v, rot, bucket_size=4, causal=True, dropout_p=0.3)

    assert not torch.equal(f(qk, v), lsh_attention(qk, v, rot, bucket_size=4, causal=True))
    assert torch.autograd.gradcheck(f, (qk, v))


def test_hashing_a_few_positions_at_a_time_is_argmax(monkeypatch) -> None:
    import qkv.attn._lsh_hash as lsh_hash

    g = torch.Generator().manual_seed(6)
    qk, rot = torch.randn(2, 3, 40, 8, generator=g), draw_rotations(3, 8, 2, 8, generator=g)
    rotated = torch.einsum("bhsd,hdnr->bhnsr", qk, rot)
    want = torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)
    monkeypatch.setattr(lsh_hash, "HASH_ELEMENTS", 2 * 3 * 2 * 4 * 7)  # 7 positions a time
    assert torch.equal(hash_buckets(qk, rot)[0], want)


def test_a_position_alone_attends_to_itself() -> None:
    qk, v = torch.randn(1, 1, 6, 4), torch.randn(1, 1, 6, 3)
    out = lsh_attention(qk, v, draw_rotations(1, 4, 1, 2), bucket_size=8, causal=True)
    torch.testing.assert_close(out[0, 0, 0], v[0, 0, 0])  # nothing else before position 0
    # elsewhere, the position itself gets no weight: outputs are mixtures of the others
    w = torch.softmax(
        qk[0, 0, 3]
        @ (qk[0, 0, :3] / qk[0, 0, :3].pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() / 2).T,
        -1,
    )
    torch.testing.assert_close(out[0, 0, 3], w @ v[0, 0, :3])


def test_lengths_that_are_not_whole_chunks_are_padded() -> None:
    g = torch.Generator().manual_seed(1)
    qk, v = torch.randn(1, 2, 30, 8, generator=g), torch.randn(1, 2, 30, 8, generator=g)
    rot = draw_rotations(2, 8, 2, 4, generator=g)
    out = lsh_attention(qk, v, rot, bucket_size=8)
    pm = torch.arange(32)[None] < 30
    pad = torch.nn.functional.pad
    want = lsh_attention(
        pad(qk, (0, 0, 0, 2)), pad(v, (0, 0, 0, 2)), rot, bucket_size=8, padding_mask=pm
    )
    torch.testing.assert_close(out, want[:, :, :30])


def test_default_buckets() -> None:
    assert [default_buckets(s, 64) for s in (64, 128, 256, 1000, 4096)] == [2, 4, 8, 16, 128]


# ---------------------------------------------------------------------------------------
# parity with transformers
# ---------------------------------------------------------------------------------------
def _hf_pair(causal: bool, rounds: int, n_buckets: int | None, chunk: int = 8):
    tr = pytest.importorskip("transformers")
    from transformers.models.reformer.modeling_reformer import ReformerAttention

    cfg = tr.ReformerConfig(
        hidden_size=32,
        num_attention_heads=2,
        attention_head_size=16,
        lsh_attn_chunk_length=chunk,
        num_hashes=rounds,
        num_buckets=n_buckets,
        hash_seed=7,
        is_decoder=causal,
        attn_layers=["lsh"],
        lsh_attention_probs_dropout_prob=0.0,
        max_position_embeddings=64,
        axial_pos_embds=False,
    )
    hf = ReformerAttention(cfg, 0).double().eval()
    torch.manual_seed(3)
    for p in hf.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours = (
        LSHSelfAttention(32, 2, bucket_size=chunk, n_hashes=rounds, n_buckets=n_buckets, seed=7)
        .double()
        .eval()
    )
    with torch.no_grad():
        ours.qk_proj.weight.copy_(hf.self_attention.query_key.weight)
        ours.v_proj.weight.copy_(hf.self_attention.value.weight)
        ours.out_proj.weight.copy_(hf.output.dense.weight)
    return hf, ours


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rounds", [1, 2, 4])
@pytest.mark.parametrize("padded", [False, True])
def test_parity_with_transformers_lsh_self_attention(
    causal: bool, rounds: int, padded: bool, kit
) -> None:
    """Same weights and the rotations ``transformers`` draws from ``hash_seed`` (our
    ``seed`` draws them alike): outputs and gradients agree. Float64: in float32 both
    round the log-sum-exp of a row that sees only itself (at -1e5) differently."""
    hf, ours = _hf_pair(causal, rounds, 4)
    x = torch.randn(2, 32, 32, dtype=torch.float64, requires_grad=True)
    am = torch.ones(2, 32, dtype=torch.long)
    if padded:
        am[1, 26:] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = hf.output(hf.self_attention(x, attention_mask=am if padded else None).hidden_states)
    out = ours(x, is_causal=causal, padding_mask=am.bool() if padded else None)
    real = am.bool()
    assert kit.diff(out[real], ref[real]) <= kit.atol
    grad = torch.randn_like(out) * real[..., None]
    ours_g = torch.autograd.grad(out, (x, ours.qk_proj.weight, ours.v_proj.weight), grad)
    hf_g = torch.autograd.grad(
        ref, (x, hf.self_attention.query_key.weight, hf.self_attention.value.weight), grad
    )
    for a, b in zip(ours_g, hf_g):
        assert kit.diff(a, b) <= kit.atol


@pytest.mark.parametrize(("s", "n_buckets"), [(64, None), (8, 4), (6, 4)])
def test_parity_with_transformers_other_paths(s: int, n_buckets: int | None, kit) -> None:
    """``num_buckets=None`` (set from the length) and sequences within one chunk."""
    hf, ours = _hf_pair(True, 2, n_buckets)
    x = torch.randn(1, s, 32, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = hf.output(hf.self_attention(x).hidden_states)
    assert kit.diff(ours(x, is_causal=True), ref) <= kit.atol


# ---------------------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------------------
def test_cached_decoding_matches_the_full_pass_within_one_chunk() -> None:
    torch.manual_seed(0)
    m = LSHSelfAttention(16, 2, bucket_size=16, n_buckets=4).eval()
    x = torch.randn(2, 12, 16)
    full = m(x, is_causal=True)
    cache = KVCache(2, 2, 12, 8)
    steps = [m(x[:, :4], is_causal=True, cache=cache)]
    steps += [m(x[:, t : t + 1], is_causal=True, cache=cache) for t in range(4, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=0)


def test_rotations_are_fresh_unless_seeded() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 64, 16)
    m = LSHSelfAttention(16, 2, bucket_size=8, n_buckets=8)
    assert not torch.equal(m(x), m(x))  # new buckets every call
    m.seed = 3
    assert torch.equal(m(x), m(x))


def test_every_parameter_learns() -> None:
    torch.manual_seed(0)
    m = LSHSelfAttention(16, 2, bucket_size=4, n_hashes=2, bias=True)
    m(torch.randn(2, 16, 16), is_causal=True).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_refusals() -> None:
    m = LSHSelfAttention(16, 2)
    x = torch.randn(1, 4, 16)
    with pytest.raises(ValueError, match="cross-attention"):
        m(x, x)
    with pytest.raises(ValueError, match="a mask"):
        m(x, mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="return_weights"):
        m(x, return_weights=True)
    with pytest.raises(ValueError, match="padding_mask must be"):
        m(x, padding_mask=torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="n_buckets must be an even"):
        LSHSelfAttention(16, 2, n_buckets=3)
    with pytest.raises(ValueError, match="rotations must be"):
        lsh_attention(
            torch.randn(1, 2, 16, 8),
            torch.randn(1, 2, 16, 8),
            torch.randn(3, 8, 1, 2),
            bucket_size=4,
        )
