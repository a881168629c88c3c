"""What ``qkv generate --hf`` and ``qkv viz --hf`` run (``qkv.cli._hf``), on tiny
random models with a word-level ``tokenizer.json``."""

from __future__ import annotations

import pytest
import torch

from qkv.cli._hf import generate_text, viz_hf
from qkv.interop import load_hf_tokenizer, to_hf

T = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

V = 64


def _tokenizer(specials: list[str], eos_template: bool):
    """Words ``w{i}`` after the special tokens; ``$A </s>`` as T5 does when asked."""
    words = specials + [f"w{i}" for i in range(len(specials), V)]
    tok = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=specials[-1])
    )
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(specials)
    if eos_template:
        tok.post_processor = tokenizers.processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", words.index("</s>"))]
        )
    return tok


def _t5_dir(kit):
    cfg = T.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                     dropout_rate=0.0, feed_forward_proj="gated-gelu", decoder_start_token_id=0)  # fmt: skip
    hf = T.T5ForConditionalGeneration(cfg)
    d = kit.save(hf)
    tok = _tokenizer(["<pad>", "</s>", "<unk>"], eos_template=True)
    tok.save(str(d / "tokenizer.json"))
    return hf, d, tok


def test_generate_text_t5_matches_transformers(kit):
    hf, d, tok = _t5_dir(kit)
    prompts = ["w5 w17 w40 w3", "w9 w9 w60"]
    got = generate_text(d, prompts, max_new_tokens=12)
    for prompt, text in zip(prompts, got):
        ids = torch.tensor([tok.encode(prompt).ids])
        assert ids[0, -1].item() == 1  # </s> from the tokenizer's post-processor
        ref = kit.hf_greedy(
            hf, ids, torch.ones_like(ids, dtype=torch.bool), 12, eos=1, seq2seq=True
        )[0]
        assert text == tok.decode(ref, skip_special_tokens=True)
        assert text.startswith("w")


def test_generate_text_gpt2_continues_the_prompt(kit):
    cfg = T.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                       bos_token_id=V - 1, eos_token_id=V - 1)  # fmt: skip
    hf = T.GPT2LMHeadModel(cfg)
    d = kit.save(hf)
    tok = _tokenizer(["<unk>"], eos_template=False)
    tok.save(str(d / "tokenizer.json"))
    ids = torch.tensor([tok.encode("w4 w8 w15").ids])
    ref = kit.hf_greedy(
        hf, ids, torch.ones_like(ids, dtype=torch.bool), 10, eos=V - 1, seq2seq=False
    )[0]
    assert generate_text(d, ["w4 w8 w15"], max_new_tokens=10) == [
        tok.decode(ref, skip_special_tokens=True)
    ]
    with pytest.raises(ValueError, match=r"exceeds the model's context \(32 positions\)"):
        generate_text(d, ["w4 w8 w15"], max_new_tokens=40)


def test_viz_hf_t5_records_every_kind(kit, tmp_path):
    _, d, _ = _t5_dir(kit)
    out = viz_hf(d, "w5 w17 w40", tmp_path / "r.html", target="w7 w8")
    html = out.read_text(encoding="utf-8")
    for name in (
        "encoder.layers.1.self_attn",
        "decoder.layers.0.self_attn",
        "decoder.layers.1.cross_attn",
    ):
        assert name in html
    assert "w17" in html and "w8" in html


def test_models_that_do_not_generate_or_read_text(kit, tmp_path):
    from qkv.models import ViT, ViTConfig

    bert = T.BertModel(T.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=4, intermediate_size=40))  # fmt: skip
    d = kit.save(bert)
    _tokenizer(["[UNK]"], eos_template=False).save(str(d / "tokenizer.json"))
    with pytest.raises(
        ValueError, match=r"holds a bert model \(EncoderModel\), which does not generate"
    ):
        generate_text(d, ["w4"])
    # a target would be read by nothing: refused, not ignored
    with pytest.raises(ValueError, match=r"--target: .* holds a bert model, which has no decoder"):
        viz_hf(d, "w4", tmp_path / "b.html", target="w5")
    assert not (tmp_path / "b.html").exists()
    vit = ViT(
        ViTConfig(
            d_model=32, n_heads=4, d_ff=40, n_layers=1, image_size=8, patch_size=4, n_classes=3
        )
    )
    tok = _tokenizer(["[UNK]"], eos_template=False)
    dv = to_hf(vit, tmp_path / "vit", tokenizer=tok)
    assert load_hf_tokenizer(dv).get_vocab_size() == V
    with pytest.raises(ValueError, match=r"reads images, not text"):
        viz_hf(dv, "w4", tmp_path / "v.html")


def test_cli_generate_and_viz_with_hf_directory(kit, tmp_path, capsys):
    from qkv.cli import main

    _hf, d, _tok = _t5_dir(kit)
    assert main(["generate", "--hf", str(d), "--max-new-tokens", "6", "w5 w17 w40"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == generate_text(d, ["w5 w17 w40"], max_new_tokens=6)[0]
    html = tmp_path / "r.html"
    assert main(["viz", "--hf", str(d), "w5 w17 w40", "--out", str(html)]) == 0
    assert html.exists() and "w17" in html.read_text()
    assert main(["generate", "--hf", str(tmp_path / "nowhere"), "x"]) == 2
