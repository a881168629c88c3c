"""The classify task: TSV reading and its errors, grouped splits, metrics and the TF-IDF
baseline against scikit-learn, mean pooling, frozen modules, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qkv.cli import main
from qkv.models import EncoderConfig, build, mean_pool
from qkv.tasks import TaskError, TaskOptions, TextClassifyTask, build_trainer, load_trained
from qkv.tasks.text.classify import LabelledText, read_labelled_tsv, top_labels
from qkv.tasks.text.classify_baseline import TFIDF_SETTINGS, label_metrics, tfidf_baseline
from qkv.training import TrainConfig
from qkv.training.finetune import freeze_modules

sklearn_metrics = pytest.importorskip("sklearn.metrics")

WORDS = {
    "net": "network socket server client protocol http tcp",
    "games": "game player level puzzle arcade board chess",
    "text": "editor font document spelling markup latex typesetting",
}


def _tsv(tmp_path: Path, lines: list[str], name: str = "texts.tsv") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def _corpus(tmp_path: Path, n: int = 30) -> Path:
    """``n`` texts per class, each a different mix of its class's words."""
    lines = []
    for label, words in WORDS.items():
        w = words.split()
        for i in range(n):
            lines.append(f"{label}\t{w[i % 7]} {w[(i * 3 + 1) % 7]} and {w[(i + 4) % 7]} {i}")
    return _tsv(tmp_path, lines)


def test_read_labelled_tsv(tmp_path) -> None:
    p = _tsv(tmp_path, ["net\ta web server", "", " games \t a\tchess game \r"])
    assert read_labelled_tsv(p) == [
        LabelledText("a web server", "net", "a web server"),
        LabelledText("a\tchess game", "games", "a\tchess game"),  # tabs after the first: text
    ]


def test_tsv_errors_name_file_and_line(tmp_path) -> None:
    p = _tsv(tmp_path, ["net\ta", "games\tb", "no tab here"])
    with pytest.raises(TaskError, match=rf"{p}, line 3: expected 'label<TAB>text', found no tab"):
        read_labelled_tsv(p)
    p = _tsv(tmp_path, ["net\ta", "\tb"], "nolabel.tsv")
    with pytest.raises(TaskError, match=r"nolabel.tsv, line 2: empty label"):
        read_labelled_tsv(p)
    p = _tsv(tmp_path, ["net\ta", "games\t  "], "notext.tsv")
    with pytest.raises(TaskError, match=r"notext.tsv, line 2: empty text"):
        read_labelled_tsv(p)
    p = _tsv(tmp_path, ["net\ta", "net\tb"], "one.tsv")
    with pytest.raises(TaskError, match=r"one.tsv has a single class 'net'"):
        read_labelled_tsv(p)
    empty = _tsv(tmp_path, ["", ""], "empty.tsv")
    with pytest.raises(TaskError, match=rf"{empty} is empty"):
        read_labelled_tsv(empty)
    missing = tmp_path / "missing.tsv"
    with pytest.raises(TaskError, match=rf"{missing} does not exist"):
        TextClassifyTask(TaskOptions(data=str(missing))).examples("train")


def test_option_errors(tmp_path) -> None:
    with pytest.raises(TaskError, match=r"either data .* or corpus"):
        TextClassifyTask(TaskOptions(data="x.tsv", extra={"corpus": "debian"}))
    with pytest.raises(TaskError, match=r"corpus must be one of \['debian'\]"):
        TextClassifyTask(TaskOptions(extra={"corpus": "news"}))
    with pytest.raises(TaskError, match="tokenizer 'hf' is a pretrained model's"):
        TextClassifyTask(TaskOptions(data=str(_corpus(tmp_path)), tokenizer="hf")).examples("train")


def test_splits_are_grouped_seeded_and_deterministic(tmp_path) -> None:
    lines = [f"{'ab'[i % 2]}\ttext number {i}" for i in range(100)]
    lines += ["a\ttext number 3", "b\ttext number 3"]  # duplicates of one text: one group
    p = _tsv(tmp_path, lines)
    opts = TaskOptions(data=str(p), n_valid=10, n_test=10, tokenizer="word")
    a, b = TextClassifyTask(opts).splits(), TextClassifyTask(opts).splits()
    assert a == b and len(a["valid"]) + len(a["test"]) + len(a["train"]) == 102
    texts = {s: {r.text for r in v} for s, v in a.items()}
    assert len(texts["valid"]) == len(texts["test"]) == 10
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["valid"]
    other = TextClassifyTask(TaskOptions(data=str(p), n_valid=10, n_test=10, seed=1)).splits()
    assert {r.text for r in other["test"]} != texts["test"]


