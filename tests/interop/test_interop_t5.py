"""T5: parity with ``transformers`` for T5 (ReLU, tied, scaled output) and T5 v1.1 / Flan
(gated-GELU with the tanh GELU, untied ``lm_head``), greedy tokens, record_attention, and a
to_hf round trip."""

from __future__ import annotations

import pytest
import torch

import qkv.models as M
from qkv.generation import generate
from qkv.interop import from_hf, to_hf
from qkv.interop.hf.t5 import config_to_hf
from qkv.interp import record_attention

T = pytest.importorskip("transformers")

V, PAD, EOS = 91, 0, 1


def _hf(untie: bool = False, **kw):
    cfg = dict(
        vocab_size=V, d_model=48, d_kv=16, d_ff=72, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=20,
        dropout_rate=0.0, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
    )  # fmt: skip
    hf = T.T5ForConditionalGeneration(T.T5Config(**{**cfg, **kw}))
    if untie:  # transformers 5 always ties in memory; v1.1 checkpoints hold their own lm_head
        hf.lm_head.weight = torch.nn.Parameter(hf.shared.weight.detach().clone())
    return hf


def _batch():
    g = torch.Generator().manual_seed(7)
    src = torch.randint(2, V, (3, 30), generator=g)  # longer than max_distance: far buckets
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[0, 21:] = False
    src[~mask] = PAD
    return src, mask, torch.randint(2, V, (3, 25), generator=g)


VARIANTS = {
    "t5": dict(feed_forward_proj="relu"),
    "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, untie=True),
    "gated-silu": dict(feed_forward_proj="gated-silu", num_decoder_layers=3),
}
EXPECTED = {"t5": ("relu", True), "v1.1": ("geglu_tanh", False), "gated-silu": ("swiglu", True)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_conditional_generation_parity(kit, variant):
    hf = _hf(**VARIANTS[variant])
    model = from_hf(kit.save(hf))
    cfg = model.config
    act, tie = EXPECTED[variant]
    assert (cfg.activation, cfg.tie_embeddings) == (act, tie)
    assert cfg.output_scale == (48**-0.5 if hf.config.scale_decoder_outputs else 1.0)
    assert cfg.norm == "rms" and cfg.attn_scale == 1.0 and not cfg.bias and cfg.pos == "relative"
    src, mask, tgt = _batch()
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt)
        memory = model.encode(src, mask)
        logits = model.decode(tgt, memory, src_padding_mask=mask)
    assert kit.diff(memory[mask], ref.encoder_last_hidden_state[mask]) <= kit.atol
    assert kit.diff(logits, ref.logits) <= kit.atol


@pytest.mark.parametrize("variant", ["t5", "v1.1"])
def test_greedy_generation_identical_tokens(kit, variant):
    hf = _hf(**VARIANTS[variant])
    model = from_hf(kit.save(hf))
    src, mask, _ = _batch()
    ref = kit.hf_greedy(hf, src, mask, 24, eos=EOS, seq2seq=True)
    got = generate(
        model, src, padding_mask=mask, max_new_tokens=24, bos_id=PAD, eos_id=EOS, pad_id=PAD
    )
    assert got.tokens == ref and sum(map(len, ref)) > 10


def test_record_attention_on_loaded_t5(kit):
    hf = _hf(attn_implementation="eager")
    model = from_hf(kit.save(hf))
    src, mask, tgt = _batch()
    with torch.no_grad():
        ref = hf(
            input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt, output_attentions=True
        )
        with record_attention(model, dtype=None) as rec:  # float32, as transformers'
            model(src, tgt, src_padding_mask=mask)
    assert rec.kinds == ("encoder_self", "decoder_self", "cross")
    enc, dec, cross = (rec.stack(k) for k in rec.kinds)  # (layers, b, h, s_q, s_k)
    keys = mask[:, None, None, :]
    assert (
        kit.diff(enc[:, 0], torch.stack(ref.encoder_attentions)[:, 0]) <= kit.atol
    )  # unpadded row
    assert kit.diff(dec, torch.stack(ref.decoder_attentions)) <= kit.atol
    assert (
        kit.diff(
            cross.masked_fill(~keys, 0), torch.stack(ref.cross_attentions).masked_fill(~keys, 0)
        )
        <= kit.atol
    )


