"""Sentence pairs from the Ding German-English dictionary (Debian package ``trans-de-en``).

Format (one entry per line, ``#`` comments)::

    Abendessen {n} | Das Abendessen hat mir geschmeckt. :: supper | I enjoyed my supper.

``::`` separates German from English; ``|`` separates aligned sub-entries (the i-th German
sub-entry translates the i-th English one); ``;`` separates synonyms within a sub-entry.
Tags ``{m}`` ``[ugs.]`` ``<Abk.>`` and parenthesized optional words are stripped.
:func:`parse_line` keeps the aligned alternatives that are sentences: the German side has at
least ``min_words`` words and both sides end in ``.``, ``!`` or ``?``. Alternatives written
with ``/`` or an ellipsis are dropped (they are several sentences in one).

The dictionary is GPL-2+: it is read at run time and never copied into the repository.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable
from pathlib import Path

DING_PATH = Path("/usr/share/trans/de-en")
_TAG = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]|<[^<>]*>")
_PARENS = re.compile(r"\([^()]*\)")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:])")
_OPENERS = re.compile(r"[{\[<(]")
_PUNCT = re.compile(r"[.,!?;:]")
_NOT_A_PHRASE = re.compile(r"[/…()\[\]{}<>=]")
_END = (".", "!", "?")


def clean(text: str) -> str:
    """Strip tags and parenthesized words, normalize spaces."""
    # each substitution only where its opening character is (most alternatives have none:
    # the phrase reader cleans 1.1 million of them)
    if _OPENERS.search(text):
        text = _PARENS.sub(" ", _TAG.sub(" ", text))
    text = " ".join(text.split())
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text) if _PUNCT.search(text) else text


def is_sentence(text: str, min_words: int = 5) -> bool:
    """At least ``min_words`` words and a final ``.``, ``!`` or ``?``."""
    return text.endswith(_END) and len(text.split()) >= min_words


def _usable(text: str) -> bool:
    return bool(text) and not any(c in text for c in "/…()[]{}<>") and text.endswith(_END)


def parse_line(line: str, min_words: int = 5) -> list[tuple[str, str]]:
    """The ``(german, english)`` sentence pairs of one dictionary line (often none)."""
    line = line.strip()
    if not line or line.startswith("#") or line.count(" :: ") != 1:
        return []
    de, en = line.split(" :: ")
    de_parts, en_parts = de.split(" | "), en.split(" | ")
    if len(de_parts) != len(en_parts):
        return []
    pairs = []
    for d, e in zip(de_parts, en_parts):
        de_alts = []
        for alt in d.split(";"):
            # cheap rejections first: cleaning only removes words and keeps the end mark
            if len(alt.split()) < min_words or not any(c in alt for c in _END):
                continue
            alt = clean(alt)
            if _usable(alt) and is_sentence(alt, min_words):
                de_alts.append(alt)
        if de_alts:
            en_alts = [x for x in (clean(a) for a in e.split(";")) if _usable(x)]
            pairs += [(x, y) for x in de_alts for y in en_alts]
    return pairs


def parse_phrase_line(line: str, max_words: int = 6) -> list[tuple[str, str]]:
    """The ``(german, english)`` word and phrase pairs of one dictionary line: aligned
    sub-entries that are not sentences, synonyms paired by position (or each German synonym
    with the first English one when the counts differ), tags stripped, at most
    ``max_words`` words a side."""
    line = line.strip()
    if not line or line.startswith("#") or line.count(" :: ") != 1:
        return []
    de, en = line.split(" :: ")
    de_parts, en_parts = de.split(" | "), en.split(" | ")
    if len(de_parts) != len(en_parts):
        return []
    pairs = []
    for d, e in zip(de_parts, en_parts):
        de_alts = [clean(a) for a in d.split(";")]
        en_alts = [clean(a) for a in e.split(";")]
        de_alts = [a for a in de_alts if _phrase(a, max_words)]
        en_alts = [a for a in en_alts if _phrase(a, max_words)]
        if not de_alts or not en_alts:
            continue
        if len(de_alts) == len(en_alts):
            pairs += list(zip(de_alts, en_alts))
        else:
            pairs += [(a, en_alts[0]) for a in de_alts]
    return pairs


def _phrase(text: str, max_words: int) -> bool:
    return (
        bool(text)
        and not text.endswith(_END)
        and not _NOT_A_PHRASE.search(text)
        and len(text.split()) <= max_words
    )


def read_ding_phrases(path: str | Path = DING_PATH, max_words: int = 6) -> list[tuple[str, str]]:
    """All word and phrase pairs of a Ding dictionary file (see :func:`parse_phrase_line`),
    first occurrence order, duplicates removed.

    Raises:
        FileNotFoundError: the file does not exist.
    """
    seen: dict[tuple[str, str], None] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            for p in parse_phrase_line(line, max_words):
                seen.setdefault(p, None)
    return list(seen)


def parse_lines(lines: Iterable[str], min_words: int = 5) -> list[tuple[str, str]]:
    """All sentence pairs of the lines, first occurrence order, duplicates removed."""
    seen: dict[tuple[str, str], None] = {}
    for line in lines:
        for p in parse_line(line, min_words):
            seen.setdefault(p, None)
    return list(seen)


# the last text parsed, by its digest and min_words: a process that loads a task several
# times (eval, then generate, then viz of one run) parses the 2-second dictionary once
_PARSED: dict[tuple[bytes, int], tuple[tuple[str, str], ...]] = {}


def read_ding(path: str | Path = DING_PATH, min_words: int = 5) -> list[tuple[str, str]]:
    """Read the sentence pairs of a Ding dictionary file (a new list each call; a text
    parsed by the last call, byte for byte, is not parsed again).

    Raises:
        FileNotFoundError: the file does not exist.
    """
    raw = Path(path).read_bytes()
    key = (hashlib.blake2b(raw, digest_size=16).digest(), min_words)
    if key not in _PARSED:
        lines = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors="replace")
        pairs = tuple(parse_lines(lines, min_words))  # the lines open() would give
        _PARSED.clear()
        _PARSED[key] = pairs
    return list(_PARSED[key])


__all__ = [
    "DING_PATH",
    "clean",
    "is_sentence",
    "parse_line",
    "parse_lines",
    "parse_phrase_line",
    "read_ding",
    "read_ding_phrases",
]
