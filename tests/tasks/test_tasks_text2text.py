"""The text2text task: the mixture's data and splits, examples-proportional mixing, prefix
routing (the model reads the prefix, a batch mixes tasks, each output is scored by its own
task), and the metrics against the packages (the CLI: tests/cli/test_cli_text2text.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import sacrebleu
import torch
import torch.nn.functional as F
from rouge_score import rouge_scorer

import qkv.models as M
from _text2text import SECTIONS, write_mixture
from qkv.data import debian, debian_parallel
from qkv.tasks import TaskError, TaskOptions, Text2TextTask, build_trainer, get_task
from qkv.tasks.base import SPLITS
from qkv.tasks.text._seq2seq import Pair
from qkv.tasks.text.text2text import PREFIXES, mix, parse_tasks, read_mixture_tsv, task_of
from qkv.tasks.text.translate import TranslateTask
from qkv.training.objectives import example_cross_entropy, token_cross_entropy

NO_DROPOUT = {"dropout": 0.0, "attn_dropout": 0.0, "ff_dropout": 0.0}


def _task(path: Path, **extra) -> Text2TextTask:
    return Text2TextTask(TaskOptions(data=str(path), vocab_size=300, max_len=24, extra=extra))


def test_read_mixture_and_its_errors(tmp_path) -> None:
    by_task = read_mixture_tsv(str(write_mixture(tmp_path, n=5)))
    assert [len(v) for v in by_task.values()] == [5, 5, 5]
    assert all(task_of(p.src) == t for t, ps in by_task.items() for p in ps)
    bad = tmp_path / "bad.tsv"
    bad.write_text("summarize: a b c\tabc\nparaphrase: x y\tz\n", encoding="utf-8")
    with pytest.raises(TaskError, match=rf"{bad}, line 2: the input must start with one of"):
        read_mixture_tsv(str(bad))
    bad.write_text("classify: text without a target\n", encoding="utf-8")
    with pytest.raises(TaskError, match=rf"{bad}, line 1: expected 'PREFIX: input<TAB>target'"):
        read_mixture_tsv(str(bad))
    bad.write_text("classify: \tlibs\n", encoding="utf-8")
    with pytest.raises(TaskError, match=r"line 1: the input must start"):  # a bare prefix
        read_mixture_tsv(str(bad))


def test_tasks_option() -> None:
    assert parse_tasks("classify, summarize") == ("summarize", "classify")
    assert parse_tasks(["translate"]) == ("translate",)
    for bad in ("", "summarize,summarize", "paraphrase", 3):
        with pytest.raises(TaskError, match="tasks must be"):
            parse_tasks(bad)
    with pytest.raises(TaskError, match=r"mix_cap must be an int >= 0, got -1"):
        Text2TextTask(TaskOptions(extra={"mix_cap": -1}))
    with pytest.raises(TaskError, match=r"takes no --shared-vocab"):
        Text2TextTask(TaskOptions(extra={"shared_vocab": False}))


def test_default_model_is_cpu_sized(tmp_path) -> None:
    """The default is ``t5-micro`` at 64 tokens and 4,000 ids: T5's shape at the summarize
    task's size (t5-mini at 16,000 ids and 128 tokens took 4.4 s a step on one thread)."""
    task = _task(write_mixture(tmp_path), tasks="classify")
    assert (task.default_max_len, task.default_vocab_size) == (64, 4000)
    cfg = task.model_config()
    assert cfg == M.preset_config(
        "t5-micro", vocab_size=task.src_tokenizer.vocab_size, max_len=25, pad_token_id=0
    )
    assert (cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_ff) == (192, 4, 48, 768)
    assert (cfg.n_encoder_layers, cfg.n_decoder_layers, cfg.pos, cfg.norm) == (
        2,
        2,
        "relative",
        "rms",
    )
    assert cfg.output_scale == pytest.approx(192**-0.5)
    assert Text2TextTask.Options().corpus == "debian"


