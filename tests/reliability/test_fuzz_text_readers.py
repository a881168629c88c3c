"""Text data files: the ``text data`` surface, fuzzed.

Every text file a user gives (``--data`` of translate, summarize, summarize-extractive,
classify, text2text and lm) and every text file qkv reads from the system (Debian's apt
indexes, the Ding dictionary) is parsed by one reader. Hypothesis feeds each reader damaged
and made-up text (tabs, carriage returns, Unicode line separators, NUL bytes, a BOM, bytes
that are not UTF-8, record fields in any order): each input either parses into well-formed
records or raises the error the CLI prints as one ``qkv: error:`` line (:data:`USER_ERRORS`:
a ``TaskError`` naming the file for ``--data``) -- never another exception. A fixed input
that once raised another is kept as an ``@example``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qkv.cli import USER_ERRORS
from qkv.data import debian, debian_parallel, ding
from qkv.tasks import TaskError, get_task
from qkv.tasks._common import read_text_file
from qkv.tasks.text.classify import read_labelled_tsv
from qkv.tasks.text.text2text import read_mixture_tsv
from qkv.tasks.text.translate import read_tsv

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Pieces that matter to the readers: separators, prefixes, record fields, odd characters.
PIECES = [
    "\t", "\n", "\r\n", "\r", " ", "  ", "\u2028", "\x85", "\x0c", "\x00", "\ufeff", "\u00a0",
    ".", "?", "!", "e.g.", "A.D.", "\"", "(", ")", "[x]", "{m}", "<Abk.>", "/", "…", ";",
    " :: ", " | ", "#", "summarize: ", "translate German to English: ", "classify: ",
    "Package: ", "Source: ", "Section: ", "Description-md5: ", "Description-en: ",
    "Description-de: ", "Ein kleiner Satz mit fünf Wörtern.", "The cat sees a big dog.",
    " .", "  * ", " - ", " 1. ", "x", "abc", "Ä", "日本", "😀", "0",
]  # fmt: skip
#: Text made of those pieces and of arbitrary strings.
TEXT = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=40).map("".join)


@st.composite
def file_bytes(draw: st.DrawFn, text: st.SearchStrategy[str] = TEXT) -> bytes:
    """A file: fuzzed text as UTF-8, maybe with bytes overwritten (then often not UTF-8)."""
    data = bytearray(draw(text).encode("utf-8"))
    for pos, value in draw(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)),
                                    max_size=2)):  # fmt: skip
        if pos < len(data):
            data[pos] = value
    return bytes(data)


def _write(directory: Path, data: bytes, name: str = "data.txt") -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def _check_refusal(e: BaseException, path: Path) -> None:
    """A reader's refusal: a TaskError (a user error) whose one line names the file."""
    assert isinstance(e, TaskError), f"{type(e).__name__}: {e}"
    assert str(path) in str(e) and str(e).strip(), str(e)


# -- the --data readers --------------------------------------------------------------------
def _pairs_ok(pairs: list[tuple[str, str]]) -> bool:
    return bool(pairs) and all(a and b and a == a.strip() and b == b.strip() for a, b in pairs)


READERS: dict[str, tuple[Callable[[Path], Any], Callable[[Any], bool]]] = {
    "read_text_file": (lambda p: read_text_file(p, "data"), lambda t: bool(t.strip())),
    "read_tsv": (read_tsv, lambda pairs: _pairs_ok(pairs) and all("\t" not in a + b for a, b in pairs)),
    "read_labelled_tsv": (
        read_labelled_tsv,
        lambda recs: len({r.label for r in recs}) >= 2 and all(r.text and r.label for r in recs),
    ),
    "read_mixture_tsv": (
        read_mixture_tsv,
        lambda by_task: all(_pairs_ok(v) for v in by_task.values() if v),
    ),
}  # fmt: skip


