"""The Debian package-description reader on a fixture written here, and on the real apt lists
when they hold English descriptions (``apt-get update -o Acquire::Languages=en``)."""

from __future__ import annotations

import gzip
import os
from collections import defaultdict
from pathlib import Path

import pytest

from qkv.data import debian
from qkv.data.debian import (
    DebianCorpusError,
    PackageDescription,
    parse_description,
    read_corpus,
    split_of,
    split_sentences,
)

TRANSLATION = """\
Package: foo
Description-md5: 11111111111111111111111111111111
Description-en: fast frobnicator for text
 Foo frobnicates text. It is fast, e.g. on large files.
 .
 Features:
  * streaming input
    of any size
  * Unicode
 .
 Example:
   foo --all input.txt
 .
 This package contains the program.

Package: foo-data
Description-md5: 22222222222222222222222222222222
Description-en: fast frobnicator for text (data)
 This package contains the data of foo.

Package: foo-data-copy
Description-md5: 22222222222222222222222222222222
Description-en: fast frobnicator for text (data)
 This package contains the data of foo.

Package: libbar1
Description-md5: 33333333333333333333333333333333
Description-en: bar library
 Bar does things in 500 B.C. and 500 A.D. The library is small.

Package: nosynopsis-only
Description-md5: 44444444444444444444444444444444
Description-en: a package with no long description

Package: otherarch-only
Description-md5: 55555555555555555555555555555555
Description-en: a package only on another architecture
 It has no stanza in the Packages file.
"""

PACKAGES = """\
Package: foo
Version: 1.0-1
Section: contrib/text
Description-md5: 11111111111111111111111111111111

Package: foo-data
Source: foo
Version: 1.0-1
Section: Text

Package: foo-data-copy
Source: foo (1.0-1)
Section: text

Package: libbar1
Source: bar (2.1-3)
Version: 2.1-3+b1
Section: non-free/libs

Package: nosynopsis-only
Section: misc
"""