def test_translate_pairs_come_from_the_corpus_option(monkeypatch) -> None:
    """``corpus`` reaches the translate task, whose split text2text prefixes unchanged."""
    seen = []

    def fake_splits(self):
        seen.append((self.options.corpus, self.options.pair, self.options.seed))
        return {s: [Pair(f"{s} Satz {i}", f"{s} sentence {i}") for i in range(3)] for s in SPLITS}

    monkeypatch.setattr(TranslateTask, "_make_splits", fake_splits)
    for corpus in ("debian", "ding"):
        extra = {"tasks": "translate"} | ({"corpus": corpus} if corpus == "ding" else {})
        task = Text2TextTask(TaskOptions(seed=3, extra=extra))
        got = task.task_examples("valid")["translate"]
        assert seen[-1] == (corpus, "de-en", 3)
        assert got == [
            Pair(f"{PREFIXES['translate']}valid Satz {i}", f"valid sentence {i}") for i in range(3)
        ]
    with pytest.raises(
        TaskError, match=r"corpus must be one of debian, ding, debian,ding, got 'wmt'"
    ):
        Text2TextTask(TaskOptions(extra={"corpus": "wmt"}))


def test_mixing_rates_hand_worked() -> None:
    """Sizes 100, 40, 10 (T5, sec. 3.5.2: rate_m = min(e_m, K) / sum min(e_n, K))."""
    train = {t: [Pair(f"{t} {i}", "y") for i in range(n)] for t, n in zip("abc", (100, 40, 10))}
    epoch, rates = mix(train, 50, seed=0)
    assert rates == pytest.approx({"a": 0.5, "b": 0.4, "c": 0.1})
    # K = 50 caps a at half its size: a once, b and c twice, in proportion 50 : 40 : 10
    assert Counter(p.src.split()[0] for p in epoch) == {"a": 100, "b": 80, "c": 20}
    assert set(Counter(epoch).values()) == {1, 2} and len(set(epoch)) == 150
    epoch, rates = mix(train, None, seed=0)  # examples-proportional: every example once
    assert sorted(epoch) == sorted(p for v in train.values() for p in v)
    assert rates["a"] == pytest.approx(100 / 150)
    epoch, rates = mix(train, 10, seed=0)  # a cap at the smallest size: equal mixing
    assert rates == pytest.approx(dict.fromkeys("abc", 1 / 3))
    assert Counter(p.src.split()[0] for p in epoch) == {"a": 100, "b": 100, "c": 100}
    assert mix(train, 50, seed=0)[0] == mix(train, 50, seed=0)[0] != mix(train, 50, seed=1)[0]


def test_splits_per_task_independent_of_the_mixture(tmp_path) -> None:
    path = write_mixture(tmp_path)
    task = _task(path)
    alone = _task(path, tasks="translate")
    held = {s: task.task_examples(s) for s in ("valid", "test")}
    for t in PREFIXES:
        train = {p.src for p in task.task_examples("train")[t]}
        assert len(train) == 54 and not train & {p.src for s in held for p in held[s][t]}
    assert alone.task_examples("test") == {"translate": held["test"]["translate"]}
    assert alone.examples("test") == held["test"]["translate"]
    # the held-out split interleaves the tasks, so a prefix of it covers all of them
    assert [task_of(p.src) for p in task.examples("valid")[:3]] == list(PREFIXES)
    assert len(task.examples("train")) == 162 and task.rates == pytest.approx(
        dict.fromkeys(PREFIXES, 1 / 3)
    )
    assert task.labels() == sorted(SECTIONS)
    # so `qkv eval` compares a multitask run with its single-task baselines (not another seed)
    assert alone.split_options() == task.split_options() == _task(path, mix_cap=0).split_options()
    other = Text2TextTask(TaskOptions(data=str(path), seed=1, extra={"tasks": "translate"}))
    assert other.split_options() != task.split_options()


def test_the_model_sees_the_prefix_in_a_mixed_batch(tmp_path) -> None:
    task = _task(write_mixture(tmp_path))
    batch_pairs = task.examples("valid")[:3]  # one of each task
    batch = task.collate(batch_pairs)
    tok = task.src_tokenizer
    for i, p in enumerate(batch_pairs):
        n = int(batch["src_padding_mask"][i].sum())
        seen = tok.decode(batch["src"][i, :n].tolist())  # max_len=24 cuts the long ones
        assert p.src.startswith(seen) and seen.startswith(PREFIXES[task_of(p.src)])
        prefix = tok.encode(PREFIXES[task_of(p.src)].strip())
        assert batch["src"][i, : len(prefix)].tolist() == prefix


