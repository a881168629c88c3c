"""XLNet: parity with ``transformers``' ``XLNetLMHeadModel`` (content stream, two-stream
attention with a factorization order and partial prediction, segments, padding, causal
``attn_type``), the weight and config maps both ways, and permutation-LM training."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.interop import HFConversionError, from_hf, to_hf
from qkv.models.xlnet import permutation_targets

T = pytest.importorskip("transformers")

V = 50


def _hf(**kw):
    cfg = dict(
        vocab_size=V, d_model=32, n_layer=2, n_head=4, d_inner=64, dropout=0.0, mem_len=None,
    )  # fmt: skip
    return T.XLNetLMHeadModel(T.XLNetConfig(**{**cfg, **kw}))


def _inputs(b: int = 2, s: int = 9):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (b, s), generator=g)
    segments = torch.tensor([[0] * 5 + [1] * (s - 5)] * b)
    return ids, segments


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_content_stream_parity(kit, act):
    hf = _hf(ff_activation=act)
    model = from_hf(kit.save(hf))
    assert isinstance(model, M.XLNetLM) and model.config.tie_embeddings
    ids, segments = _inputs()
    real = torch.ones(2, 9, dtype=torch.bool)
    real[1, 6:] = False
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=segments, attention_mask=real.long(), use_mems=False)
        out = model(ids, token_type_ids=segments, padding_mask=real)
    assert kit.diff(out[real], ref.logits[real]) <= kit.atol


@pytest.mark.parametrize("n_predict", [1, 3])
def test_two_stream_parity_with_a_factorization_order(kit, n_predict):
    """perm_mask = not factorization_mask; the query stream's logits of the targets."""
    hf = _hf()
    model = from_hf(kit.save(hf))
    ids, segments = _inputs()
    perm = permutation_targets(2, 9, n_predict, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(
            input_ids=ids,
            token_type_ids=segments,
            perm_mask=(~perm.factorization_mask).float(),
            target_mapping=perm.target_mapping,
            use_mems=False,
        ).logits
        out = model(
            ids,
            token_type_ids=segments,
            factorization_mask=perm.factorization_mask,
            target_mapping=perm.target_mapping,
        )
    assert out.shape == (2, n_predict, V)
    assert kit.diff(out, ref) <= kit.atol


def test_causal_attention_type_parity(kit):
    """``attn_type="uni"`` (batch 1: transformers cannot add a batch of perm masks to its
    causal mask)."""
    hf = _hf(attn_type="uni")
    model = from_hf(kit.save(hf))
    assert model.config.attn_type == "uni"
    ids, _ = _inputs(1)
    perm = permutation_targets(1, 9, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert kit.diff(model(ids), hf(input_ids=ids, use_mems=False).logits) <= kit.atol
        ref = hf(
            input_ids=ids,
            perm_mask=(~perm.factorization_mask).float(),
            target_mapping=perm.target_mapping,
            use_mems=False,
        ).logits
        out = model(
            ids, factorization_mask=perm.factorization_mask, target_mapping=perm.target_mapping
        )
    assert kit.diff(out, ref) <= kit.atol


@pytest.mark.parametrize("tie", [True, False])
def test_to_hf_round_trip_from_qkv(kit, tie):
    cfg = M.XLNetConfig(
        d_model=32, n_heads=4, d_ff=48, n_layers=2, vocab_size=V, pad_token_id=0,
        tie_embeddings=tie, dropout=0.0, attn_dropout=0.0,
    )  # fmt: skip
    model = kit.randomize(M.build(cfg))
    d = to_hf(model, kit.tmp / "qkv-xlnet")
    hf = T.XLNetLMHeadModel.from_pretrained(d).eval()
    ids, segments = _inputs()
    perm = permutation_targets(2, 9, 2, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = hf(
            input_ids=ids,
            token_type_ids=segments,
            perm_mask=(~perm.factorization_mask).float(),
            target_mapping=perm.target_mapping,
            use_mems=False,
        ).logits
        out = model(
            ids,
            token_type_ids=segments,
            factorization_mask=perm.factorization_mask,
            target_mapping=perm.target_mapping,
        )
    assert kit.diff(out, ref) <= kit.atol
    back = from_hf(d)
    assert back.config == model.config
    for (n, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), n


def test_unsupported_configs_are_listed(kit):
    with pytest.raises(HFConversionError, match="bi_data=True.*\n.*clamp_len=8"):
        from_hf(kit.save(_hf(bi_data=True, clamp_len=8)))


def test_permutation_targets():
    real = torch.ones(3, 8, dtype=torch.bool)
    real[2, 5:] = False
    p = permutation_targets(3, 8, 2, padding_mask=real, generator=torch.Generator().manual_seed(0))
    assert p.factorization_mask.shape == (3, 8, 8) and p.target_mapping.shape == (3, 2, 8)
    for b in range(3):
        tgt = set(p.targets[b].tolist())
        assert len(tgt) == 2 and all(real[b, t] for t in tgt)
        fm = p.factorization_mask[b]
        context = [i for i in range(8) if real[b, i] and i not in tgt]
        assert not any(fm[t, t] for t in tgt)  # a target's query stream never sees its token
        for i in range(8):
            for j in context:  # everyone sees the context ...
                assert fm[i, j] or i == j
            assert not fm[i, ~real[b]].any()  # ... and nobody the padding
        t0, t1 = p.targets[b].tolist()  # t1 comes after t0 in the order
        assert fm[t1, t0] and not fm[t0, t1]
        assert not any(fm[j, t] for j in context for t in tgt)  # context never sees targets
    torch.testing.assert_close(p.target_mapping.sum(-1), torch.ones(3, 2))


def test_permutation_lm_learns():
    """The targets can be read off the context (each row repeats one token): a few steps of
    the permutation loss bring it well down."""
    torch.manual_seed(0)
    cfg = M.XLNetConfig(
        d_model=32, n_heads=4, d_ff=64, n_layers=2, vocab_size=20, dropout=0.0, attn_dropout=0.0
    )
    model = M.build(cfg).train()
    ids = torch.randint(0, 20, (8, 1)).repeat(1, 12)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss = model.permutation_loss(ids, n_predict=3, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
