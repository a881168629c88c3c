"""Parameter counts of the presets (built on the meta device), FLOPs, and ``qkv info``."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

import qkv.models as M
from qkv.cli import SUBCOMMANDS, CLIError
from qkv.cli import info as info_cli

# Published counts: Hugging Face BertModel / GPT2Model and timm vit_*_patch16_224, as
# reported by `sum(p.numel() for p in model.parameters())` (tied weights once).
PUBLISHED = {
    "bert-base": 109_482_240,
    "bert-large": 335_141_888,
    "gpt2-small": 124_439_808,
    "gpt2-medium": 354_823_168,
    "vit-b16": 86_567_656,
    "vit-l16": 304_326_632,
    "t5-small": 60_506_624,  # T5ForConditionalGeneration(T5Config()), shared embedding once
}
# "Attention Is All You Need", table 3.
PAPER = {"transformer-base": 65e6, "transformer-big": 213e6}


def _meta(name: str, **overrides: object) -> M.TransformerModel:
    with torch.device("meta"):
        return M.from_preset(name, **overrides)


@pytest.mark.parametrize(("name", "count"), PUBLISHED.items())
def test_published_counts(name: str, count: int) -> None:
    assert M.count_parameters(_meta(name)) == count


@pytest.mark.parametrize(("name", "paper"), PAPER.items())
def test_transformer_counts_within_3_percent(name: str, paper: float) -> None:
    n = M.count_parameters(_meta(name))
    assert abs(n - paper) / paper < 0.03, n


def test_transformer_base_count_by_hand() -> None:
    d, ff, v = 512, 2048, 37000
    attn = 4 * (d * d + d)
    ffn = d * ff + ff + ff * d + d
    enc = attn + ffn + 2 * 2 * d
    dec = 2 * attn + ffn + 3 * 2 * d
    assert M.count_parameters(_meta("transformer-base")) == v * d + 6 * enc + 6 * dec


def test_bert_mlm_head_adds_its_transform_and_bias_only() -> None:
    d, v = 768, 30522
    with_head = M.count_parameters(_meta("bert-base", mlm_head=True))
    assert with_head - PUBLISHED["bert-base"] == (d * d + d) + 2 * d + v


def test_tied_weights_count_once() -> None:
    lm = M.from_preset("gpt2-tiny")
    assert lm.lm_head.weight is lm.embed.tok_emb.weight
    untied = M.from_preset("gpt2-tiny", tie_embeddings=False)
    assert M.count_parameters(untied) - M.count_parameters(lm) == 128 * 32
    s2s = M.from_preset("transformer-tiny")
    assert s2s.src_embed.tok_emb is s2s.tgt_embed.tok_emb
    assert s2s.lm_head.weight is s2s.src_embed.tok_emb.weight
    split = M.from_preset("transformer-tiny", share_embeddings=False, tgt_vocab_size=96)
    assert split.lm_head.weight is split.tgt_embed.tok_emb.weight
    assert M.count_parameters(split) - M.count_parameters(s2s) == 96 * 32
    assert M.count_parameters(lm, trainable_only=True) == M.count_parameters(lm)


def test_flops_per_token_formula() -> None:
    cfg = M.preset_config("gpt2-small")
    n = M.non_embedding_parameters(_meta("gpt2-small"))
    assert n == 12 * (4 * (768 * 768 + 768) + 2 * 768 * 3072 + 3072 + 768 + 4 * 768) + 2 * 768
    assert M.flops_per_token(cfg) == 2 * n + 2 * 12 * 1024 * 768
    assert M.flops_per_token(cfg, 128) == 2 * n + 2 * 12 * 128 * 768
    # encoder-decoder: self + self + cross attention sublayers
    t = M.preset_config("transformer-base")
    nt = M.non_embedding_parameters(_meta("transformer-base"))
    assert M.flops_per_token(t, 100) == 2 * nt + 2 * (6 + 12) * 100 * 512
    with pytest.raises(ValueError, match="seq_len must be a positive int, got 0"):
        M.flops_per_token(cfg, 0)


def _run_info(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="qkv")
    info_cli.register(parser.add_subparsers(dest="command"), "info")
    args = parser.parse_args(["info", *argv])
    return int(args.func(args))


def test_cli_info_registered() -> None:
    assert SUBCOMMANDS["info"] == "qkv.cli.info"


def test_cli_info_prints_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_info("gpt2-small") == 0
    out = capsys.readouterr().out
    assert "124,439,808" in out and "FLOPs per token" in out
    assert _run_info("vit-b16", "--json", "--seq-len", "197") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"] == PUBLISHED["vit-b16"]
    assert data["flops_per_token"] == M.flops_per_token(M.preset_config("vit-b16"), 197)
    assert data["config"]["family"] == "vit"


def test_cli_info_unknown_preset() -> None:
    with pytest.raises(CLIError, match=r"unknown preset 'gpt5'; known presets: .*bert-base"):
        _run_info("gpt5")


def test_cli_info_exit_code_through_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import qkv.cli as cli

    # only this subcommand, so the test does not depend on the others importing
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"info": "qkv.cli.info"})
    assert cli.main(["info", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert cli.main(["info", "bert-base"]) == 0
    assert "109,482,240" in capsys.readouterr().out
