"""save_pretrained / qkv.load: every family round-trips bit-exactly; trainer checkpoints and
run directories load; strict errors list every problem; tokenizers travel along."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import qkv
import qkv.models as M
from qkv.data.tokenizers import CharTokenizer, Tokenizer
from qkv.models.build import MODEL_CLASSES
from qkv.training.checkpoint import save_checkpoint, update_latest

SMALL: dict[str, Any] = {
    "d_model": 32,
    "n_heads": 4,
    "d_ff": 64,
    "dropout": 0.0,
    "attn_dropout": 0.0,
}


def _s2s(**kw: Any) -> M.Seq2SeqTransformer:
    base = {"vocab_size": 50, "n_encoder_layers": 2, "n_decoder_layers": 2, "max_len": 32}
    return M.Seq2SeqTransformer(M.Seq2SeqConfig(**{**SMALL, **base, **kw}))


def _lm(**kw: Any) -> M.DecoderLM:
    return M.DecoderLM(
        M.LMConfig(**{**SMALL, "vocab_size": 50, "n_layers": 2, "max_len": 32, **kw})
    )


def _bert(**kw: Any) -> M.EncoderModel:
    base = {"vocab_size": 50, "n_layers": 2, "max_len": 32}
    return M.EncoderModel(M.EncoderConfig(**{**SMALL, **base, **kw}))


def _vit(**kw: Any) -> M.ViT:
    base = {"image_size": 16, "patch_size": 4, "n_classes": 5, "n_layers": 2}
    return M.ViT(M.ViTConfig(**{**SMALL, **base, **kw}))


def _pruned() -> M.DecoderLM:
    model = _lm()
    model.prune_heads({0: [1, 3], 1: [0]})
    return model


WHISPER: dict[str, Any] = {
    **SMALL,
    "vocab_size": 37,
    "n_encoder_layers": 1,
    "n_decoder_layers": 1,
    "max_len": 16,
    "n_mels": 8,
    "max_frames": 20,
    "conv_strides": [2, 2],
}
MODELS = {
    "seq2seq-shared": lambda: _s2s(),
    "seq2seq-unshared-untied": lambda: _s2s(
        share_embeddings=False, tie_embeddings=False, tgt_vocab_size=37, output_bias=True
    ),
    "seq2seq-unshared-tied": lambda: _s2s(share_embeddings=False, tgt_vocab_size=37),
    "seq2seq-relative-pre-rms": lambda: _s2s(pos="relative", norm_placement="pre", norm="rms"),
    "lm-tied": lambda: _lm(),
    "lm-untied-gqa": lambda: _lm(tie_embeddings=False, n_kv_heads=2),
    **{f"lm-{pos}": (lambda pos=pos: _lm(pos=pos)) for pos in M.POS_KINDS},
    "lm-pruned": _pruned,
    "bert-mlm-classifier": lambda: _bert(n_classes=3),
    "bert-untied-no-heads": lambda: _bert(mlm_head=False, pooler=False, tie_embeddings=False),
    "vit": lambda: _vit(),
    "swin": lambda: M.build(M.preset_config("swin-tiny", image_size=16, window_size=2)),
    "detr": lambda: M.build(M.preset_config("detr-tiny", image_size=16)),
    "lm-bf16": lambda: _lm().to(torch.bfloat16),
    "lm-favor": lambda: _lm(attn_kind="favor", favor_features=16),
    "lm-lsh-reversible-chunked": lambda: _lm(
        attn_kind="lsh", lsh_bucket_size=4, lsh_seed=3, reversible=True, ff_chunk_size=3
    ),
    "lm-xl": lambda: _lm(pos="xl", mem_len=8, segment_len=8),
    "captioner": lambda: M.Captioner(
        M.CaptionerConfig(**SMALL, image_size=16, patch_size=4, vocab_size=50, max_len=16)
    ),
    "xlnet": lambda: M.XLNetLM(M.XLNetConfig(**SMALL, vocab_size=50, n_layers=2, pad_token_id=0)),
    "clip": lambda: M.build(M.preset_config("clip-tiny", vocab_size=50, eos_token_id=49)),
    "llava": lambda: M.build(M.preset_config("llava-tiny", vocab_size=50)),
    "whisper": lambda: M.build(M.WhisperConfig(**WHISPER)),
}


def _outputs(model: nn.Module) -> list[torch.Tensor]:
    """Every output of a fixed forward pass, as tensors."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if isinstance(model, M.Whisper):  # log-mel frames in
            feats = torch.randn(2, 20, model.config.n_mels, generator=g)
            mask = torch.arange(20)[None] < torch.tensor([[20], [13]])
            return [model(feats, torch.randint(4, 37, (2, 5), generator=g), src_padding_mask=mask)]
        if isinstance(model, M.Seq2SeqTransformer):
            src = torch.randint(4, 37, (2, 7), generator=g)
            tgt = torch.randint(4, 37, (2, 5), generator=g)
            mask = torch.ones(2, 7, dtype=torch.bool)
            mask[1, 5:] = False
            return [model(src, tgt, src_padding_mask=mask)]
        if isinstance(model, (M.DecoderLM, M.XLNetLM)):
            return [model(torch.randint(0, 50, (2, 9), generator=g))]
        if isinstance(model, M.EncoderModel):
            ids = torch.randint(1, 50, (2, 8), generator=g)
            out = model(ids, padding_mask=ids != 0)
            return [t for t in dataclasses.astuple(out) if t is not None]
        if isinstance(model, M.CLIP):
            ids = torch.randint(0, 49, (3, 6), generator=g)
            ids[:, -1] = model.config.eos_token_id
            out = model(torch.rand(2, 1, 16, 16, generator=g), ids)
            return [out.logits_per_image, out.image_embeds, out.text_embeds]
        if isinstance(model, M.Llava):
            ids = torch.randint(0, 50, (2, 6), generator=g)
            return [model(torch.rand(2, 1, 16, 16, generator=g), ids)]
        if isinstance(model, M.Captioner):
            images = torch.rand(2, 1, 16, 16, generator=g)
            return [model(images, torch.randint(1, 50, (2, 6), generator=g))]
        if isinstance(model, M.DETR):
            out = model(torch.rand(2, model.config.in_channels, 16, 16, generator=g))
            return [out.logits, out.boxes]
        return [model(torch.randn(2, 3, 16, 16, generator=g))]


