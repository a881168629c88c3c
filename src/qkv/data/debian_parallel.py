"""Debian's translated package descriptions: a real parallel corpus, many languages to English.

Debian's Description Translation Project (DDTP) ships human translations of the package
descriptions as apt index files. ``apt-get update -o Acquire::Languages=en,de,fr,it`` stores
``*_i18n_Translation-<lang>[.lz4|...]`` beside the English ``Translation-en`` that
:mod:`qkv.data.debian` reads; each record has the ``Description-md5`` of the English
description it translates and a ``Description-<lang>:`` field in the same layout (synopsis,
then paragraphs separated by ``" ."``)::

    Package: 0ad-data
    Description-md5: 26581e685027d5ae84824362a4ba59ee
    Description-de: Echtzeit-Strategiespiel über antike Kriegsführung (Datendateien)
     0 A.D. ist ein freies, quelloffenes, plattformübergreifendes ...
     .
     Dieses Paket enthält die wichtigsten von 0 A.D. benötigten Datendateien.

:func:`read_pairs` pairs a language with English by ``Description-md5``:

* the synopses make one pair;
* the paragraphs pair one to one when both sides have the same number (descriptions whose
  counts differ are dropped whole, and counted); within a paragraph pair, when both sides
  split into the same number (> 1) of sentences (:func:`~qkv.data.debian.split_sentences`),
  each sentence pair is a pair, otherwise the paragraph pair is;
* length filters (stated, and the counts of what they drop are returned): both sides 1 to
  ``max_words`` (100) words, character lengths within a ratio of ``max_ratio`` (3), the two
  sides not identical (untranslated text), and each ``(source, target)`` pair once.

:func:`split_pairs` puts each pair in the split of its *source package*
(:func:`~qkv.data.debian.split_of`, the same hash as the English corpus uses), so no package is
in two splits; and a valid or test pair whose source text also occurs in train is dropped,
so boilerplate sentences shared by many packages ("This package contains the documentation.")
never score a model on text it was trained on.

The files are read at run time (each package has its own licence) and never copied into the
repository.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qkv.data.debian import (
    LISTS_DIR,
    SPLITS,
    DebianCorpusError,
    Split,
    parse_packages,
    parse_translations,
    read_list_file,
    split_of,
    split_sentences,
)

#: The target language of every pair.
TARGET = "en"
#: A language code as apt names the files: ``de``, ``fr``, ``pt_BR``, ``zh_CN``.
_LANG = re.compile(r"^[a-z]{2,3}(_[A-Z]{2})?$")
_COMPRESSED = r"(\.(lz4|gz|xz|bz2|lzma|zst))?$"
_PACKAGES = re.compile(r"_Packages" + _COMPRESSED)


def fetch_command(langs: Iterable[str]) -> str:
    """The command that puts the translation files of ``langs`` (and English) in the lists."""
    return f"apt-get update -o Acquire::Languages={','.join(dict.fromkeys([TARGET, *langs]))}"


def check_lang(lang: object) -> str:
    """Check a language code (``de``, ``pt_BR``).

    Raises:
        ValueError: not a code of two or three lowercase letters with an optional region.
    """
    if not isinstance(lang, str) or not _LANG.match(lang):
        raise ValueError(f"language must be a code like 'de' or 'pt_BR', got {lang!r}")
    return lang


def translation_files(lang: str, lists_dir: str | Path = LISTS_DIR) -> list[Path]:
    """The ``*_i18n_Translation-<lang>*`` files in ``lists_dir``, sorted.

    Raises:
        ValueError: ``lang`` is not a language code.
        DebianCorpusError: there is none (the message names the command that fetches them).
    """
    pattern = re.compile(rf"_i18n_Translation-{re.escape(check_lang(lang))}{_COMPRESSED}")
    lists_dir = Path(lists_dir)
    names = sorted(p for p in lists_dir.iterdir() if p.is_file()) if lists_dir.is_dir() else []
    found = [p for p in names if pattern.search(p.name)]
    if not found:
        raise DebianCorpusError(
            f"no *_i18n_Translation-{lang}* file in {lists_dir}: run "
            f"`{fetch_command([lang])}` (as root)"
        )
    return found


def available_languages(lists_dir: str | Path = LISTS_DIR) -> list[str]:
    """The languages other than English with a translation file in ``lists_dir``, sorted."""
    lists_dir = Path(lists_dir)
    if not lists_dir.is_dir():
        return []
    pattern = re.compile(r"_i18n_Translation-([A-Za-z_]+)" + _COMPRESSED)
    langs = {m.group(1) for p in lists_dir.iterdir() if (m := pattern.search(p.name))}
    return sorted(lang for lang in langs if lang != TARGET and _LANG.match(lang))


@dataclass(frozen=True)
class ParallelPair:
    """One aligned pair.

    Attributes:
        lang: the source language (``de``).
        source: the text in ``lang``.
        target: the English text.
        package: the source package it comes from (the split unit).
        kind: ``"synopsis"``, ``"paragraph"`` or ``"sentence"``.
    """

    lang: str
    source: str
    target: str
    package: str
    kind: str


@dataclass
class ParallelCorpus:
    """The pairs of one language with English, and what the alignment and filters dropped.

    Attributes:
        lang: the source language.
        pairs: the pairs, in file order, each ``(source, target)`` once.
        descriptions: descriptions found in both languages.
        unequal_paragraphs: descriptions dropped because their paragraph counts differ.
        filtered: pairs dropped by each filter (``"length"``, ``"ratio"``, ``"identical"``,
            ``"duplicate"``).
    """

    lang: str
    pairs: list[ParallelPair] = field(default_factory=list)
    descriptions: int = 0
    unequal_paragraphs: int = 0
    filtered: dict[str, int] = field(default_factory=dict)


def align(
    src: tuple[tuple[str, ...], ...], tgt: tuple[tuple[str, ...], ...]
) -> list[tuple[str, str, str]] | None:
    """Align the paragraphs of a description with those of its translation.

    Args:
        src: the translation's paragraphs (:func:`~qkv.data.debian.parse_description`).
        tgt: the English paragraphs.

    Returns:
        ``(source, target, kind)`` triples: sentence pairs where both sides of a paragraph
        split into the same number (> 1) of sentences, else the paragraph pair; ``None`` when
        the paragraph counts differ.
    """
    if len(src) != len(tgt):
        return None
    out: list[tuple[str, str, str]] = []
    for src_paragraph, tgt_paragraph in zip(src, tgt, strict=True):
        s_text, t_text = " ".join(src_paragraph), " ".join(tgt_paragraph)
        s_sent, t_sent = split_sentences(s_text), split_sentences(t_text)
        if len(s_sent) == len(t_sent) > 1:
            out.extend((s, t, "sentence") for s, t in zip(s_sent, t_sent, strict=True))
        else:
            out.append((s_text, t_text, "paragraph"))
    return out


def _drop_reason(source: str, target: str, max_words: int, max_ratio: float) -> str | None:
    if not (1 <= len(source.split()) <= max_words and 1 <= len(target.split()) <= max_words):
        return "length"
    if max(len(source), len(target)) > max_ratio * min(len(source), len(target)):
        return "ratio"
    if source == target:
        return "identical"
    return None


def _stamp(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """The files' names, sizes and modification times: a cache key that apt's updates change."""
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


@functools.lru_cache(maxsize=2)
def _english(
    lists_dir: Path, stamp: tuple[tuple[str, int, int], ...]
) -> tuple[dict[str, tuple[str, str, tuple[tuple[str, ...], ...]]], dict[str, str]]:
    """The English descriptions by ``Description-md5`` and each package's source package,
    read once for every language of a many-to-English corpus (``stamp`` keys the cache to
    the files as they are; callers must not change the dicts)."""
    english: dict[str, tuple[str, str, tuple[tuple[str, ...], ...]]] = {}
    for name, _size, _mtime in stamp:
        for package, md5, synopsis, paragraphs in parse_translations(read_list_file(name)):
            if md5:
                english.setdefault(md5, (package, synopsis, paragraphs))
    return english, _sources(lists_dir)


def _sources(lists_dir: Path) -> dict[str, str]:
    """``package -> source package`` from the ``Packages`` files beside the translations."""
    out: dict[str, str] = {}
    files = sorted(p for p in lists_dir.iterdir() if p.is_file() and _PACKAGES.search(p.name))
    for path in files:
        for package, (source, _section) in parse_packages(read_list_file(path)).items():
            out.setdefault(package, source)
    return out


def read_pairs(
    lang: str,
    lists_dir: str | Path | None = None,
    *,
    max_words: int = 100,
    max_ratio: float = 3.0,
) -> ParallelCorpus:
    """Every aligned ``lang``-English pair in the apt lists (see the module docstring).

    Args:
        lang: the source language (``de``, ``fr``, ``it``, ``pt_BR``, ...).
        lists_dir: apt's list directory (None: :data:`~qkv.data.debian.LISTS_DIR`).
        max_words: the most words on either side of a pair.
        max_ratio: the largest ratio of the two sides' character lengths.

    Returns:
        The corpus with its pairs and the counts of what was dropped.

    Raises:
        ValueError: ``lang`` is not a language code, or is English.
        DebianCorpusError: the English or the ``lang`` files are missing or unreadable.
    """
    if check_lang(lang) == TARGET:
        raise ValueError(f"language must not be the target language {TARGET!r}")
    lists_dir = Path(LISTS_DIR if lists_dir is None else lists_dir)
    src_files = translation_files(lang, lists_dir)
    english, sources = _english(lists_dir, _stamp(translation_files(TARGET, lists_dir)))
    corpus = ParallelCorpus(lang)
    seen_md5: set[str] = set()
    seen_pair: set[tuple[str, str]] = set()
    filtered = dict.fromkeys(("length", "ratio", "identical", "duplicate"), 0)
    for path in src_files:
        for _package, md5, synopsis, paragraphs in parse_translations(read_list_file(path), lang):
            if md5 not in english or md5 in seen_md5:
                continue
            seen_md5.add(md5)
            package, en_synopsis, en_paragraphs = english[md5]
            corpus.descriptions += 1
            aligned = align(paragraphs, en_paragraphs)
            if aligned is None:
                corpus.unequal_paragraphs += 1
                continue
            unit = sources.get(package, package)
            for source, target, kind in [(synopsis, en_synopsis, "synopsis"), *aligned]:
                reason = _drop_reason(source, target, max_words, max_ratio)
                if reason is None and (source, target) in seen_pair:
                    reason = "duplicate"
                if reason is not None:
                    filtered[reason] += 1
                    continue
                seen_pair.add((source, target))
                corpus.pairs.append(ParallelPair(lang, source, target, unit, kind))
    corpus.filtered = filtered
    return corpus


def split_pairs(
    pairs: Sequence[ParallelPair],
    split: Split,
    *,
    seed: int = 0,
    valid: float = 0.05,
    test: float = 0.05,
) -> list[ParallelPair]:
    """The pairs of one split: by source package, valid and test without train's source texts.

    Args:
        pairs: the corpus (:attr:`ParallelCorpus.pairs`).
        split: ``"train"``, ``"valid"`` or ``"test"``.
        seed: changes the assignment (:func:`~qkv.data.debian.split_of`).
        valid: the expected fraction of source packages in valid.
        test: the expected fraction of source packages in test.

    Returns:
        The pairs of ``split``, in corpus order.

    Raises:
        ValueError: an unknown split or bad fractions.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    by_split: dict[str, list[ParallelPair]] = {s: [] for s in SPLITS}
    for pair in pairs:
        by_split[split_of(pair.package, seed, valid, test)].append(pair)
    if split == "train":
        return by_split["train"]
    in_train = {p.source for p in by_split["train"]}
    return [p for p in by_split[split] if p.source not in in_train]


def fingerprint(pairs: Sequence[ParallelPair]) -> str:
    """A short hash of the pairs (for caches keyed on the corpus a run read)."""
    h = hashlib.blake2b(digest_size=8)
    for p in pairs:
        h.update(f"{p.lang}\0{p.source}\0{p.target}\0{p.package}\n".encode())
    return h.hexdigest()


__all__ = [
    "TARGET",
    "ParallelCorpus",
    "ParallelPair",
    "align",
    "available_languages",
    "check_lang",
    "fetch_command",
    "fingerprint",
    "read_pairs",
    "split_pairs",
    "translation_files",
]
