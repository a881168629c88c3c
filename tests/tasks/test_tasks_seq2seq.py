"""Sequence-to-sequence tasks: copy/reverse data, teacher-forcing batches, the loss,
evaluation, prediction, model configs and checkpoint persistence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qkv.models as M
from qkv.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, WordTokenizer
from qkv.tasks import CopyTask, ReverseTask, SyntheticTask, TaskError, TaskOptions, load_task
from qkv.tasks.text._seq2seq import Pair

SMALL = TaskOptions(n_train=300, n_valid=20, n_test=20)
TINY_MODEL = {"d_model": 32, "n_heads": 2, "d_ff": 64, "n_encoder_layers": 1, "n_decoder_layers": 1}


def test_copy_and_reverse_data() -> None:
    for cls, f in ((CopyTask, lambda s: s), (ReverseTask, lambda s: s[::-1])):
        task = cls(TaskOptions(n_train=500, n_valid=50, n_test=50, max_len=7, seed=1))
        sources = []
        for split in ("train", "valid", "test"):
            for p in task.examples(split):
                assert p.tgt == f(p.src)
                assert 1 <= len(p.src) <= 7 and set(p.src) <= set("0123456789abcdef")
                sources.append(p.src)
        assert len(sources) == 600
        # distinct across splits at every length with at least as many strings as examples
        long = [s for s in sources if 16 ** len(s) >= 600]
        assert len(long) == len(set(long)) > 400
        held_out = {p.src for sp in ("valid", "test") for p in task.examples(sp)}
        assert any(len(p.src) == 1 for p in task.examples("train"))  # short strings reach training
        assert not {p.src for p in task.examples("train") if 16 ** len(p.src) >= 600} & held_out
        assert len({len(s) for s in sources}) == 7  # every length occurs
        assert task.examples("train") == cls(task.options).examples("train")  # deterministic


def test_copy_options_errors() -> None:
    tiny = CopyTask(
        TaskOptions(n_train=10, n_valid=10, n_test=10, max_len=2, extra={"symbols": "ab"})
    )
    assert len(tiny.examples("train")) == 10  # 6 strings exist: they repeat rather than fail
    with pytest.raises(TaskError, match=r"symbols.*'aa'"):
        CopyTask(TaskOptions(extra={"symbols": "aa"}))
    with pytest.raises(TaskError, match=r"tokenizer must be one of \['char'\], got 'bpe'"):
        CopyTask(TaskOptions(tokenizer="bpe"))
    with pytest.raises(TaskError, match=r"task 'copy' takes no --symbol"):
        CopyTask(TaskOptions(extra={"symbol": "ab"}))
    with pytest.raises(TaskError, match="max_len must be an int >= 1, got 0"):
        CopyTask(TaskOptions(max_len=0))


def test_collate_is_teacher_forcing() -> None:
    task = SyntheticTask(SMALL)
    pairs = task.examples("train")[:5]
    batch = task.collate(pairs)
    tok = task.tgt_tokenizer
    for i, p in enumerate(pairs):
        src = task.src_tokenizer.encode(p.src)
        tgt = tok.encode(p.tgt)
        n_src, n_tgt = len(src), len(tgt) + 1
        assert batch["src"][i, :n_src].tolist() == src
        assert batch["src_padding_mask"][i].tolist() == [True] * n_src + [False] * (
            batch["src"].shape[1] - n_src
        )
        assert batch["tgt_in"][i, :n_tgt].tolist() == [BOS_ID, *tgt]
        assert batch["tgt_out"][i, :n_tgt].tolist() == [*tgt, EOS_ID]
        assert (
            batch["tgt_padding_mask"][i].sum() == n_tgt
            and batch["tgt_padding_mask"][i, :n_tgt].all()
        )
        assert (batch["tgt_in"][i, n_tgt:] == PAD_ID).all() and (
            batch["tgt_out"][i, n_tgt:] == PAD_ID
        ).all()
        assert (batch["src"][i, n_src:] == PAD_ID).all()
    assert batch["src"].dtype == batch["tgt_in"].dtype == torch.long
    assert batch["src_padding_mask"].dtype == batch["tgt_padding_mask"].dtype == torch.bool
    assert task.n_tokens(batch) == int(
        batch["src_padding_mask"].sum() + batch["tgt_padding_mask"].sum()
    )


def test_collate_truncates_to_max_len() -> None:
    task = CopyTask(TaskOptions(n_train=20, n_valid=2, n_test=2, max_len=4))
    batch = task.collate([Pair("0123456789", "0123456789")])
    assert batch["src"].shape == (1, 4)
    assert batch["tgt_in"][0].tolist()[0] == BOS_ID and batch["tgt_in"].shape == (1, 5)
    assert batch["tgt_out"][0].tolist()[-1] == EOS_ID


class RandomLogits(nn.Module):
    """Fixed random logits, whatever the inputs (a stand-in for a model in loss tests)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, src, tgt_in, *, src_padding_mask=None, tgt_padding_mask=None):
        g = torch.Generator().manual_seed(0)
        return torch.randn(*tgt_in.shape, self.vocab, generator=g) + self.bias


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_loss_matches_a_manual_per_token_sum(eps: float) -> None:
    task = SyntheticTask(SMALL)
    batch = task.collate(task.examples("train")[:6])
    model = RandomLogits(task.tgt_tokenizer.vocab_size)
    out = task.loss(model, batch, label_smoothing=eps)
    logits = model(batch["src"], batch["tgt_in"]).detach()
    logp = F.log_softmax(logits, dim=-1)
    manual, n = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            y = int(batch["tgt_out"][b, t])
            if y == PAD_ID:
                continue
            manual += float(-(1 - eps) * logp[b, t, y] - eps * logp[b, t].mean())
            n += 1
    assert out.n == n == int(batch["tgt_padding_mask"].sum())
    assert float(out.loss_sum.detach()) == pytest.approx(manual, rel=1e-5)
    out.loss_sum.backward()
    assert model.bias.grad is not None
    assert 0 <= out.logs["correct"] <= n