@pytest.mark.parametrize("reader", sorted(READERS))
@FUZZ
@given(data=file_bytes())
@example(data=b"")
@example(data=b"\xff\xfe a\tb\n")
@example(data="a\tb\u2028c\td\nsummarize: x\ty\n".encode())
def test_fuzz_data_file_readers_parse_or_refuse_in_one_line(tmp_path, reader, data):
    read, well_formed = READERS[reader]
    path = _write(tmp_path, data)
    try:
        out = read(path)
    except Exception as e:
        _check_refusal(e, path)
        return
    assert well_formed(out), out


#: Each text task with ``--data``, at sizes that make a fuzzed file a whole run's data.
TASKS: dict[str, dict[str, Any]] = {
    "translate": {"vocab_size": 300, "max_len": 8},
    "summarize": {"vocab_size": 300, "max_len": 8},
    "summarize-extractive": {"vocab_size": 300, "max_len": 8, "tokenizer": "word"},
    "classify": {"vocab_size": 300, "max_len": 8},
    "text2text": {"vocab_size": 300, "max_len": 8, "tasks": "summarize,translate,classify"},
    "lm": {"vocab_size": 300, "max_len": 8},
}
#: Lines each task's file holds when it is well formed, to be damaged by the fuzzer.
LINE = {
    "translate": st.sampled_from(["Ein Satz.\tA sentence.", "a b\tc d", "x\ty"]),
    "summarize": st.sampled_from(["A long text. It has two sentences.\tA text.", "t\ts"]),
    "summarize-extractive": st.sampled_from(["One. Two! Three?\tTwo.", "A b. C d.\tC d."]),
    "classify": st.sampled_from(["games\tA game of chess.", "net\tA web server.", "x\ty"]),
    "text2text": st.sampled_from(
        [
            "summarize: A text. More.\tA text.",
            "translate German to English: Hallo.\tHello.",
            "classify: A game.\tgames",
            "classify: A server.\tnet",
        ]
    ),
    "lm": st.sampled_from(["The first line of a text.", "Another line, longer than that."]),
}


@st.composite
def task_file(draw: st.DrawFn, task: str) -> bytes:
    """Well-formed lines of ``task``'s format mixed with fuzzed text, maybe damaged."""
    lines = draw(st.lists(st.one_of(LINE[task], LINE[task], TEXT), min_size=0, max_size=24))
    sep = draw(st.sampled_from(["\n", "\r\n", "\u2028", "\n\n"]))
    return draw(file_bytes(st.just(sep.join(lines))))


@pytest.mark.parametrize("task", sorted(TASKS))
@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_fuzz_task_data_files_give_batches_or_one_error(tmp_path, task, data):
    """The whole path of ``qkv train --task T --data FILE`` up to the first batch: read,
    split, train the tokenizer, encode and collate."""
    path = _write(tmp_path, data.draw(task_file(task), label="file"))
    try:
        t = get_task(task, {"data": str(path), **TASKS[task]})
        for split in ("train", "valid", "test"):
            examples = t.examples(split)
            if examples:  # (none: the trainer refuses a batch larger than the data)
                t.collate(list(examples[:4]))
    except USER_ERRORS as e:
        assert isinstance(e, TaskError), f"{type(e).__name__}: {e}"


# -- Debian's apt indexes ------------------------------------------------------------------
RECORD_PIECES = st.sampled_from(
    ["Package: p", "Package: q", "Package:", "Source: s (1.0)", "Source:", "Section: contrib/net",
     "Description-md5: m1", "Description-md5: m2", "Description-md5:", "Description-en: A tool.",
     "Description-en:", "Description-de: Ein Werkzeug.", " It does one thing. And another.",
     " .", "  * an item", "   continued", " 1. first", "  verbatim  line", "\t", " ", "",
     "Description-en: ", " ..", "X-Other: 1"]
)  # fmt: skip
RECORDS = st.lists(st.one_of(RECORD_PIECES, RECORD_PIECES, TEXT), max_size=30).map("\n".join)


