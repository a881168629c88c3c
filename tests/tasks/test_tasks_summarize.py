"""The summarize task: ROUGE through rouge-score, its data (TSV and the Debian corpus), lead-1,
and every CLI verb end to end on tiny settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _summaries import TINY_MODEL, write_pairs
from rouge_score import rouge_scorer

from qkv.cli import main
from qkv.data import debian, metrics
from qkv.tasks import SummarizeTask, TaskError, TaskOptions, load_trained
from qkv.tasks.text._seq2seq import Pair
from qkv.tasks.text.summarize import lead_scores, lead_sentences


def test_rouge_by_hand_and_against_rouge_score() -> None:
    # hyp "the cat sat on the mat" vs ref "the cat is on the mat": 5 of 6 unigrams match
    # (F = 5/6), 3 of 5 bigrams (the cat, on the, the mat: F = 3/5), LCS "the cat on the mat"
    # has 5 tokens (F = 5/6)
    got = metrics.rouge(["the cat sat on the mat"], ["the cat is on the mat"])
    assert got == pytest.approx({"rouge1": 500 / 6, "rouge2": 60.0, "rougeL": 500 / 6})
    # stemming is on: "runs"/"running" and "libraries"/"library" are the same word
    assert metrics.rouge(["Runs libraries."], ["running library"])["rouge1"] == 100.0
    # several references: the best one per type
    each = metrics.rouge_each(["a b c d"], [["a b x y", "a b c z"]])
    assert each[0]["rouge1"] == pytest.approx(75.0) and each[0]["rouge2"] == pytest.approx(200 / 3)
    hyps = ["fast text frobnicator", "library for bars", "nothing in common"]
    refs = ["fast frobnicator for text", "bar library", "completely different words"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for got, h, r in zip(metrics.rouge_each(hyps, refs), hyps, refs):
        want = scorer.score(r, h)
        assert got == pytest.approx({k: 100 * v.fmeasure for k, v in want.items()})
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        metrics.rouge(["a", "b"], ["a"])


def test_lead_1_and_its_scores() -> None:
    text = "Frob frobnicates text. It is fast, e.g. on big files. It is small."
    assert lead_sentences(text) == "Frob frobnicates text."
    assert lead_sentences(text, k=2) == "Frob frobnicates text. It is fast, e.g. on big files."
    pairs = [Pair(text, "frobnicates text"), Pair("Bar library. More.", "bar tools")]
    got = lead_scores(pairs)
    want = metrics.rouge(["Frob frobnicates text.", "Bar library."], [p.tgt for p in pairs])
    assert {k: got[k] for k in want} == pytest.approx(want)
    # "Frob frobnicates text" vs "frobnicates text": P 2/3, R 1, F 0.8; "Bar library" vs
    # "bar tools": P = R = F = 1/2
    assert got["rouge1"] == pytest.approx((80 + 50) / 2)
    with pytest.raises(TaskError, match="at least one"):
        lead_scores([])


def test_tsv_splits_and_evaluation_headline(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "pairs.tsv")
    task = SummarizeTask(TaskOptions(data=str(data), vocab_size=300))
    sizes = [len(task.examples(s)) for s in ("train", "valid", "test")]
    assert sizes == [54, 3, 3]
    assert task.examples("test") == SummarizeTask(task.options).examples("test")


@pytest.mark.skipif(
    not any(debian.LISTS_DIR.glob("*_i18n_Translation-en*")),
    reason=f"no English apt lists: {debian.FETCH_COMMAND}",
)
def test_debian_splits_follow_source_packages() -> None:
    task = SummarizeTask(TaskOptions(n_train=2000, n_valid=50, n_test=50))
    # one text may carry several synopses (a -dev package's adds " - devel")
    records = {(r.text, r.synopsis): r for r in debian.read_corpus()}
    for split in ("train", "valid", "test"):
        pairs = task.examples(split)
        assert len(pairs) == {"train": 2000, "valid": 50, "test": 50}[split]
        assert {debian.split_of(records[p].source) for p in pairs} == {split}


def test_missing_corpus_names_the_fix(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(debian, "LISTS_DIR", tmp_path)
    monkeypatch.setattr(debian.read_corpus, "__defaults__", (tmp_path,))
    with pytest.raises(TaskError, match=r"apt-get update -o Acquire::Languages=en"):
        SummarizeTask().examples("train")


def test_cli_train_eval_generate_viz(tmp_path: Path, capsys) -> None:
    data, run = write_pairs(tmp_path / "pairs.tsv"), tmp_path / "run"
    model_flags = [x for kv in TINY_MODEL for x in ("--model", kv)]
    argv = ["train", "--task", "summarize", "--data", str(data), "--vocab-size", "300",
            "--steps", "3", "--batch-size", "8", "--no-progress", "--out", str(run),
            *model_flags]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    model, task = load_trained(run)
    assert isinstance(task, SummarizeTask)
    assert main(["eval", "--checkpoint", str(run), "--json", "--beam-size", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out)[:4] == ["rougeL", "rouge1", "rouge2", "bleu"]  # the headline first
    # the reported ROUGE is rouge-score's on the model's own beam outputs
    pairs = task.examples("test")
    hyps = task.generate_texts(model, [p.src for p in pairs], beam_size=2)
    assert out["rouge1"] == pytest.approx(metrics.rouge(hyps, [p.tgt for p in pairs])["rouge1"])
    assert 0 <= out["bleu"] <= 100
    text = "This is a fast shell number 3. It is written in C."
    assert main(["generate", "--checkpoint", str(run), text]) == 0
    assert capsys.readouterr().out.strip() == task.predict(model, [text])[0].strip()
    report = tmp_path / "report.html"
    assert main(["viz", "--checkpoint", str(run), text, "--out", str(report)]) == 0
    html = report.read_text(encoding="utf-8")
    views = json.loads(re.search(r'type="application/json">(.*?)</script>', html, re.S).group(1))
    assert [v["kind"] for v in views["views"]] == ["encoder_self", "decoder_self", "cross"]
    assert views["tokens"]["input"] == [
        task.src_tokenizer.id_to_token(i) for i in task.src_tokenizer.encode(text)
    ]
