"""The DDTP parallel-corpus reader on a hand-made fixture of the apt file format, and on the
real lists when they hold German and English (``apt-get update -o Acquire::Languages=en,de``)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from qkv.data.debian import LISTS_DIR, DebianCorpusError, split_of
from qkv.data.debian_parallel import (
    ParallelPair,
    align,
    available_languages,
    read_pairs,
    split_pairs,
    translation_files,
)

ENGLISH = """\
Package: foo
Description-md5: 11111111111111111111111111111111
Description-en: fast frobnicator for text
 Foo frobnicates text. It is fast on large files.
 .
 This package contains the program.

Package: foo-doc
Description-md5: 22222222222222222222222222222222
Description-en: fast frobnicator for text (documentation)
 This package contains the documentation.

Package: bar
Description-md5: 33333333333333333333333333333333
Description-en: bar library
 Bar does things. It is small.
 .
 This package contains the library.

Package: baz
Description-md5: 44444444444444444444444444444444
Description-en: baz tool
 One paragraph only.

Package: qux
Description-md5: 55555555555555555555555555555555
Description-en: qux game
 Qux is a game for the whole family and a very long paragraph follows here.
"""

GERMAN = """\
Package: foo
Description-md5: 11111111111111111111111111111111
Description-de: schneller Textfrobnikator
 Foo frobniziert Text. Es ist schnell bei großen Dateien.
 .
 Dieses Paket enthält das Programm.

Package: foo-doc
Description-md5: 22222222222222222222222222222222
Description-de: schneller Textfrobnikator (Dokumentation)
 Dieses Paket enthält die Dokumentation.

Package: bar
Description-md5: 33333333333333333333333333333333
Description-de: Bar-Bibliothek
 Bar tut Dinge, und sie ist klein.
 .
 Dieses Paket enthält die Bibliothek.

Package: baz
Description-md5: 44444444444444444444444444444444
Description-de: Baz-Werkzeug
 Ein Absatz.
 .
 Noch ein Absatz, den das Englische nicht hat.

Package: qux
Description-md5: 55555555555555555555555555555555
Description-de: qux game
 X.

Package: stale
Description-md5: 99999999999999999999999999999999
Description-de: veraltete Übersetzung
 Ihr englisches Original hat sich geändert.
"""

PACKAGES = """\
Package: foo
Section: utils

Package: foo-doc
Source: foo
Section: doc