def test_loss_ignores_padding_with_a_real_model() -> None:
    task = SyntheticTask(SMALL)
    torch.manual_seed(0)
    model = M.build(task.model_config(**TINY_MODEL)).eval()
    pairs = sorted(task.examples("train")[:8], key=lambda p: len(p.src))
    short, long = pairs[0], pairs[-1]
    together = task.loss(model, task.collate([short, long]))
    alone = [task.loss(model, task.collate([p])) for p in (short, long)]
    assert together.n == alone[0].n + alone[1].n
    total = sum(float(a.loss_sum.detach()) for a in alone)
    assert float(together.loss_sum.detach()) == pytest.approx(total, rel=1e-4)


def test_evaluate_scores_perfect_outputs(monkeypatch) -> None:
    import qkv.generation
    import qkv.tasks.text._seq2seq

    task = ReverseTask(SMALL)
    refs = {p.src: task.tgt_tokenizer.encode(p.tgt) for p in task.examples("valid")}
    calls = []

    def oracle(model, inputs, *, padding_mask=None, **kw):
        calls.append(kw)
        rows = [task.src_tokenizer.decode(r[m].tolist()) for r, m in zip(inputs, padding_mask)]
        return qkv.generation.Generated([refs[s] for s in rows], [0.0] * len(rows))

    monkeypatch.setattr(qkv.tasks.text._seq2seq, "generate", oracle)
    model = RandomLogits(task.tgt_tokenizer.vocab_size)
    m = task.evaluate(model, "valid", batch_size=8, beam_size=3)
    assert next(iter(m)) == "exact_match"
    assert m["exact_match"] == pytest.approx(100.0)
    assert m["bleu"] == pytest.approx(100.0)
    assert m["chrf"] == pytest.approx(100.0)
    assert m["loss"] > 0 and m["ppl"] == pytest.approx(torch.tensor(m["loss"]).exp().item())
    assert calls and all(c["strategy"] == "beam" and c["beam_size"] == 3 for c in calls)
    assert all(c["bos_id"] == BOS_ID and c["eos_id"] == EOS_ID for c in calls)


def test_evaluate_and_predict_with_a_real_model() -> None:
    task = SyntheticTask(SMALL)
    model = M.build(task.model_config(**TINY_MODEL)).train()
    m = task.evaluate(model, "test", limit=6)
    assert list(m) == ["bleu", "chrf", "exact_match", "loss", "ppl"]
    assert 0 <= m["bleu"] <= 100 and 0 <= m["exact_match"] <= 100
    assert model.training  # evaluate restores the mode
    out = task.predict(model, ["the cat sleeps.", "she runs."], max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    assert len(task.predict(model, ["the dog sees a cat."], beam_size=2, max_new_tokens=4)) == 1


def test_model_config_is_sized_to_the_task() -> None:
    task = SyntheticTask(SMALL)
    cfg = task.model_config()
    assert isinstance(cfg, M.Seq2SeqConfig)
    assert cfg.vocab_size == task.src_tokenizer.vocab_size and cfg.max_len == 17
    assert cfg.pad_token_id == PAD_ID and cfg.d_model == 64 and cfg.norm_placement == "pre"
    assert task.model_config(d_model=32).d_model == 32
    preset = task.model_config("transformer-tiny")
    assert preset.vocab_size == task.src_tokenizer.vocab_size and preset.d_model == 32
    with pytest.raises(
        TaskError, match="needs a 'seq2seq' model, but preset 'gpt2-tiny' is a 'lm'"
    ):
        task.model_config("gpt2-tiny")


def test_separate_vocabularies() -> None:
    task = SyntheticTask(
        TaskOptions(n_train=300, n_valid=5, n_test=5, extra={"shared_vocab": False})
    )
    assert task.src_tokenizer is not task.tgt_tokenizer
    assert (
        task.src_tokenizer.token_to_id("cat") is not None
        and task.src_tokenizer.token_to_id("mira") is None
    )
    cfg = task.model_config()
    assert cfg.share_embeddings is False and cfg.tgt_vocab_size == task.tgt_tokenizer.vocab_size
    M.build(cfg)


@pytest.mark.parametrize("shared", [True, False])
def test_save_and_load_task_without_training_data(tmp_path, shared: bool) -> None:
    task = SyntheticTask(
        TaskOptions(n_train=200, n_valid=5, n_test=5, seed=3, extra={"shared_vocab": shared})
    )
    task.save(tmp_path)
    assert (tmp_path / "task.json").is_file()
    assert (tmp_path / "tokenizer.json").is_file() == shared
    assert (tmp_path / "tokenizer_src" / "tokenizer.json").is_file() != shared
    back = load_task(tmp_path)
    assert isinstance(back, SyntheticTask) and back.options == task.options
    assert back._splits is None  # no data was generated to load it
    assert isinstance(back.src_tokenizer, WordTokenizer)
    assert back.src_tokenizer.vocab == task.src_tokenizer.vocab
    assert back.tgt_tokenizer.vocab == task.tgt_tokenizer.vocab
    assert back.model_config() == task.model_config()
    assert back._splits is None


def test_synthetic_word_tokens_round_trip() -> None:
    task = SyntheticTask(SMALL)
    tok = task.tgt_tokenizer
    assert tok.vocab_size < 230
    for p in task.examples("valid"):
        assert task.src_tokenizer.decode(task.src_tokenizer.encode(p.src)) == p.src
        assert tok.decode(tok.encode(p.tgt)) == p.tgt