def test_top_labels_keeps_the_most_frequent_ties_by_name() -> None:
    rec = [LabelledText(str(i), lab, str(i)) for i, lab in enumerate("aaabbccdde")]
    kept, dropped = top_labels(rec, 3)
    assert {r.label for r in kept} == {"a", "b", "c"} and dropped == 3


def test_label_metrics_are_scikit_learns() -> None:
    true, pred = [0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 2, 0, 2]
    got = label_metrics(true, pred)
    assert got["accuracy"] == pytest.approx(100 * 5 / 7)
    # hand-worked F1 = 2PR/(P+R): class 0 P=R=1/2 -> 1/2; class 1 P=2/3 R=1 -> 4/5;
    # class 2 P=1 R=2/3 -> 4/5; macro = (1/2 + 4/5 + 4/5) / 3 = 7/10
    assert got["macro_f1"] == pytest.approx(70.0)
    assert got["macro_f1"] == pytest.approx(
        100 * sklearn_metrics.f1_score(true, pred, average="macro")
    )


def test_tfidf_baseline_is_the_direct_scikit_learn_computation(tmp_path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    task = TextClassifyTask(TaskOptions(data=str(_corpus(tmp_path)), n_valid=9, n_test=9))
    got = task.baseline("test")
    s, index = task.splits(), {c: i for i, c in enumerate(task.class_names)}
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x = vec.fit_transform([r.text for r in s["train"]])
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(x, [index[r.label] for r in s["train"]])
    pred = clf.predict(vec.transform([r.text for r in s["test"]]))
    true = [index[r.label] for r in s["test"]]
    assert got["accuracy"] == pytest.approx(100 * sklearn_metrics.accuracy_score(true, pred))
    assert TFIDF_SETTINGS["LogisticRegression"]["C"] == 1.0
    with pytest.raises(ValueError, match="at least 2 classes"):
        tfidf_baseline(["a b", "a c"], [0, 0], ["a"], [0])


def test_mean_pooling_head_reads_the_real_tokens_only() -> None:
    torch.manual_seed(0)
    cfg = EncoderConfig(
        d_model=16, n_heads=2, d_ff=32, n_layers=1, vocab_size=30, max_len=8, n_classes=3,
        pooler=False, pooling="mean", mlm_head=False, dropout=0.0, attn_dropout=0.0,
    )  # fmt: skip
    model = build(cfg).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    mask = ids != 0
    out = model(ids, padding_mask=mask)
    alone = model(ids[:1, :3])  # the same text unpadded
    torch.testing.assert_close(out.logits[:1], alone.logits, atol=1e-5, rtol=1e-5)
    h = out.last_hidden_state
    torch.testing.assert_close(mean_pool(h, mask)[0], h[0, :3].mean(0))
    torch.testing.assert_close(out.logits, model.classifier(mean_pool(h, mask)))
    with pytest.raises(ValueError, match="pooling must be one of"):
        EncoderConfig(pooling="max")


def test_freeze_keeps_modules_fixed_and_names_unknown_ones(tmp_path) -> None:
    task = TextClassifyTask(
        TaskOptions(data=str(_corpus(tmp_path)), n_valid=9, n_test=9, vocab_size=300)
    )
    cfg = TrainConfig(
        steps=1, batch_size=8, progress=False, freeze="embed,encoder.layers.0", lr=1e-2
    )
    trainer = build_trainer(
        task, cfg, None, model_overrides={"d_model": 16, "d_ff": 32, "n_heads": 2}
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    frozen = [k for k in before if k.startswith(("embed.", "encoder.layers.0."))]
    assert frozen and set(trainer.frozen) == {k for k in frozen if "." in k}
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert not torch.equal(
        before["encoder.layers.1.ff.fc1.weight"], after["encoder.layers.1.ff.fc1.weight"]
    )
    with pytest.raises(ValueError, match=r"freeze: 'embd' is no module .*modules: embed, encoder"):
        freeze_modules(trainer.model, "embd")
    with pytest.raises(ValueError, match="freeze must be comma-separated module names"):
        TrainConfig(freeze="embed,,encoder")


def test_cli_train_eval_generate_and_the_comparison_table(tmp_path, capsys) -> None:
    data = _corpus(tmp_path)
    common = ["train", "--task", "classify", "--data", str(data), "--steps", "3",
              "--batch-size", "8", "--eval-every", "3", "--no-progress", "--vocab-size", "300",
              "--model", "d_model=16", "--model", "d_ff=32", "--model", "n_heads=2"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--out", str(tmp_path / "b"), "--tokenizer", "word", "--lr", "0.01"]) == 0
    log = capsys.readouterr()
    out = log.out + log.err
    assert "eval at step 3: accuracy" in out and "macro_f1" in out
    assert "predicted '" in out or "all classified right" in out  # misclassified samples

    assert main(["eval", "--checkpoint", str(tmp_path / "a"), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert list(single)[:3] == ["accuracy", "macro_f1", "loss"]
    model, task = load_trained(tmp_path / "a")
    assert single["accuracy"] == pytest.approx(task.evaluate(model, "test")["accuracy"])

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["eval", "--checkpoint", a, "--checkpoint", b, "--baseline", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert list(table["rows"]) == [a, b, "baseline"]
    assert table["rows"]["baseline"] == pytest.approx(task.baseline("test"))
    # --limit holds for every row: the baseline is scored on the models' examples
    assert main(["eval", "--checkpoint", a, "--baseline", "--limit", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows["baseline"] == pytest.approx(task.baseline("test", limit=3))
    assert rows[a]["accuracy"] == pytest.approx(task.evaluate(model, "test", limit=3)["accuracy"])
    assert main(["eval", "--checkpoint", a, "--baseline"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "accuracy", "macro_f1", "loss"]
    assert lines[2].split()[0] == "baseline" and lines[2].split()[-1] == "-"

    assert main(["generate", "--checkpoint", a, "a chess game", "an http server"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 2
    for row in rows:
        names = [part.split()[0] for part in row.split(", ")]
        probs = [float(part.split()[1]) for part in row.split(", ")]
        assert sorted(names) == sorted(WORDS) and probs == sorted(probs, reverse=True)


def test_split_options_name_the_default_corpus(tmp_path) -> None:
    """A run on the default corpus and one that named it (`--corpus debian`) are scored on
    the same split, so `qkv eval` compares them; a file is another split."""
    named = TextClassifyTask(TaskOptions(extra={"corpus": "debian"}))
    assert TextClassifyTask().split_options() == named.split_options()
    assert named.split_options()["corpus"] == "debian"
    own = TextClassifyTask(TaskOptions(data=str(_corpus(tmp_path))))
    assert own.split_options()["corpus"] is None != named.split_options()["corpus"]
    assert own.split_options() != named.split_options()


def test_cli_comparing_other_splits_is_one_clear_error(tmp_path, capsys) -> None:
    data = _corpus(tmp_path)
    common = ["train", "--task", "classify", "--data", str(data), "--steps", "1", "--batch-size",
              "8", "--no-progress", "--vocab-size", "300", "--model", "d_model=16",
              "--model", "d_ff=32", "--model", "n_heads=2"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--out", str(tmp_path / "b"), "--data-seed", "1"]) == 0
    capsys.readouterr()
    code = main(["eval", "--checkpoint", str(tmp_path / "a"), "--checkpoint", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("qkv: error:") and "\n" not in err
    assert "another task or split" in err and "seed=1 vs 0" in err
    assert main(["eval", "--checkpoint", str(tmp_path / "a"), "--baseline"]) == 0
    capsys.readouterr()
    code = main(["train", "--task", "classify", "--data", str(_tsv(tmp_path, ["a\tx", "a\ty"])),
                 "--out", str(tmp_path / "c")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "has a single class 'a'" in err and "\n" not in err


def test_debian_sections_top_20_grouped_by_source(monkeypatch) -> None:
    from qkv.data import debian

    def record(i: int, section: str, source: str) -> debian.PackageDescription:
        paragraphs = ((f"Long text {i}.",), ("Second paragraph.",))
        return debian.PackageDescription(f"p{i}", source, section, f"Synopsis {i}", paragraphs, "")

    # section s{k} has 30 - k packages, two binaries per source package
    records = [record(i, f"s{k:02d}", f"src{k}-{i // 2}") for k in range(25) for i in range(30 - k)]
    monkeypatch.setattr(debian, "read_corpus", lambda: records)
    task = TextClassifyTask(TaskOptions(n_valid=20, n_test=20))
    splits = task.splits()
    assert task.class_names == tuple(f"s{k:02d}" for k in range(20))
    assert task.dropped == sum(30 - k for k in range(20, 25))
    assert f"{task.dropped:,} packages of other sections dropped" in task.data_note()
    first = next(
        r
        for r in splits["train"] + splits["valid"] + splits["test"]
        if r.text.startswith("Synopsis 0.")
    )
    assert first.text == "Synopsis 0. Long text 0. Second paragraph."
    where = {r.group: s for s, rs in splits.items() for r in rs}
    assert all(where[r.group] == s for s, rs in splits.items() for r in rs)  # siblings together
    assert len({r.group for r in splits["test"]}) == 20

    def missing() -> list[debian.PackageDescription]:
        raise debian.DebianCorpusError("no English descriptions in /x: run `apt-get update ...`")

    monkeypatch.setattr(debian, "read_corpus", missing)
    with pytest.raises(TaskError, match="reads Debian's package descriptions: no English"):
        TextClassifyTask(TaskOptions()).examples("train")