Package: bar
Section: libs
"""


@pytest.fixture
def lists(tmp_path: Path) -> Path:
    (tmp_path / "x_main_i18n_Translation-en").write_text(ENGLISH)
    with gzip.open(tmp_path / "x_main_i18n_Translation-de.gz", "wt", encoding="utf-8") as f:
        f.write(GERMAN)
    (tmp_path / "x_main_binary-amd64_Packages").write_text(PACKAGES)
    return tmp_path


def test_pairs_align_by_md5_paragraph_and_sentence(lists: Path) -> None:
    corpus = read_pairs("de", lists)
    got = [(p.source, p.target, p.kind, p.package) for p in corpus.pairs]
    assert got == [
        ("schneller Textfrobnikator", "fast frobnicator for text", "synopsis", "foo"),
        # two sentences on each side: sentence pairs
        ("Foo frobniziert Text.", "Foo frobnicates text.", "sentence", "foo"),
        ("Es ist schnell bei großen Dateien.", "It is fast on large files.", "sentence", "foo"),
        ("Dieses Paket enthält das Programm.", "This package contains the program.",
         "paragraph", "foo"),
        # foo-doc is built by the source package foo: it splits with foo
        ("schneller Textfrobnikator (Dokumentation)",
         "fast frobnicator for text (documentation)", "synopsis", "foo"),
        ("Dieses Paket enthält die Dokumentation.", "This package contains the documentation.",
         "paragraph", "foo"),
        ("Bar-Bibliothek", "bar library", "synopsis", "bar"),
        # one German sentence against two English ones: the paragraph pair
        ("Bar tut Dinge, und sie ist klein.", "Bar does things. It is small.", "paragraph", "bar"),
        ("Dieses Paket enthält die Bibliothek.", "This package contains the library.",
         "paragraph", "bar"),
    ]  # fmt: skip
    # baz: 2 paragraphs against 1, dropped whole; stale: no English original
    assert corpus.descriptions == 5 and corpus.unequal_paragraphs == 1
    # qux: an untranslated synopsis and a paragraph of 2 characters against 75
    assert corpus.filtered == {"length": 0, "ratio": 1, "identical": 1, "duplicate": 0}


def test_filters_and_duplicates(lists: Path) -> None:
    (lists / "x_main_i18n_Translation-de.gz").unlink()
    twice = GERMAN.replace("Package: foo-doc", "Package: foo-doc2", 1)
    (lists / "y_i18n_Translation-de").write_text(twice)
    (lists / "z_i18n_Translation-de").write_text(GERMAN)  # the same md5s again: read once
    corpus = read_pairs("de", lists, max_words=3)
    # only pairs of at most 3 words on both sides survive
    assert [p.source for p in corpus.pairs] == ["Foo frobniziert Text.", "Bar-Bibliothek"]
    assert corpus.filtered == {"length": 8, "ratio": 0, "identical": 1, "duplicate": 0}
    assert corpus.descriptions == 5  # a description found again under another name: once


def test_align_rules() -> None:
    assert align((("A b.",),), (("C d.", "E f."),)) == [("A b.", "C d. E f.", "paragraph")]
    assert align((("A.",), ("B.",)), (("C.",),)) is None
    assert align((), ()) == []


def test_splits_follow_source_packages_and_hold_out_train_text(lists: Path) -> None:
    corpus = read_pairs("de", lists)
    # fractions that put every package in test leave train empty and test whole
    splits = {s: split_pairs(corpus.pairs, s, valid=0.0, test=1.0) for s in ("train", "test")}
    assert splits["train"] == [] and len(splits["test"]) == len(corpus.pairs)
    for seed in range(20):
        parts = {s: split_pairs(corpus.pairs, s, seed=seed) for s in ("train", "valid", "test")}
        for s, pairs in parts.items():
            assert all(split_of(p.package, seed) == s for p in pairs)
        train_sources = {p.source for p in parts["train"]}
        assert not any(p.source in train_sources for p in parts["valid"] + parts["test"])
    with pytest.raises(ValueError, match="split must be train, valid or test"):
        split_pairs(corpus.pairs, "dev")  # type: ignore[arg-type]


def test_held_out_pair_with_train_text_is_dropped() -> None:
    # find a seed that puts package "a" in train and "b" in test
    seed = next(
        s for s in range(1000) if split_of("a", s) == "train" and split_of("b", s) == "test"
    )
    pairs = [
        ParallelPair("de", "Gleich.", "Same.", "a", "sentence"),
        ParallelPair("de", "Gleich.", "Same!", "b", "sentence"),
        ParallelPair("de", "Anders.", "Other.", "b", "sentence"),
    ]
    assert [p.source for p in split_pairs(pairs, "test", seed=seed)] == ["Anders."]


def test_missing_language_and_bad_codes_name_the_fix(lists: Path) -> None:
    assert available_languages(lists) == ["de"]
    with pytest.raises(DebianCorpusError, match=r"Translation-fr.*Acquire::Languages=en,fr"):
        read_pairs("fr", lists)
    for bad in ("", "../de", "DE", "de-en"):
        with pytest.raises(ValueError, match="language must be a code like 'de'"):
            translation_files(bad, lists)
    with pytest.raises(ValueError, match="must not be the target language"):
        read_pairs("en", lists)


@pytest.mark.skipif(
    not (LISTS_DIR.is_dir() and "de" in available_languages()),
    reason="needs the German and English apt lists (apt-get update -o Acquire::Languages=en,de)",
)
def test_real_german_corpus() -> None:
    corpus = read_pairs("de")
    # measured on Debian bookworm main: 13,163 descriptions in common with English
    assert corpus.descriptions > 5_000 and len(corpus.pairs) > 20_000
    assert corpus.unequal_paragraphs < 0.01 * corpus.descriptions
    test = split_pairs(corpus.pairs, "test")
    assert 0.02 * len(corpus.pairs) < len(test) < 0.08 * len(corpus.pairs)
