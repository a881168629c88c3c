"""The lm task: text splits, chunking, the shifted batch, bits-per-character math."""

from __future__ import annotations

import itertools
import math
import shutil

import pytest
import torch
from torch import nn

import qkv.models as M
from qkv.data.tokenizers import PAD_ID, BPETokenizer, CharTokenizer
from qkv.tasks import LMTask, TaskError, TaskOptions, load_task
from qkv.tasks.text import lm as lm_module
from qkv.tasks.text.lm import chunk_ids, pydoc_text, split_text


def test_chunks_predict_every_token_but_the_first_once() -> None:
    ids = list(range(10, 33))  # 23 tokens
    chunks = chunk_ids(ids, 5)
    assert [len(c) for c in chunks] == [6, 6, 6, 6, 3]
    assert all(a[-1] == b[0] for a, b in itertools.pairwise(chunks))  # overlap of one token
    predicted = [t for c in chunks for t in c[1:]]
    assert predicted == ids[1:]
    assert chunk_ids([7], 5) == [] and chunk_ids([], 5) == []
    assert chunk_ids([1, 2, 3, 4, 5, 6], 5) == [[1, 2, 3, 4, 5, 6]]


def test_split_text_is_contiguous_and_cuts_at_lines() -> None:
    text = "".join(f"line {i:03d}\n" for i in range(200))
    parts = split_text(text)
    assert parts["train"] + parts["valid"] + parts["test"] == text
    assert parts["train"].endswith("\n") and parts["valid"].endswith("\n")
    assert abs(len(parts["train"]) / len(text) - 0.90) < 0.01
    assert abs(len(parts["valid"]) / len(text) - 0.05) < 0.01
    one_line = split_text("x" * 100)
    assert [len(v) for v in one_line.values()] == [90, 5, 5]


def test_default_corpus_is_python_help() -> None:
    text = pydoc_text()
    assert 400_000 < len(text) < 600_000
    task = LMTask(TaskOptions(max_len=64))
    train = task.examples("train")
    assert all(len(c) <= 65 for c in train) and len(train[0]) == 65
    # the recipe's tokenizer: BPE (8,192 ids asked; the help topics support fewer merges)
    assert isinstance(task.tokenizer, BPETokenizer)
    assert 1000 < task.tokenizer.vocab_size <= 8192
    first = task.tokenizer.decode(train[0])
    assert text.startswith(first) and len(first) > 2 * 65  # several characters a token
    chars = LMTask(TaskOptions(max_len=64, tokenizer="char"))
    assert isinstance(chars.tokenizer, CharTokenizer)
    assert chars.tokenizer.decode(chars.examples("train")[0]) == text[:65]


def test_collate_shifts_inputs_and_labels() -> None:
    task = LMTask(TaskOptions(max_len=8))
    batch = task.collate([[5, 6, 7, 8], [9, 10]])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [9, PAD_ID, PAD_ID]]
    assert batch["labels"].tolist() == [[6, 7, 8], [10, PAD_ID, PAD_ID]]
    assert batch["padding_mask"].tolist() == [[True] * 3, [True, False, False]]
    assert task.n_tokens(batch) == 4