def write_lists(directory: Path, compress: bool = False) -> Path:
    """Apt list files in ``directory`` as apt names them (gzip-compressed if asked)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = "deb.example.org_debian_dists_stable_main_"
    for name, text in (("i18n_Translation-en", TRANSLATION), ("binary-amd64_Packages", PACKAGES)):
        if compress:
            (directory / f"{stem}{name}.gz").write_bytes(gzip.compress(text.encode()))
        else:
            (directory / f"{stem}{name}").write_text(text)
    (directory / f"{stem}i18n_Translation-de").write_text("Package: ignored\n")
    return directory


@pytest.fixture
def lists(tmp_path: Path) -> Path:
    return write_lists(tmp_path / "lists")


def test_records_are_parsed_joined_and_deduplicated(lists: Path) -> None:
    records = {r.package: r for r in read_corpus(lists)}
    # foo-data-copy repeats foo-data's md5; nosynopsis-only has no long description;
    # otherarch-only has no Packages stanza
    assert sorted(records) == ["foo", "foo-data", "libbar1"]
    foo = records["foo"]
    assert foo == PackageDescription(
        package="foo",
        source="foo",
        section="text",
        synopsis="fast frobnicator for text",
        paragraphs=(
            ("Foo frobnicates text. It is fast, e.g. on large files.",),
            ("Features:", "streaming input of any size", "Unicode"),
            ("Example:", "foo --all input.txt"),
            ("This package contains the program.",),
        ),
        md5="11111111111111111111111111111111",
    )
    assert foo.sentences == (
        "Foo frobnicates text.",
        "It is fast, e.g. on large files.",
        "Features:",
        "streaming input of any size",
        "Unicode",
        "Example:",
        "foo --all input.txt",
        "This package contains the program.",
    )
    assert foo.text.startswith("Foo frobnicates text. It is fast")
    assert (records["foo-data"].source, records["foo-data"].section) == ("foo", "text")
    assert (records["libbar1"].source, records["libbar1"].section) == ("bar", "libs")
    assert records["libbar1"].sentences == (
        "Bar does things in 500 B.C. and 500 A.D. The library is small.",
    )


def test_compressed_lists_read_the_same(tmp_path: Path) -> None:
    # apt-helper cat-file when apt is installed, the gzip module otherwise
    plain = read_corpus(write_lists(tmp_path / "plain"))
    assert read_corpus(write_lists(tmp_path / "gz", compress=True)) == plain
    assert debian.read_list_file(next((tmp_path / "gz").glob("*Packages.gz"))) == PACKAGES


def test_a_corpus_is_parsed_once_until_a_file_changes(lists: Path, monkeypatch) -> None:
    """Each split of a task reads the corpus: the second read parses nothing; a file whose
    bytes change (size and modification time kept) is read again, and so is another
    directory."""
    parsed, parse = [], debian.parse_translations

    def spy(text):  # type: ignore[no-untyped-def]
        parsed.append(len(text))
        return parse(text)

    monkeypatch.setattr(debian, "parse_translations", spy)
    monkeypatch.setattr(debian, "_CORPUS", {})
    first = read_corpus(lists)
    first.clear()  # each call gets its own list
    assert read_corpus(lists) == read_corpus(lists) and len(parsed) == 1
    en = next(lists.glob("*Translation-en"))
    st = en.stat()
    en.write_text(TRANSLATION.replace("fast frobnicator", "slow frobnicator"))
    os.utime(en, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert en.stat().st_size == st.st_size
    assert {r.synopsis for r in read_corpus(lists)} >= {"slow frobnicator for text"}
    assert len(parsed) == 2
    read_corpus(write_lists(lists.parent / "other"))
    assert len(parsed) == 3


def test_missing_translations_name_the_fix(tmp_path: Path) -> None:
    (tmp_path / "x_binary-amd64_Packages").write_text(PACKAGES)
    with pytest.raises(DebianCorpusError, match=r"apt-get update -o Acquire::Languages=en"):
        read_corpus(tmp_path)
    with pytest.raises(DebianCorpusError, match="apt-get update"):
        read_corpus(tmp_path / "absent")
    with pytest.raises(DebianCorpusError, match="missing"):
        debian.read_list_file(tmp_path / "absent_Packages.lz4")


def test_paragraph_and_list_rules() -> None:
    lines = [
        " Wrapped prose",
        " continues here.",
        " - item one",
        "   continues",
        " - item two",
        " Prose after the list.",
        "  verbatim   line",
        " .",
        " .",
        " Last paragraph.",
    ]
    assert parse_description(lines) == (
        (
            "Wrapped prose continues here.",
            "item one continues",
            "item two",
            "Prose after the list.",
            "verbatim line",
        ),
        ("Last paragraph.",),
    )
    assert parse_description([" .", "", " ."]) == ()


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One. Two! Three? four", ["One.", "Two!", "Three? four"]),
        ('He said "Go." Then left.', ['He said "Go."', "Then left."]),
        ("Use v1.2.3 now. 42 users agree.", ["Use v1.2.3 now.", "42 users agree."]),
        ("See Dr. Who, i.e. Tom. Done.", ["See Dr. Who, i.e. Tom.", "Done."]),
        ("Written in C. Fine.", ["Written in C.", "Fine."]),
        ("Made in the U.S. Since 1999.", ["Made in the U.S. Since 1999."]),
        ("   ", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_split_is_deterministic_seeded_and_follows_fractions() -> None:
    sources = [f"src{i}" for i in range(4000)]
    splits = [split_of(s, seed=0) for s in sources]
    assert splits == [split_of(s, seed=0) for s in sources]
    assert splits != [split_of(s, seed=1) for s in sources]
    for name, expected in (("test", 0.05), ("valid", 0.05), ("train", 0.90)):
        # binomial: 5 standard deviations of a 4,000-draw fraction are below 0.024
        assert abs(splits.count(name) / len(sources) - expected) < 0.024
    assert {split_of(s, valid=0.0, test=1.0) for s in sources[:50]} == {"test"}
    with pytest.raises(ValueError, match=r"valid \(0.7\) and test \(0.5\)"):
        split_of("x", valid=0.7, test=0.5)


def test_load_split_keeps_siblings_together(lists: Path) -> None:
    by_split = {s: debian.load_split(s, lists, valid=0.3, test=0.3) for s in debian.SPLITS}
    assert sum(len(v) for v in by_split.values()) == 3
    where = {r.source: s for s, records in by_split.items() for r in records}
    assert {s for s, records in by_split.items() for r in records if r.source == "foo"} == {
        where["foo"]
    }
    with pytest.raises(ValueError, match="'dev'"):
        debian.load_split("dev", lists)  # type: ignore[arg-type]


def _has_english_lists() -> bool:
    try:
        debian.list_files()
    except (DebianCorpusError, OSError):
        return False
    return True


@pytest.mark.skipif(
    not _has_english_lists(), reason=f"no English apt lists: {debian.FETCH_COMMAND}"
)
def test_real_corpus() -> None:
    records = read_corpus()
    assert len(records) > 20_000
    assert len({r.md5 for r in records}) == len(records)
    assert len({r.package for r in records}) == len(records)
    sources: dict[str, set[str]] = defaultdict(set)
    for r in records:
        sources[r.source].add(split_of(r.source))
        assert r.synopsis and r.paragraphs and "/" not in r.section
    assert all(len(s) == 1 for s in sources.values())
    assert {split_of(r.source) for r in records} == set(debian.SPLITS)
