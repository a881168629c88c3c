"""The translate task: TSV reading and its errors, the Ding dictionary parser, splits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qkv.data import ding
from qkv.data.tokenizers import BPETokenizer
from qkv.tasks import TaskError, TaskOptions, TranslateTask, load_task
from qkv.tasks.text.translate import read_tsv


def _tsv(tmp_path: Path, lines: list[str], name: str = "pairs.tsv") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_read_tsv(tmp_path) -> None:
    p = _tsv(tmp_path, ["Hallo Welt.\tHello world.", "", "  Gut.\tGood.  \r"])
    assert read_tsv(p) == [("Hallo Welt.", "Hello world."), ("Gut.", "Good.")]


def test_tsv_errors_name_file_and_line(tmp_path) -> None:
    p = _tsv(tmp_path, ["a\tb", "c\td", "no tab here"])
    with pytest.raises(TaskError, match=rf"{p}, line 3: expected 'source<TAB>target' .*0 tabs"):
        read_tsv(p)
    p = _tsv(tmp_path, ["a\tb\tc"], "three.tsv")
    with pytest.raises(TaskError, match=r"three.tsv, line 1: .*found 2 tabs"):
        read_tsv(p)
    p = _tsv(tmp_path, ["a\tb", "\tx"], "empty_side.tsv")
    with pytest.raises(TaskError, match=r"empty_side.tsv, line 2: empty source"):
        read_tsv(p)
    missing = tmp_path / "missing.tsv"
    with pytest.raises(TaskError, match=rf"{missing} does not exist"):
        TranslateTask(TaskOptions(data=str(missing))).examples("train")
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(TaskError, match=rf"{empty} is empty"):
        read_tsv(empty)
    binary = tmp_path / "binary.tsv"
    binary.write_bytes(b"\xff\xfe\x00a\tb")
    with pytest.raises(TaskError, match=rf"{binary} is not UTF-8"):
        read_tsv(binary)


def test_translate_splits_by_source(tmp_path) -> None:
    lines = [f"Satz nummer {i} ist hier.\tSentence number {i} is here." for i in range(60)]
    lines += ["Satz nummer 5 ist hier.\tThis is sentence five."]  # a second reference
    p = _tsv(tmp_path, lines)
    task = TranslateTask(TaskOptions(data=str(p), n_valid=5, n_test=5, vocab_size=300))
    splits = {s: task.examples(s) for s in ("train", "valid", "test")}
    sources = {s: {x.src for x in v} for s, v in splits.items()}
    assert len(sources["valid"]) == len(sources["test"]) == 5 and len(sources["train"]) == 50
    assert not (sources["train"] & sources["valid"]) and not (sources["train"] & sources["test"])
    assert sum(len(v) for v in splits.values()) == 61
    five = [x for v in splits.values() for x in v if x.src == "Satz nummer 5 ist hier."]
    assert {x.tgt for x in five} == {"Sentence number 5 is here.", "This is sentence five."}
    assert TranslateTask(task.options).examples("test") == splits["test"]  # deterministic
    other = TranslateTask(TaskOptions(data=str(p), n_valid=5, n_test=5, seed=1)).examples("test")
    assert other != splits["test"]
    assert isinstance(task.src_tokenizer, BPETokenizer) and task.src_tokenizer.vocab_size <= 300
    rev = TranslateTask(TaskOptions(data=str(p), n_valid=5, n_test=5, extra={"reverse": True}))
    assert rev.read_pairs()[0] == ("Sentence number 0 is here.", "Satz nummer 0 ist hier.")


def test_small_data_defaults_and_errors(tmp_path) -> None:
    p = _tsv(tmp_path, [f"q{i}\ta{i}" for i in range(40)])
    task = TranslateTask(TaskOptions(data=str(p), tokenizer="word"))
    assert [len(task.examples(s)) for s in ("train", "valid", "test")] == [36, 2, 2]  # 5% each
    with pytest.raises(TaskError, match=r"cannot split 40 distinct sources into n_train=39"):
        TranslateTask(TaskOptions(data=str(p), n_train=39)).examples("train")
    tiny = _tsv(tmp_path, ["a\tb", "a\tc"], "tiny.tsv")
    with pytest.raises(TaskError, match=r"1 distinct source sentences; need at least 3"):
        TranslateTask(TaskOptions(data=str(tiny))).examples("train")


def test_missing_dictionary_says_how_to_install(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(ding, "DING_PATH", tmp_path / "de-en")
    with pytest.raises(TaskError, match=r"apt-get install trans-de-en.*--data"):
        TranslateTask({"corpus": "ding"}).examples("train")


def test_load_task_does_not_read_the_data(tmp_path) -> None:
    p = _tsv(tmp_path, [f"quelle {i} .\tziel {i} ." for i in range(30)])
    task = TranslateTask(TaskOptions(data=str(p), vocab_size=280))
    ckpt = tmp_path / "ckpt"
    task.save(ckpt)
    p.unlink()
    back = load_task(ckpt)
    assert back.src_tokenizer.encode("quelle 7 .") == task.src_tokenizer.encode("quelle 7 .")
    with pytest.raises(TaskError, match="does not exist"):
        back.examples("train")


FAKE_DING = """\
# Version :: test
Abendessen {n} | Das Abendessen hat mir sehr gut geschmeckt. :: supper | I enjoyed my supper very much.
Hund {m} | Der Hund [zool.] bellt die ganze Nacht laut. :: dog | The dog barks loudly all night long.
Ich habe (gerade) leider keine Zeit dafür.; Ich bin gerade sehr beschäftigt. :: I have no time for that.; I am busy.
Kurz und gut. :: In short.
Er ist kein Freund von Traurigkeit. | zu viel :: He likes to enjoy himself. | too much | extra
Das ist nicht dasselbe wie / gleich wie vorher. :: That is not the same as before.
Wir sehen uns morgen im Büro <Büro> wieder! :: See you at the office tomorrow!
Was kostet das alles zusammen? :: What does it cost in total?; How much is it?
"""


def test_ding_parser_on_a_fake_file(tmp_path) -> None:
    path = tmp_path / "de-en"
    path.write_text(FAKE_DING, encoding="utf-8")
    pairs = ding.read_ding(path)
    assert pairs == [
        ("Das Abendessen hat mir sehr gut geschmeckt.", "I enjoyed my supper very much."),
        ("Der Hund bellt die ganze Nacht laut.", "The dog barks loudly all night long."),
        ("Ich habe leider keine Zeit dafür.", "I have no time for that."),
        ("Ich habe leider keine Zeit dafür.", "I am busy."),
        ("Ich bin gerade sehr beschäftigt.", "I have no time for that."),
        ("Ich bin gerade sehr beschäftigt.", "I am busy."),
        # "Kurz und gut." has 3 words; the misaligned "|" line and the "/" line are dropped
        ("Wir sehen uns morgen im Büro wieder!", "See you at the office tomorrow!"),
        ("Was kostet das alles zusammen?", "What does it cost in total?"),
        ("Was kostet das alles zusammen?", "How much is it?"),
    ]
    assert ding.clean("Haus {n} [arch.] (alt) ,ok <Abk.>") == "Haus,ok"
    assert ding.is_sentence("Eins zwei drei vier fünf.") and not ding.is_sentence("Eins zwei.")


def test_ding_is_parsed_once_per_text(tmp_path, monkeypatch) -> None:
    """A task loaded three times reads the dictionary once; a changed file of the same size
    and modification time is parsed again (the text decides, not the file's metadata)."""
    path = tmp_path / "de-en"
    path.write_text(FAKE_DING, encoding="utf-8")
    parsed, parse_lines = [], ding.parse_lines

    def spy(lines, min_words):  # type: ignore[no-untyped-def]
        parsed.append(min_words)
        return parse_lines(lines, min_words)

    monkeypatch.setattr(ding, "parse_lines", spy)
    monkeypatch.setattr(ding, "_PARSED", {})  # what other tests of this process parsed
    first = ding.read_ding(path)
    first.append(("mutated", "by the caller"))  # each call gets its own list
    assert ding.read_ding(path) == ding.read_ding(path) == first[:-1] and parsed == [5]
    assert len(ding.read_ding(path, min_words=6)) == 5 and parsed == [5, 6]
    st = path.stat()
    path.write_text(FAKE_DING.replace("Hund", "Hase"), encoding="utf-8")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    assert ding.read_ding(path)[1][0] == "Der Hase bellt die ganze Nacht laut."


@pytest.mark.skipif(not ding.DING_PATH.is_file(), reason="trans-de-en is not installed")
def test_real_dictionary() -> None:
    task = TranslateTask({"corpus": "ding", "n_train": 2000})
    splits = {s: task.examples(s) for s in ("train", "valid", "test")}
    assert [len({p.src for p in splits[s]}) for s in ("valid", "test")] == [500, 500]
    assert len({p.src for p in splits["train"]}) == 2000
    pairs = [p for v in splits.values() for p in v]
    for de, en in pairs[:: len(pairs) // 200]:
        assert de.endswith((".", "!", "?")) and len(de.split()) >= 5
        assert en.endswith((".", "!", "?"))
        assert not any(c in de + en for c in "{}[]<>/")