def test_each_output_is_scored_by_its_own_task(tmp_path, monkeypatch) -> None:
    """Stand-in outputs per task, decoded in one mixed call; the per-task metrics equal the
    packages' scores of that task's outputs alone."""
    task = _task(write_mixture(tmp_path))
    pairs = task.examples("test")
    answers = {}
    n_classify = 0
    for i, p in enumerate(pairs):
        t = task_of(p.src)
        if t == "summarize":
            answers[p.src] = " ".join([*p.tgt.split()[:2], "for", "you"])
        elif t == "translate":
            answers[p.src] = p.tgt if i % 2 else p.tgt.replace("very", "quite")
        else:
            wrong = "libs" if p.tgt != "libs" else "net"
            answers[p.src] = [p.tgt, wrong, "Games!"][n_classify % 3]
            n_classify += 1
    calls = []

    def fake_generate(model, sources, **kw):
        calls.append(list(sources))
        return [answers[s] for s in sources]

    monkeypatch.setattr(task, "generate_texts", fake_generate)
    model = M.build(task.model_config("t5-tiny"))
    got = task.evaluate(model, "test")
    assert len(calls) == 1 and {task_of(s) for s in calls[0]} == set(PREFIXES)
    by = {t: [p for p in pairs if task_of(p.src) == t] for t in PREFIXES}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rl = [scorer.score(p.tgt, answers[p.src])["rougeL"].fmeasure for p in by["summarize"]]
    assert got["summarize_rougeL"] == pytest.approx(100 * sum(rl) / len(rl))
    hyps = [answers[p.src] for p in by["translate"]]
    bleu = sacrebleu.corpus_bleu(hyps, [[p.tgt for p in by["translate"]]]).score
    assert got["translate_bleu"] == pytest.approx(bleu)
    right = [answers[p.src] == p.tgt for p in by["classify"]]
    assert got["classify_accuracy"] == pytest.approx(100 * sum(right) / len(right))
    assert n_classify == 3 and got["classify_accuracy"] == pytest.approx(100 / 3)
    assert got["classify_invalid"] == pytest.approx(100 / 3)  # "Games!" is no section name
    mean = (got["summarize_rougeL"] + got["translate_bleu"] + got["classify_accuracy"]) / 3
    assert next(iter(got)) == "score" and got["score"] == pytest.approx(mean)
    assert set(got) >= {f"{t}_loss" for t in PREFIXES}


def test_task_scores_on_known_strings(tmp_path) -> None:
    task = _task(write_mixture(tmp_path))
    # LCS "the cat sat": precision 3/3, recall 3/6, F = 2/3 (stemming changes nothing here)
    s = task.task_scores("summarize", ["the cat sat"], [["the cat sat on the mat"]])
    assert s["rougeL"] == pytest.approx(200 / 3) and s["rouge1"] == pytest.approx(200 / 3)
    assert s["rouge2"] == pytest.approx(100 * 2 * (2 / 2) * (2 / 5) / (1 + 2 / 5))
    hyp, ref = "The dog is very big today.", "The dog is very big."
    t = task.task_scores("translate", [hyp], [[ref, "A big dog."]])
    assert t["bleu"] == pytest.approx(sacrebleu.corpus_bleu([hyp], [[ref], ["A big dog."]]).score)
    assert t["chrf"] == pytest.approx(sacrebleu.corpus_chrf([hyp], [[ref], ["A big dog."]]).score)
    c = task.task_scores("classify", ["libs", " games ", "xyz"], [["libs"], ["net"], ["net"]])
    assert c == pytest.approx({"accuracy": 100 / 3, "invalid": 100 / 3})