class Uniform(nn.Module):
    """Every next token equally likely: loss = ln V per token."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.zero = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, *, padding_mask=None):
        return torch.zeros(*input_ids.shape, self.vocab) + self.zero


def _write(tmp_path, text: str):
    p = tmp_path / "corpus.txt"
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_uniform_model_gives_log2_vocab_bits_per_char(tmp_path) -> None:
    text = "".join(f"the quick brown fox {i}\n" for i in range(300))
    task = LMTask(TaskOptions(data=_write(tmp_path, text), max_len=16, tokenizer="char"))
    v = task.tokenizer.vocab_size
    m = task.evaluate(Uniform(v), "valid", batch_size=4)
    assert list(m) == ["bpc", "loss", "ppl"]
    assert m["loss"] == pytest.approx(math.log(v), rel=1e-6)
    assert m["bpc"] == pytest.approx(math.log2(v), rel=1e-6)
    assert m["ppl"] == pytest.approx(v, rel=1e-5)
    out = task.loss(Uniform(v), task.collate(task.examples("train")[:3]))
    n_labels = sum(len(c) - 1 for c in task.examples("train")[:3])
    assert out.n == n_labels
    assert float(out.loss_sum.detach()) == pytest.approx(n_labels * math.log(v), rel=1e-6)


def test_bpe_bits_per_char_normalizes_by_characters(tmp_path) -> None:
    text = "".join(f"the quick brown fox jumps over {i % 7} lazy dogs\n" for i in range(400))
    task = LMTask(
        TaskOptions(data=_write(tmp_path, text), tokenizer="bpe", vocab_size=300, max_len=16)
    )
    assert isinstance(task.tokenizer, BPETokenizer)
    v = task.tokenizer.vocab_size
    chunks = task.examples("valid")
    n_tokens = sum(len(c) - 1 for c in chunks)
    n_chars = sum(len(task.tokenizer.decode(c[1:])) for c in chunks)
    assert n_chars > n_tokens  # merges: several characters per token
    m = task.evaluate(Uniform(v), "valid")
    assert m["bpc"] == pytest.approx(n_tokens * math.log(v) / (n_chars * math.log(2)), rel=1e-6)
    assert (
        task.tokenizer.decode([t for c in chunks for t in c[1:]])
        == task.texts()["valid"][-n_chars:]
    )


def test_lm_options_and_data_errors(tmp_path) -> None:
    with pytest.raises(TaskError, match=r"tokenizer must be one of \['char', 'bpe'\], got 'word'"):
        LMTask(TaskOptions(tokenizer="word"))
    with pytest.raises(TaskError, match=r"corpus must be one of"):
        LMTask(TaskOptions(extra={"corpus": "wiki"}))
    missing = tmp_path / "nope.txt"
    with pytest.raises(TaskError, match=rf"{missing} does not exist"):
        LMTask(TaskOptions(data=str(missing))).examples("train")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(TaskError, match=rf"{empty} is empty"):
        LMTask(TaskOptions(data=str(empty))).examples("train")


def test_kjv_needs_the_bible_program(monkeypatch) -> None:
    monkeypatch.setattr(lm_module.shutil, "which", lambda name: None)
    with pytest.raises(TaskError, match="apt-get install bible-kjv"):
        LMTask(TaskOptions(extra={"corpus": "kjv"})).text()


@pytest.mark.skipif(shutil.which("bible") is None, reason="bible-kjv is not installed")
def test_kjv_text() -> None:
    text = lm_module.kjv_text()
    assert 4_000_000 < len(text) < 4_600_000
    assert "In the beginning God created the heaven and the earth." in text[:200]


def test_predict_save_load(tmp_path, monkeypatch) -> None:
    text = "".join(f"abc def {i}\n" for i in range(100))
    task = LMTask(TaskOptions(data=_write(tmp_path, text), max_len=8, tokenizer="char"))
    cfg = task.model_config(d_model=16, n_heads=2, d_ff=32, n_layers=1)
    assert isinstance(cfg, M.LMConfig) and cfg.vocab_size == task.tokenizer.vocab_size
    assert cfg.max_len == 8
    model = M.build(cfg)
    import qkv.generation

    real, calls = qkv.generation.generate, []

    def spy(model, inputs, **kw):
        calls.append((inputs.shape[1], kw["max_new_tokens"]))
        return real(model, inputs, **kw)

    monkeypatch.setattr(qkv.tasks.text.lm, "generate", spy)
    g = torch.Generator().manual_seed(0)
    out = task.predict(model, ["abc", ""], max_new_tokens=20, generator=g)  # > max_len: slides
    assert len(out) == 2 and all(0 < len(s) <= 20 for s in out)  # specials decode to ""
    assert all(s + n <= 8 for s, n in calls)  # prompt + new tokens fit the context
    assert sum(n for _, n in calls) == 40 and len(calls) > 2
    task.save(tmp_path / "ckpt")
    back = load_task(tmp_path / "ckpt")
    assert isinstance(back, LMTask) and back._texts is None
    assert back.tokenizer.vocab == task.tokenizer.vocab  # type: ignore[attr-defined]
    assert back.model_config(d_model=16, n_heads=2, d_ff=32, n_layers=1) == cfg
    with pytest.raises(TaskError, match="needs a 'lm' model, but preset 'vit-tiny'"):
        task.model_config("vit-tiny")
