"""Transformer-XL (Dai et al. 2019): segment recurrence against an eager reference written
from the paper (relative sinusoids looked up per query/key pair, no shift trick), the
relative shift itself, stop-gradient into the memory, evaluation with memory against
recomputation, and the config's rules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import qkv.models as M
from qkv.models.transformer_xl import SegmentMemory, stream_nll
from qkv.pos import XLRelativeScore, shift_relative, sinusoid_embedding
from qkv.pos.xl import distances


def _model(placement: str = "pre", **kw) -> M.DecoderLM:
    torch.manual_seed(0)
    cfg = M.LMConfig(
        d_model=32,
        n_heads=4,
        d_ff=64,
        n_layers=2,
        vocab_size=50,
        max_len=64,
        pos="xl",
        mem_len=kw.pop("mem_len", 6),
        dropout=0.0,
        attn_dropout=0.0,
        norm_placement=placement,
        **kw,
    )
    model = M.DecoderLM(cfg).eval()
    with torch.no_grad():  # u and v start at zero: make them matter
        for name, p in model.named_parameters():
            if name.endswith((".u", ".v")):
                p.normal_(0, 0.5)
    return model


def _reference(model: M.DecoderLM, segments: list[Tensor], mem_len: int) -> list[Tensor]:
    """Eager Transformer-XL with the model's weights, from the paper's equations."""
    sd = {k: v for k, v in model.state_dict().items()}
    cfg = model.config
    h, d_h, d = cfg.n_heads, cfg.resolved_head_dim, cfg.d_model
    pre = cfg.norm_placement == "pre"

    def ln(x: Tensor, name: str) -> Tensor:
        return F.layer_norm(x, (d,), sd[f"{name}.weight"], sd[f"{name}.bias"], cfg.norm_eps)

    def attention(x: Tensor, mem: Tensor | None, i: int) -> Tensor:
        p = f"decoder.layers.{i}.self_attn."
        w, bias = sd[p + "qkv_proj.weight"], sd[p + "qkv_proj.bias"]
        ctx = x if mem is None else torch.cat([mem, x], 1)  # [SG(m); h]
        q = (x @ w[:d].T + bias[:d]).view(*x.shape[:2], h, d_h)  # (b, s, h, d_h)
        k = (ctx @ w[d : 2 * d].T + bias[d : 2 * d]).view(*ctx.shape[:2], h, d_h)
        v = (ctx @ w[2 * d :].T + bias[2 * d :]).view(*ctx.shape[:2], h, d_h)
        s, m = x.shape[1], ctx.shape[1] - x.shape[1]
        dist = (m + torch.arange(s))[:, None] - torch.arange(m + s)[None, :]  # (s, m + s)
        R = sinusoid_embedding(dist.flatten().double(), d).view(s, m + s, d).to(x.dtype)
        r = (R @ sd[p + "score.r_proj.weight"].T).view(s, m + s, h, d_h)  # W_R R_{i-j}
        u, vb = sd[p + "score.u"], sd[p + "score.v"]
        a = torch.einsum("bihd,bjhd->bhij", q + u, k)  # (a) + (c)
        bd = torch.einsum("bihd,ijhd->bhij", q + vb, r)  # (b) + (d)
        scores = (a + bd) / math.sqrt(d_h)
        causal = dist >= 0
        scores = scores.masked_fill(~causal, float("-inf"))
        out = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v).reshape(*x.shape[:2], d)
        return out @ sd[p + "out_proj.weight"].T + sd[p + "out_proj.bias"]

    def ff(x: Tensor, i: int) -> Tensor:
        p = f"decoder.layers.{i}.ff."
        hid = F.gelu(x @ sd[p + "fc1.weight"].T + sd[p + "fc1.bias"], approximate="tanh")
        return hid @ sd[p + "fc2.weight"].T + sd[p + "fc2.bias"]

    mems: list[Tensor | None] = [None] * cfg.n_layers
    outs = []
    for seg in segments:
        x = sd["embed.tok_emb.weight"][seg]
        new = []
        for i in range(cfg.n_layers):
            new.append(x)
            n1, n2 = f"decoder.layers.{i}.self_attn_norm", f"decoder.layers.{i}.ff_norm"
            if pre:
                mem = None if mems[i] is None else ln(mems[i], n1)
                x = x + attention(ln(x, n1), mem, i)
                x = x + ff(ln(x, n2), i)
            else:
                x = ln(x + attention(x, mems[i], i), n1)
                x = ln(x + ff(x, i), n2)
        mems = [n if m is None else torch.cat([m, n], 1)[:, -mem_len:] for m, n in zip(mems, new)]
        if pre:
            x = ln(x, "decoder.norm")
        outs.append(x @ sd["embed.tok_emb.weight"].T)
    return outs


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_segments_with_memory_match_the_eager_reference(placement: str) -> None:
    """Three segments of 5 with a memory of 6 (shorter than the context): the memory is
    truncated, so this is not the full-sequence pass."""
    model = _model(placement, mem_len=6).double()
    ids = torch.randint(0, 50, (2, 15))
    segments = [ids[:, i : i + 5] for i in range(0, 15, 5)]
    memory = model.make_memory()
    ours = [model(seg, segment_memory=memory) for seg in segments]
    ref = _reference(model, segments, 6)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    assert memory.length == 6 and all(s.shape == (2, 6, 32) for s in memory.states)


def test_full_memory_equals_the_whole_sequence() -> None:
    """Causal layers: with room for everything, recurrence is the full forward pass, and so
    is the training path that cuts an input into segments itself."""
    model = _model(mem_len=64)
    ids = torch.randint(0, 50, (2, 23))
    full = model(ids)
    memory = model.make_memory()
    parts = torch.cat([model(ids[:, i : i + 6], segment_memory=memory) for i in range(0, 23, 6)], 1)
    torch.testing.assert_close(parts, full, atol=1e-5, rtol=0)
    seg = _model(mem_len=64, segment_len=6)
    torch.testing.assert_close(seg(ids), full, atol=1e-5, rtol=0)


def test_no_gradient_flows_into_the_memory() -> None:
    model = _model(mem_len=8, tie_embeddings=False).train()  # tied: the head reaches every row
    emb = model.embed.tok_emb.weight
    memory = model.make_memory()
    first = torch.randint(0, 25, (1, 4))  # tokens of the first segment only
    second = torch.randint(25, 50, (1, 4))
    model(first, segment_memory=memory)
    assert all(not s.requires_grad for s in memory.states)
    model(second, segment_memory=memory).square().sum().backward()
    rows = emb.grad.abs().sum(-1)
    assert rows[first.unique()].sum() == 0  # the first segment is reached only through memory
    assert rows[second.unique()].sum() > 0


def test_padding_in_a_segment_is_remembered() -> None:
    model = _model(mem_len=8)
    ids = torch.randint(0, 50, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 2:4] = False
    memory = model.make_memory()
    model(ids[:, :4], padding_mask=mask[:, :4], segment_memory=memory)
    assert torch.equal(memory.mask, mask[:, :4])
    out = model(ids[:, 4:], segment_memory=memory)
    other = ids.clone()
    other[1, 2:4] = (ids[1, 2:4] + 1) % 50  # padding content must not matter
    memory2 = model.make_memory()
    model(other[:, :4], padding_mask=mask[:, :4], segment_memory=memory2)
    torch.testing.assert_close(model(other[:, 4:], segment_memory=memory2), out, atol=1e-6, rtol=0)


def test_stream_nll_with_memory_and_by_recomputation() -> None:
    model = _model(mem_len=64)
    ids = torch.randint(0, 50, (2, 30))
    logits = model(ids[:, :-1])
    want = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
    nll, n = stream_nll(model, ids, segment_len=7)
    assert n == 2 * 29 and math.isclose(nll, want, rel_tol=1e-5)
    nll2, n2 = stream_nll(model, ids, segment_len=7, reuse_memory=False, context=64)
    assert n2 == n and math.isclose(nll2, want, rel_tol=1e-5)
    nll3, _ = stream_nll(model, ids, segment_len=7, reuse_memory=False, context=64, stride=1)
    assert math.isclose(nll3, want, rel_tol=1e-5)
    with pytest.raises(ValueError, match="reuse_memory needs"):
        stream_nll(M.from_preset("gpt2-tiny"), ids, segment_len=4)


def test_shift_relative() -> None:
    s_q, s_k = 3, 5
    dist = distances(s_q, s_k)
    scores = dist.expand(2, s_q, -1).clone()  # each column holds its distance
    got = shift_relative(scores, s_k)
    want = (s_k - s_q + torch.arange(s_q))[:, None] - torch.arange(s_k)[None, :]
    assert torch.equal(got, want.float().expand(2, -1, -1))
    with pytest.raises(ValueError, match="columns"):
        shift_relative(torch.zeros(3, 4), 5)


def test_score_module_gradients() -> None:
    torch.manual_seed(0)
    score = XLRelativeScore(16, 2, 8)
    q, k = torch.randn(1, 2, 4, 8, requires_grad=True), torch.randn(1, 2, 6, 8, requires_grad=True)
    score(q, k).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in score.parameters())


def test_segment_memory() -> None:
    mem = SegmentMemory(2, 3)
    mem.update([torch.ones(1, 2, 4), torch.ones(1, 2, 4)], torch.ones(1, 2, dtype=torch.bool))
    mem.update([torch.zeros(1, 2, 4)] * 2, torch.zeros(1, 2, dtype=torch.bool))
    assert mem.length == 3 and mem.mask.tolist() == [[True, False, False]]
    with pytest.raises(ValueError, match="mem_len must be a positive int"):
        SegmentMemory(2, 0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mem_len": 8}, "needs pos='xl'"),
        ({"pos": "xl", "segment_len": 8}, "needs mem_len"),
        ({"pos": "xl", "mem_len": 8, "reversible": True}, "do not combine"),
        ({"pos": "xl", "attn_kind": "favor"}, "forms no score matrix"),
        ({"pos": "xl", "d_model": 35, "n_heads": 5}, "even d_model"),
    ],
)
def test_config_refusals(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        M.preset_config("gpt2-tiny", **overrides)


def test_counts_and_other_families() -> None:
    from qkv.models import memory as mm

    for preset in ("gpt2-tiny", "transformer-tiny", "bert-tiny"):
        cfg = M.preset_config(preset, pos="xl")
        with torch.device("meta"):
            model = M.build(cfg)
        assert mm.parameter_count(cfg) == M.count_parameters(model)
    model = M.from_preset("bert-tiny", pos="xl")
    out = model(torch.randint(1, 128, (2, 6)))
    assert out.last_hidden_state.shape == (2, 6, 32)