@FUZZ
@given(text=st.one_of(RECORDS, TEXT))
def test_fuzz_debian_parsers_give_records(text):
    for package, md5, synopsis, paragraphs in debian.parse_translations(text):
        assert package and synopsis and isinstance(md5, str)
        assert all(p and all(b and b == " ".join(b.split()) for b in p) for p in paragraphs)
        for block in (b for p in paragraphs for b in p):
            assert all(s == s.strip() and s for s in debian.split_sentences(block))
    for package, (source, section) in debian.parse_packages(text).items():
        assert package and source and section == section.lower()
    lines = text.split("\n")
    assert isinstance(debian.parse_description(lines), tuple)
    for s in debian.split_sentences(text):
        assert s and s == s.strip()


def _lists_dir(root: Path, files: dict[str, bytes]) -> Path:
    d = root / "lists"
    d.mkdir()
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


@settings(FUZZ, max_examples=60)
@given(
    en=file_bytes(RECORDS),
    de=file_bytes(RECORDS.map(lambda t: t.replace("Description-en", "Description-de"))),
    packages=file_bytes(RECORDS),
)
def test_fuzz_debian_corpora_read_or_refuse(monkeypatch, en, de, packages):
    """:func:`debian.read_corpus` and :func:`debian_parallel.read_pairs` on list
    directories of fuzzed files (plain text: what ``apt-helper cat-file`` returns; read
    without it here, 6 processes an example would take most of the time)."""
    monkeypatch.setattr(debian, "APT_HELPER", Path("/nonexistent/apt-helper"))
    with tempfile.TemporaryDirectory() as tmp:  # a fresh directory: read_pairs caches by file
        lists = _lists_dir(
            Path(tmp),
            {"x_i18n_Translation-en": en, "x_i18n_Translation-de": de, "x_Packages": packages},
        )
        try:
            records = debian.read_corpus(lists)
            corpus = debian_parallel.read_pairs("de", lists)
        except USER_ERRORS as e:
            assert isinstance(e, debian.DebianCorpusError) and str(lists) in str(e), e
            return
    assert all(r.package and r.synopsis and r.paragraphs and r.text for r in records)
    for p in corpus.pairs:
        assert p.source and p.target and p.source != p.target and p.kind
    for split in debian.SPLITS:
        assert all(p in corpus.pairs for p in debian_parallel.split_pairs(corpus.pairs, split))


# -- the Ding dictionary -------------------------------------------------------------------
DING_PIECES = st.sampled_from(
    ["Abendessen {n} | Das Abendessen hat mir heute sehr gut geschmeckt.", " :: ",
     "supper | I enjoyed my supper very much today.", " | ", ";", "# comment", "(optional)",
     "[ugs.]", "<Abk.>", "{m}", "Er kommt morgen ganz sicher zu uns.", "He will come.", "/",
     "…", "?", "!", "."]
)  # fmt: skip
DING_LINE = st.lists(
    st.one_of(DING_PIECES, DING_PIECES, st.sampled_from(PIECES), st.text(max_size=6)), max_size=8
).map("".join)
DING = st.lists(DING_LINE, max_size=8).map("\n".join)


@FUZZ
@given(data=file_bytes(DING), min_words=st.integers(0, 6), max_words=st.integers(0, 6))
def test_fuzz_ding_files_give_pairs(tmp_path, data, min_words, max_words):
    path = _write(tmp_path, data, "de-en")
    sentences = ding.read_ding(path, min_words)
    phrases = ding.read_ding_phrases(path, max_words)
    for de, en in sentences:
        assert ding.is_sentence(de, min_words) and en.endswith((".", "!", "?"))
    for de, en in phrases:
        assert de and en and len(de.split()) <= max_words and len(en.split()) <= max_words
    assert len(set(sentences)) == len(sentences) and len(set(phrases)) == len(phrases)