def test_to_hf_round_trip_from_qkv(kit):
    cfg = M.Seq2SeqConfig(
        d_model=32, n_heads=4, head_dim=12, d_ff=48, n_encoder_layers=2, n_decoder_layers=2,
        vocab_size=57, pad_token_id=0, activation="geglu_tanh", norm="rms", norm_eps=1e-6,
        norm_placement="pre", bias=False, pos="relative", rel_buckets=16, rel_max_distance=40,
        attn_scale=1.0, scale_embeddings=False, tie_embeddings=False, dropout=0.0, max_len=512,
    )  # fmt: skip
    model = kit.randomize(M.build(cfg))
    d = to_hf(model, kit.tmp / "qkv-t5")
    hf = T.T5ForConditionalGeneration.from_pretrained(d).eval()
    assert hf.lm_head.weight.data_ptr() != hf.shared.weight.data_ptr()
    src, _, tgt = _batch()
    src, tgt = src % 57, tgt % 57
    with torch.no_grad():
        assert (
            kit.diff(model(src, tgt), hf(input_ids=src, decoder_input_ids=tgt).logits) <= kit.atol
        )


# -- the T5 presets: the same class and config load T5 checkpoints ------------------------
ARCHITECTURE = (
    "d_model", "n_heads", "head_dim", "d_ff", "n_encoder_layers", "n_decoder_layers",
    "vocab_size", "activation", "norm", "norm_eps", "norm_placement", "bias", "pos",
    "rel_buckets", "rel_max_distance", "attn_scale", "share_embeddings", "tie_embeddings",
    "scale_embeddings", "embed_norm", "output_scale", "pad_token_id",
)  # fmt: skip


def test_t5_small_preset_is_the_released_t5_small() -> None:
    cfg = M.preset_config("t5-small")
    ref = T.T5Config()  # transformers' defaults are t5-small's
    hf = config_to_hf(cfg)
    for key in ("d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads"):
        assert hf[key] == getattr(ref, key), key
    for key in ("vocab_size", "relative_attention_num_buckets", "layer_norm_epsilon"):
        assert hf[key] == getattr(ref, key), key
    assert hf["relative_attention_max_distance"] == ref.relative_attention_max_distance
    assert (hf["feed_forward_proj"], hf["tie_word_embeddings"]) == ("relu", True)
    assert hf["scale_decoder_outputs"] and ref.scale_decoder_outputs


@pytest.mark.parametrize("name", ["t5-tiny", "t5-mini"])
def test_t5_presets_load_t5_weights_with_parity(kit, name) -> None:
    cfg = M.preset_config(name, dropout=0.0, attn_dropout=0.0, ff_dropout=0.0)
    hf = _hf_of(cfg)
    loaded = from_hf(kit.save(hf))
    for key in ARCHITECTURE:
        assert getattr(loaded.config, key) == getattr(cfg, key), key
    model = M.from_preset(name, dropout=0.0, attn_dropout=0.0, ff_dropout=0.0).eval()
    assert type(model) is type(loaded) is M.Seq2SeqTransformer
    model.load_state_dict(loaded.state_dict())  # strict: the same parameters, same shapes
    src, mask, tgt = _batch()
    src, tgt = src % cfg.vocab_size, tgt % cfg.vocab_size
    src[~mask] = PAD
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        assert kit.diff(model(src, tgt, src_padding_mask=mask), ref) <= kit.atol


def _hf_of(cfg: M.Seq2SeqConfig):
    fields = {
        k: v for k, v in config_to_hf(cfg).items() if k not in ("model_type", "architectures")
    }
    return T.T5ForConditionalGeneration(T.T5Config(**fields)).eval()


def test_t5_init_matches_transformers_init(kit) -> None:
    """``init="t5"`` draws every tensor with the standard deviation of ``transformers``'
    ``T5PreTrainedModel._init_weights`` (the independent reference): weights converted from a
    freshly initialised HF model have the same per-tensor spread as a freshly built qkv one."""
    big = {"d_model": 128, "head_dim": 32, "d_ff": 512, "vocab_size": 512}
    cfg = M.preset_config("t5-tiny", **big, output_scale=128**-0.5)
    torch.manual_seed(0)
    ours = M.build(cfg)
    theirs = from_hf(kit.save(_hf_of(cfg), randomize=False))
    for name, p in ours.named_parameters():
        q = theirs.get_parameter(name)
        if name.endswith("qkv_proj.weight"):
            rows = [p[: p.shape[0] // 3], p[p.shape[0] // 3 :]]  # q, then k and v
            ref = [q[: q.shape[0] // 3], q[q.shape[0] // 3 :]]
        else:
            rows, ref = [p], [q]
        for a, b in zip(rows, ref):
            if a.ndim == 1:  # RMSNorm weights: ones on both sides
                assert torch.equal(a, b), name
            else:
                assert a.std().item() == pytest.approx(b.std().item(), rel=0.12), name