# 24 s: trains a model; the prefix routing is covered by the fast tests above
@pytest.mark.slow
def test_a_trained_model_answers_by_prefix(tmp_path) -> None:
    """The same held-out text under two prefixes: a section name, or a summary."""
    task = _task(write_mixture(tmp_path))
    # 300 steps: after 150, one summary came out malformed ("or that") on some machines
    config = {"steps": 300, "batch_size": 16, "lr": 3e-3, "warmup": 20, "progress": False}
    trainer = build_trainer(
        task, config | {"eval_every": 0}, preset="t5-tiny", model_overrides=NO_DROPOUT
    )
    torch.manual_seed(0)
    trainer.fit()
    model = trainer.model.eval()
    cut = len(PREFIXES["summarize"])
    texts = [p.src[cut:] for p in task.task_examples("test")["summarize"]]  # held out
    labels = task.predict(model, [PREFIXES["classify"] + x for x in texts])
    summaries = task.predict(model, [PREFIXES["summarize"] + x for x in texts])
    assert set(labels) <= set(SECTIONS)
    assert not set(summaries) & set(SECTIONS) and all(" that " in x for x in summaries)
    with pytest.raises(TaskError, match=r"must start with one of 'summarize: '"):
        task.predict(model, ["paraphrase: the text"])


def _has_corpora() -> bool:
    try:
        debian.list_files()
        debian_parallel.translation_files("de")
    except debian.DebianCorpusError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _has_corpora(), reason="needs Debian's English and German apt lists")
def test_real_mixture() -> None:
    task = get_task("text2text", TaskOptions(n_train=500))
    sizes = {s: {t: len(v) for t, v in task.task_examples(s).items()} for s in ("valid", "test")}
    assert sizes["test"]["summarize"] == sizes["test"]["classify"] == 500
    assert sizes["valid"]["summarize"] == sizes["valid"]["translate"] == 200
    assert len(task.labels()) == 20 and {"libs", "net", "games"} <= set(task.labels())
    sources = {s: {p.src.split(": ", 1)[1] for p in task.examples(s)} for s in ("train", "test")}
    assert not sources["train"] & sources["test"]
    # translate is the translate task's Debian de-en split, prefixed
    alone = TranslateTask(TranslateTask.Options(corpus="debian", pair="de-en"))
    cut = len(PREFIXES["translate"])
    test = [Pair(p.src[cut:], p.tgt) for p in task.task_examples("test")["translate"]]
    assert test == alone.examples("test") and len(test) == 500


def test_example_cross_entropy_weighs_every_target_once() -> None:
    """Hand-worked: a 1-token and a 3-token target (one padded row, one empty row); the loss
    is the sum of each row's mean, over the two rows with targets, against
    ``F.cross_entropy`` of each row alone."""
    torch.manual_seed(0)
    logits = torch.randn(3, 3, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[4, 0, 0], [1, 2, 3], [0, 0, 0]])  # 0 = PAD
    loss_sum, n = example_cross_entropy(logits, labels, label_smoothing=0.1)
    row0 = F.cross_entropy(logits[0, :1], labels[0, :1], label_smoothing=0.1)
    row1 = F.cross_entropy(logits[1], labels[1], label_smoothing=0.1)  # mean of 3
    assert n == 2 and torch.allclose(loss_sum, row0 + row1, rtol=1e-12, atol=0)
    loss_sum.backward()
    assert logits.grad[2].abs().sum() == 0 and logits.grad[0, 1:].abs().sum() == 0
    # per token, the long target would weigh 3x the short one: here each is one
    tok_sum, tok_n, _ = token_cross_entropy(logits.detach(), labels, label_smoothing=0.1)
    assert tok_n == 4 and torch.allclose(tok_sum, row0 + 3 * row1)


def test_loss_per_example_trains_on_it_and_evaluates_per_token(tmp_path) -> None:
    path = write_mixture(tmp_path)
    task, plain = _task(path, loss_per="example"), _task(path)
    assert task.split_options() == plain.split_options()  # runs compare in one eval table
    batch = task.collate(task.examples("valid")[:6])
    model = M.Seq2SeqTransformer(M.Seq2SeqConfig(d_model=16, n_heads=2, d_ff=32, vocab_size=300,
                                                 n_encoder_layers=1, n_decoder_layers=1,
                                                 max_len=64))  # fmt: skip
    real = batch["tgt_out"] != 0
    model.train()
    out = task.loss(model, batch, label_smoothing=0.0)
    assert out.n == 6 and plain.loss(model, batch).n == int(real.sum())
    model.eval()
    assert task.loss(model, batch).n == int(real.sum())  # evaluation stays per token
    with pytest.raises(TaskError, match="loss_per must be one of token, example, got 'row'"):
        _task(path, loss_per="row")
