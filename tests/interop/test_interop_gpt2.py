"""GPT-2: parity with ``transformers`` (logits, hidden states, greedy tokens), the
``pytorch_model.bin`` and sharded paths, and to_hf round trips."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.generation import generate
from qkv.interop import from_hf, read_hf_weights, to_hf

T = pytest.importorskip("transformers")

V, EOS = 97, 96


def _hf(**kw):
    cfg = dict(
        vocab_size=V, n_embd=48, n_layer=2, n_head=4, n_positions=64,
        bos_token_id=EOS, eos_token_id=EOS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return T.GPT2LMHeadModel(T.GPT2Config(**{**cfg, **kw}))


def _parity(kit, hf, model):
    ids = torch.randint(0, V - 1, (3, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, :3] = False  # left padding, positions counted from the first real token
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = hf(
            input_ids=ids, attention_mask=mask.long(), position_ids=pos, output_hidden_states=True
        )
        logits = model(ids, padding_mask=mask)
        hidden = model.decoder(model.embed(ids, positions=pos), padding_mask=mask, positions=pos)
    assert kit.diff(logits[mask], ref.logits[mask]) <= kit.atol
    assert kit.diff(hidden[mask], ref.hidden_states[-1][mask]) <= kit.atol


@pytest.mark.parametrize("act", ["gelu_new", "gelu"])
def test_lm_parity(kit, act):
    hf = _hf(activation_function=act, n_inner=80)
    model = from_hf(kit.save(hf))
    assert isinstance(model, M.DecoderLM) and model.config.tie_embeddings
    assert model.config.d_ff == 80
    _parity(kit, hf, model)


def test_greedy_generation_identical_tokens(kit):
    hf = _hf()
    model = from_hf(kit.save(hf))
    ids = torch.randint(0, V - 1, (3, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids, dtype=torch.bool)
    ref = kit.hf_greedy(hf, ids, mask, 20, eos=EOS, seq2seq=False)
    got = generate(model, ids, max_new_tokens=20, eos_id=EOS, pad_id=0).tokens
    assert got == ref
    assert sum(map(len, got)) > 10  # the comparison is not vacuous


def test_pytorch_model_bin_with_tied_copy_and_old_buffers(kit):
    hf = kit.randomize(_hf())
    d = kit.tmp / "bin"
    d.mkdir()
    hf.config.save_pretrained(d)
    sd = hf.state_dict()  # holds lm_head.weight, a tied copy of transformer.wte.weight
    assert "lm_head.weight" in sd
    sd["transformer.h.0.attn.bias"] = torch.ones(1, 1, 64, 64).tril()  # a 4.x causal buffer
    torch.save(sd, d / "pytorch_model.bin")
    model = from_hf(d)
    _parity(kit, hf, model)


def test_sharded_safetensors(kit):
    hf = _hf()
    d = kit.save(hf, max_shard_size="40KB")
    assert (d / "model.safetensors.index.json").is_file()
    assert len(read_hf_weights(d)) == len(hf.state_dict()) - 1  # all but the tied lm_head
    _parity(kit, hf, from_hf(d))


@pytest.mark.parametrize("tie", [True, False])
def test_to_hf_round_trip_from_qkv(kit, tie):
    cfg = M.LMConfig(
        d_model=32, n_heads=4, d_ff=64, n_layers=2, vocab_size=61, max_len=32,
        tie_embeddings=tie, dropout=0.0, attn_dropout=0.0,
    )  # fmt: skip
    model = kit.randomize(M.build(cfg))
    d = to_hf(model, kit.tmp / "qkv-gpt2")
    hf = T.GPT2LMHeadModel.from_pretrained(d).eval()
    assert (hf.lm_head.weight is hf.transformer.wte.weight) == tie
    ids = torch.randint(0, 61, (2, 12))
    with torch.no_grad():
        assert kit.diff(model(ids), hf(input_ids=ids).logits) <= kit.atol
    back = from_hf(d)
    assert back.config == model.config
    for (n, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), n


def test_half_precision_checkpoint_loads_in_float32_unless_asked(kit):
    hf = kit.randomize(_hf())
    d = kit.save(hf.half(), randomize=False)
    model = from_hf(d)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.equal(model.embed.tok_emb.weight, hf.transformer.wte.weight.float())
    bf16 = from_hf(d, dtype=torch.bfloat16)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
