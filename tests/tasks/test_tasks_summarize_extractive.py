"""The extractive summarizer: the oracle by hand, the batches, the loss, and the CLI end to
end; the three-way comparison with lead-1 and the abstractive model."""

from __future__ import annotations

import json
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _summaries import TINY_MODEL, write_pairs

import qkv.models as M
from qkv.cli import main
from qkv.data import metrics
from qkv.data.tokenizers import BOS_ID
from qkv.tasks import ExtractiveSummarizeTask, TaskOptions, load_trained
from qkv.tasks.text.summarize_extractive import Document, compare, oracle_index

SCRIPT = Path(__file__).parents[2] / "scripts" / "summarize_table.py"
TINY_ENCODER = ["d_model=16", "n_heads=2", "d_ff=32", "n_layers=1"]


def test_oracle_by_hand() -> None:
    # stemmed tokens: "foo convert imag to text quickli" vs "convert imag to text":
    # ROUGE-1 P 4/6 R 1 F 0.8, ROUGE-2 P 3/5 R 1 F 0.75; the other sentences share nothing
    sentences = ["Foo is a tool.", "Foo converts images to text quickly.", "It is free."]
    assert oracle_index(sentences, "convert images to text") == 1
    # ROUGE-2 decides: "text to images convert" has ROUGE-1 F 1 but ROUGE-2 F 0 (mean 0.5);
    # "convert images to text now and then" has F 8/11 and 2/3 (mean 0.697)
    pair = ["text to images convert", "convert images to text now and then"]
    assert oracle_index(pair, "convert images to text") == 1
    assert oracle_index(["a b", "a b", "c"], "a b") == 0  # ties: the first
    assert oracle_index(["x y", "z"], "nothing shared") == 0
    with pytest.raises(ValueError, match="at least one sentence"):
        oracle_index([], "a")


@pytest.fixture
def task(tmp_path: Path) -> ExtractiveSummarizeTask:
    data = write_pairs(tmp_path / "pairs.tsv")
    return ExtractiveSummarizeTask(TaskOptions(data=str(data), vocab_size=300, max_len=40))


def test_documents_markers_and_segments(task: ExtractiveSummarizeTask) -> None:
    docs = task.examples("train")
    assert len(docs) == 54 and all(len(d.sentences) == 3 for d in docs)
    assert all(d.label == 0 for d in docs)  # "This is a fast editor ..." holds the summary
    doc = Document(("Short one.", "It is written in C.", "A third sentence here."), "x", 1)
    batch = task.collate([doc, docs[0]])
    ids = batch["input_ids"][0].tolist()
    n1 = len(task.tokenizer.encode("Short one.")) + 1
    n2 = len(task.tokenizer.encode("It is written in C.")) + 1
    assert batch["markers"][0].tolist()[:2] == [0, n1]
    assert ids[0] == ids[n1] == BOS_ID and len(ids) <= 40
    assert (
        batch["token_type_ids"][0, :n1].eq(0).all()
        and batch["token_type_ids"][0, n1 : n1 + n2].eq(1).all()
    )
    fits = n1 + n2 < 40  # a sentence whose marker is beyond max_len is dropped
    assert batch["marker_mask"][0].tolist()[:3] == [True, True, fits]


def test_loss_is_cross_entropy_over_sentences(task: ExtractiveSummarizeTask) -> None:
    torch.manual_seed(0)
    model = M.build(task.model_config(d_model=16, n_heads=2, d_ff=32, n_layers=1)).eval()
    batch = task.collate(task.examples("train")[:4])
    s = task.scores(model, batch)  # (4, n)
    assert s.shape == batch["marker_mask"].shape and torch.isinf(s[~batch["marker_mask"]]).all()
    want = sum(
        F.cross_entropy(s[i][batch["marker_mask"][i]][None], batch["labels"][i : i + 1])
        for i in range(4)
    )
    assert task.loss(model, batch).loss_sum.item() == pytest.approx(want.item(), rel=1e-5)


def test_cli_train_eval_generate_viz_and_compare(tmp_path: Path, capsys, monkeypatch) -> None:
    data = write_pairs(tmp_path / "pairs.tsv")
    runs = {}
    for name, model in (("summarize-extractive", TINY_ENCODER), ("summarize", TINY_MODEL)):
        runs[name] = tmp_path / name
        argv = ["train", "--task", name, "--data", str(data), "--vocab-size", "300",
                "--steps", "3", "--batch-size", "8", "--no-progress", "--out", str(runs[name]),
                *[x for kv in model for x in ("--model", kv)]]  # fmt: skip
        assert main(argv) == 0
    capsys.readouterr()
    run = runs["summarize-extractive"]
    assert main(["eval", "--checkpoint", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out)[:5] == ["rougeL", "rouge1", "rouge2", "bleu", "oracle_acc"]
    model, task = load_trained(run)
    docs = task.examples("test")
    picked = [d.sentences[i] for d, i in zip(docs, task.pick(model, docs))]
    assert out["rougeL"] == pytest.approx(
        metrics.rouge(picked, [d.summary for d in docs])["rougeL"]
    )
    text = "Foo is a fast editor. It is written in C. It has many users."
    assert main(["generate", "--checkpoint", str(run), text]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() in {
        "Foo is a fast editor.",
        "It is written in C.",
        "It has many users.",
    }
    # the heading says what the line is: a picked sentence, not a classifier's classes
    assert [x for x in cap.err.strip().splitlines() if not x.startswith("qkv generate:")][-1] == (
        "summarize-extractive: the sentence of each input the model picks as its summary"
    )
    report = tmp_path / "report.html"
    assert main(["viz", "--checkpoint", str(run), text, "--out", str(report)]) == 0
    html = report.read_text(encoding="utf-8")
    views = json.loads(re.search(r'type="application/json">(.*?)</script>', html, re.S).group(1))
    assert len(views["tokens"]["input"]) == len(task.encode_text(text))

    abstractive, abs_task = load_trained(runs["summarize"])
    table = compare(abstractive, abs_task, model, task, "test", beam_size=2)
    assert list(table) == ["lead-1", "extractive", "abstractive"]
    refs = [d.summary for d in docs]
    assert table["lead-1"]["rougeL"] == pytest.approx(
        metrics.rouge([d.sentences[0] for d in docs], refs)["rougeL"]
    )
    assert table["extractive"]["rougeL"] == pytest.approx(out["rougeL"])
    argv = ["summarize_table.py", "--abstractive", str(runs["summarize"]), "--extractive",
            str(run), "--beam-size", "2", "--json"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    capsys.readouterr()
    runpy.run_path(str(SCRIPT), run_name="__main__")
    printed = json.loads(capsys.readouterr().out)  # the same documents and models: equal
    assert list(printed) == list(table)
    for name, scores in table.items():
        assert printed[name] == pytest.approx(scores)