def _ties(model: nn.Module) -> list[list[str]]:
    """Groups of parameter names that are one Parameter object."""
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return sorted(g for g in groups.values() if len(g) > 1)


def _assert_same_model(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k
    assert type(a) is type(b) and a.config == b.config
    for x, y in zip(_outputs(a.eval()), _outputs(b.eval())):
        assert torch.equal(x, y)


def test_the_round_trip_table_covers_every_family() -> None:
    covered = {type(make()) for make in MODELS.values()}
    assert covered >= set(MODEL_CLASSES.values()), set(MODEL_CLASSES.values()) - covered


@pytest.mark.parametrize("name", list(MODELS))
def test_save_pretrained_then_load_is_bit_exact(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MODELS[name]()
    assert model.save_pretrained(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    back = qkv.load(tmp_path)
    assert not back.training
    _assert_same_model(model, back)
    assert _ties(back) == _ties(model)  # tied again, not equal copies


def test_tied_weights_are_stored_once_and_tied_after_load(tmp_path: Path) -> None:
    model = _lm()
    model.save_pretrained(tmp_path)
    stored = load_file(str(tmp_path / "model.safetensors"))
    assert len(stored) == len(model.state_dict()) - 1  # lm_head.weight is the embedding
    back = M.load(tmp_path)
    assert isinstance(back, M.DecoderLM)
    assert back.lm_head.weight is back.embed.tok_emb.weight


def test_files_equal_the_trainers_and_trainer_run_dirs_load(tmp_path: Path) -> None:
    model = _s2s(pos="learned")
    ours = model.save_pretrained(tmp_path / "ours")
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints" / "step-00000007", model, model.config.to_dict())
    update_latest(run, "step-00000007")
    theirs = run / "checkpoints" / "step-00000007"
    a, b = load_file(str(ours / "model.safetensors")), load_file(str(theirs / "model.safetensors"))
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert (ours / "config.json").read_text() == (theirs / "config.json").read_text()
    _assert_same_model(model, qkv.load(run))  # follows run/latest
    _assert_same_model(model, qkv.load(theirs))
    assert M.resolve_checkpoint(run) == theirs


def test_tokenizer_is_saved_alongside(tmp_path: Path) -> None:
    tok = CharTokenizer.train(["hello world"])
    _lm().save_pretrained(tmp_path, tokenizer=tok)
    assert (tmp_path / "tokenizer.json").is_file()
    back = Tokenizer.load(tmp_path)
    assert back.encode("hello") == tok.encode("hello")


def test_resave_replaces_model_files_and_keeps_others(tmp_path: Path) -> None:
    _lm(d_ff=48).save_pretrained(tmp_path)
    (tmp_path / "trainer_state.json").write_text("{}")
    model = _lm()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "trainer_state.json",
    ]  # no staging directory left behind
    _assert_same_model(model, qkv.load(tmp_path))


def test_load_keeps_the_global_rng_and_moves_to_device(tmp_path: Path) -> None:
    _lm().save_pretrained(tmp_path)
    state = torch.get_rng_state()
    back = qkv.load(tmp_path, device="cpu")
    assert torch.equal(torch.get_rng_state(), state)
    assert next(back.parameters()).device == torch.device("cpu")


def test_strict_load_lists_every_problem_at_once(tmp_path: Path) -> None:
    model = _lm()
    model.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["extra.weight"] = torch.zeros(2)
    del tensors["decoder.layers.0.ff.fc1.weight"]
    bias = "decoder.layers.1.ff.fc2.bias"
    tensors[bias] = torch.zeros(7)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError) as err:
        qkv.load(tmp_path)
    msg = str(err.value)
    assert "missing ['decoder.layers.0.ff.fc1.weight']" in msg
    assert "unexpected ['extra.weight']" in msg
    assert f"{bias}: file (7,) vs model (32,)" in msg


def test_config_that_does_not_fit_the_weights(tmp_path: Path) -> None:
    _lm().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["d_ff"] = 48
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ValueError, match="shape mismatches .*file \\(64, 32\\) vs model \\(48, 32\\)"
    ):
        qkv.load(tmp_path)
    cfg["n_heads"] = 5
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json: n_heads \\(5\\) must divide d_model"):
        qkv.load(tmp_path)


def test_missing_directories_and_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        qkv.load(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="missing model.safetensors, config.json"):
        qkv.load(tmp_path)
    (tmp_path / "latest").write_text("step-00000001\n")
    with pytest.raises(FileNotFoundError, match="latest names 'step-00000001'"):
        qkv.load(tmp_path)


def test_save_pretrained_needs_a_qkv_model(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="needs a qkv model with a TransformerConfig"):
        M.save_pretrained(nn.Linear(2, 2), tmp_path)
