"""Debian's package descriptions: a real corpus of ~64,000 texts written by people.

``apt-get update -o Acquire::Languages=en`` stores two kinds of list in ``/var/lib/apt/lists``:

* ``*_i18n_Translation-en[.lz4|.gz|.xz]``: one record per package::

      Package: 0ad-data
      Description-md5: 26581e685027d5ae84824362a4ba59ee
      Description-en: Real-time strategy game of ancient warfare (data files)
       0 A.D. (pronounced "zero ey-dee") is a free, open-source, cross-platform
       real-time strategy (RTS) game of ancient warfare.
       .
       This package contains the main data files required by 0 A.D.

  The first line is the synopsis; the long description follows on lines that start with a
  space, ``" ."`` separates paragraphs, and lines that start with two or more spaces are shown
  verbatim (lists, code, tables) by Debian Policy 5.6.13.
* ``*_Packages[...]``: the package stanzas, from which :func:`read_corpus` joins each
  package's ``Section:`` (``contrib/net`` becomes ``net``) and ``Source:`` (the source
  package that built it, without a version; the package's own name when absent).

:func:`read_corpus` reads them (through ``apt-helper cat-file``, which decompresses every format
apt writes), keeps one record per ``Description-md5`` and per package name (many ``-data`` and
``-dev`` siblings share a description), and drops packages without a stanza in the
``Packages`` files beside them (other architectures). :func:`split_of` assigns each *source*
package to train, valid or test by a seeded hash, so that the siblings of one source never
straddle two splits. The corpus is read at run time (each package has its own licence) and is
never copied into the repository.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

LISTS_DIR = Path("/var/lib/apt/lists")
APT_HELPER = Path("/usr/lib/apt/apt-helper")
FETCH_COMMAND = "apt-get update -o Acquire::Languages=en"

Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = ("train", "valid", "test")

_TRANSLATION = re.compile(r"_i18n_Translation-en(\.(lz4|gz|xz|bz2|lzma|zst))?$")
_PACKAGES = re.compile(r"_Packages(\.(lz4|gz|xz|bz2|lzma|zst))?$")
_PACKAGES_FIELD = re.compile(r"^(Package|Source|Section):[ \t]*(.*)$", re.MULTILINE)
_FIELD = re.compile(r"^([A-Za-z0-9_-]+):[ \t]*(.*)$")
_BULLET = re.compile(r"^([*+o•-]|\d{1,2}[.)])\s+(?=\S)")
_BULLET_FIRST = frozenset("*+o•-0123456789")
# A sentence ends at . ! or ? (closing quotes/brackets may follow) before whitespace and a
# capital, a digit or an opening quote/bracket.
_SENTENCE_END = re.compile(r"(?<=[.!?])([\"')\]]*)\s+(?=[\"'(\[]?[A-Z0-9])")
# dotted acronyms ("A.D.", "U.S."); a lone capital is no initial here: "written in C." ends
# sentences far more often in package descriptions than "J. Smith" runs on
_ACRONYM = re.compile(r"([A-Za-z]\.){2,}")
_ABBREVIATIONS = frozenset(
    "e.g. i.e. vs. cf. approx. incl. resp. al. ca. no. nos. vol. fig. ed. eds. "
    "mr. mrs. ms. dr. prof. st. jr. sr. inc. ltd. co. corp. dept. univ. ver. v.".split()
)


class DebianCorpusError(FileNotFoundError):
    """The apt lists hold no English descriptions, or a list cannot be read."""


@dataclass(frozen=True)
class PackageDescription:
    """One package's description.

    Attributes:
        package: the binary package name (``0ad-data``).
        source: the source package that built it (``0ad-data``'s is ``0ad-data``; ``libc6``'s
            is ``glibc``); the split unit.
        section: the archive section without its area (``games``, ``libs``, ``net``, ...).
        synopsis: the one-line summary.
        paragraphs: the long description's paragraphs, each a tuple of blocks: a run of prose,
            one list item (its bullet removed), or one verbatim line; whitespace collapsed.
        md5: the ``Description-md5`` (of the untranslated description).
    """

    package: str
    source: str
    section: str
    synopsis: str
    paragraphs: tuple[tuple[str, ...], ...]
    md5: str

    @property
    def text(self) -> str:
        """The long description as one line of text."""
        return " ".join(block for paragraph in self.paragraphs for block in paragraph)

    @property
    def sentences(self) -> tuple[str, ...]:
        """The long description's sentences (:func:`split_sentences` of every block)."""
        return tuple(s for p in self.paragraphs for block in p for s in split_sentences(block))


def read_list_file(path: str | Path) -> str:
    """The text of one apt list file, decompressed.

    ``/usr/lib/apt/apt-helper cat-file`` reads every format apt writes (lz4, zstd, xz, gz, bz2,
    plain); without it, plain, gzip, xz and bzip2 files are read with the standard library.

    Args:
        path: the list file.

    Returns:
        Its text (UTF-8; undecodable bytes replaced).

    Raises:
        DebianCorpusError: the file is missing or cannot be read or decompressed.
    """
    path = Path(path)
    if not path.is_file():
        raise DebianCorpusError(f"apt list {path} is missing")
    if APT_HELPER.is_file() and shutil.which(str(APT_HELPER)):
        done = subprocess.run(
            [str(APT_HELPER), "cat-file", str(path)], capture_output=True, check=False
        )
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip()
            raise DebianCorpusError(f"apt-helper cat-file {path} failed: {message}")
        return done.stdout.decode("utf-8", errors="replace")
    openers = {".gz": gzip.open, ".xz": lzma.open, ".lzma": lzma.open, ".bz2": bz2.open}
    opener = openers.get(path.suffix)
    if opener is None and path.suffix in (".lz4", ".zst"):
        raise DebianCorpusError(f"reading {path} needs {APT_HELPER} (package apt)")
    try:
        with (opener or open)(path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DebianCorpusError(f"{path} cannot be read: {e}") from None


def _stanzas(text: str) -> Iterator[list[str]]:
    """The stanzas of a deb822 file, each as its list of lines."""
    for stanza in re.split(r"\n[ \t]*\n", text):
        lines = stanza.strip("\n").split("\n")
        if lines and lines[0]:
            yield lines


def parse_packages(text: str) -> dict[str, tuple[str, str]]:
    """``package -> (source, section)`` from a ``Packages`` file's text.

    Args:
        text: the decompressed file.

    Returns:
        One entry per package (the first stanza wins): the source package name without its
        version (the package's own name when ``Source:`` is absent) and :func:`normalize_section`
        of ``Section:`` (``""`` when absent).
    """
    out: dict[str, tuple[str, str]] = {}

    def add(package: str, source: str, section: str) -> None:
        if package and package not in out:
            out[package] = (source or package, normalize_section(section))

    # one regex pass over the file: ~50 MB for Debian main, where a stanza loop takes seconds
    package = source = section = ""
    for m in _PACKAGES_FIELD.finditer(text):
        name, value = m.group(1), m.group(2).strip()
        if name == "Package":  # apt writes Package first in every stanza
            add(package, source, section)
            package, source, section = value, "", ""
        elif name == "Source":
            # "Source: glibc (2.36-9)": the version is there when it differs from the binary's
            source = value.split(" ", 1)[0]
        else:
            section = value
    add(package, source, section)
    return out


def normalize_section(section: str) -> str:
    """The section without its archive area: ``contrib/net`` -> ``net``, ``Games`` -> ``games``."""
    return section.strip().rsplit("/", 1)[-1].lower()


def parse_description(lines: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """Clean a long description's lines (each starting with a space) into paragraphs of blocks.

    ``" ."`` separates paragraphs. In a paragraph, lines starting with one space are wrapped
    prose and are joined; a line whose text starts with a bullet (``*``, ``-``, ``+``, ``o``,
    ``1.``) opens a list item, and the more-indented lines after it continue that item; any
    other line starting with two or more spaces is verbatim and stays a block of its own.

    Args:
        lines: the long description's lines, without the synopsis.

    Returns:
        The non-empty paragraphs, each a tuple of non-empty blocks with whitespace collapsed.
    """
    paragraphs: list[tuple[str, ...]] = []
    blocks: list[list[str]] = []
    kinds: list[Literal["prose", "item", "verbatim"]] = []
    item_indent = 0  # the indentation of the open list item's first line

    def close_paragraph() -> None:
        # str.split() collapses whitespace several times faster than a regex substitution
        texts = tuple(t for t in (" ".join(" ".join(b).split()) for b in blocks) if t)
        if texts:
            paragraphs.append(texts)
        blocks.clear()
        kinds.clear()

    for raw in lines:
        line = raw.rstrip()
        body = line.lstrip()
        indent = len(line) - len(body)
        if body == "." and indent <= 1:
            close_paragraph()
            continue
        if not body:
            continue
        bullet = _BULLET.match(body) if body[0] in _BULLET_FIRST else None
        if bullet:
            blocks.append([body[bullet.end() :]])
            kinds.append("item")
            item_indent = indent
        elif kinds and kinds[-1] == "item" and indent > item_indent:
            blocks[-1].append(body)  # the open list item continues
        elif indent >= 2:
            blocks.append([body])
            kinds.append("verbatim")
        elif kinds and kinds[-1] == "prose":
            blocks[-1].append(body)
        else:
            blocks.append([body])
            kinds.append("prose")
    close_paragraph()
    return tuple(paragraphs)


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences: after ``.``, ``!`` or ``?`` followed by a space and a capital,
    a digit or an opening quote, except after common abbreviations (``e.g.``, ``Dr.``) and
    dotted acronyms (``A.D.``).

    Args:
        text: one block of prose.

    Returns:
        The sentences, stripped; ``[]`` for blank text.
    """
    text = text.strip()
    if not text:
        return []
    sentences, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        end = m.start() + len(m.group(1))
        last_word = text[start : m.start()].rsplit(None, 1)[-1].lstrip("\"'([")
        if last_word.lower() in _ABBREVIATIONS or _ACRONYM.fullmatch(last_word):
            continue
        sentences.append(text[start:end].strip())
        start = m.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def parse_translations(
    text: str, lang: str = "en"
) -> Iterator[tuple[str, str, str, tuple[tuple[str, ...], ...]]]:
    """The records of a ``Translation-<lang>`` file's text.

    Args:
        text: the decompressed file.
        lang: the language code of its ``Description-<lang>`` field (``en``, ``de``,
            ``pt_BR``, ...).

    Yields:
        ``(package, md5, synopsis, paragraphs)`` for each record with a package name and a
        description in ``lang``; ``paragraphs`` as :func:`parse_description`.
    """
    field_name = f"Description-{lang}"
    for lines in _stanzas(text):
        package = md5 = synopsis = ""
        long_lines: list[str] = []
        in_description = False
        for line in lines:
            if line.startswith((" ", "\t")):
                if in_description:
                    long_lines.append(line)
                continue
            m = _FIELD.match(line)
            if not m:
                continue
            name, value = m.groups()
            in_description = name == field_name
            if name == "Package":
                package = value.strip()
            elif name == "Description-md5":
                md5 = value.strip()
            elif in_description:
                synopsis = " ".join(value.split())
        if package and synopsis:
            yield package, md5, synopsis, parse_description(long_lines)


def list_files(lists_dir: str | Path = LISTS_DIR) -> tuple[list[Path], list[Path]]:
    """The English ``Translation`` files and the ``Packages`` files in ``lists_dir``, sorted.

    Raises:
        DebianCorpusError: there is no ``*_i18n_Translation-en*`` file (the message names the
            command that fetches them).
    """
    lists_dir = Path(lists_dir)
    names = sorted(p for p in lists_dir.iterdir() if p.is_file()) if lists_dir.is_dir() else []
    translations = [p for p in names if _TRANSLATION.search(p.name)]
    packages = [p for p in names if _PACKAGES.search(p.name)]
    if not translations:
        raise DebianCorpusError(
            f"no *_i18n_Translation-en* file in {lists_dir}: run `{FETCH_COMMAND}` (as root)"
        )
    return translations, packages


# the last corpus read, by the digests of its files' bytes as stored: a process that reads
# it again (each split of a task, eval after train) skips the 5 s of decompressing and
# parsing; a changed file is read again whatever its metadata
_CORPUS: dict[tuple[tuple[str, bytes], ...], tuple[PackageDescription, ...]] = {}


def _digest(path: Path) -> bytes:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
    except OSError as e:
        raise DebianCorpusError(f"{path} cannot be read: {e}") from None


def read_corpus(lists_dir: str | Path = LISTS_DIR) -> list[PackageDescription]:
    """Every package description in the apt lists, deduplicated, with its source and section.

    Files are read in sorted order; the first record of each ``Description-md5`` and of each
    package name wins; records with no long description or no stanza in the ``Packages`` files
    are dropped.

    Args:
        lists_dir: apt's list directory.

    Returns:
        The records, in file order.

    Raises:
        DebianCorpusError: no English translation file, or a file cannot be read.
    """
    translations, packages = list_files(lists_dir)
    key = tuple((str(p), _digest(p)) for p in (*packages, *translations))
    if key not in _CORPUS:
        _CORPUS.clear()
        _CORPUS[key] = tuple(_read_corpus(translations, packages))
    return list(_CORPUS[key])


def _read_corpus(translations: list[Path], packages: list[Path]) -> list[PackageDescription]:
    joined: dict[str, tuple[str, str]] = {}
    for path in packages:
        for package, value in parse_packages(read_list_file(path)).items():
            joined.setdefault(package, value)
    out: list[PackageDescription] = []
    seen_md5: set[str] = set()
    seen_package: set[str] = set()
    for path in translations:
        for package, md5, synopsis, paragraphs in parse_translations(read_list_file(path)):
            key = md5 or hashlib.md5(repr((synopsis, paragraphs)).encode()).hexdigest()
            if key in seen_md5 or package in seen_package or package not in joined:
                continue
            seen_md5.add(key)
            seen_package.add(package)
            if not paragraphs:
                continue
            source, section = joined[package]
            out.append(PackageDescription(package, source, section, synopsis, paragraphs, md5))
    return out


def split_of(source: str, seed: int = 0, valid: float = 0.05, test: float = 0.05) -> Split:
    """The split of a source package: a seeded hash, so that siblings share it.

    Args:
        source: the source package name.
        seed: changes the assignment.
        valid: the expected fraction of sources in ``valid``.
        test: the expected fraction of sources in ``test``.

    Returns:
        ``"test"`` with probability ``test``, ``"valid"`` with probability ``valid``, else
        ``"train"``, the same for every call with the same arguments (and across processes:
        the hash is BLAKE2b, not Python's salted ``hash``).

    Raises:
        ValueError: a fraction is negative or they sum to more than 1.
    """
    if valid < 0 or test < 0 or valid + test > 1:
        raise ValueError(
            f"split fractions valid ({valid}) and test ({test}) must be >= 0 and sum to at most 1"
        )
    digest = hashlib.blake2b(f"{seed}\0{source}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64  # uniform in [0, 1)
    return "test" if u < test else "valid" if u < test + valid else "train"


def load_split(
    split: Split,
    lists_dir: str | Path = LISTS_DIR,
    seed: int = 0,
    valid: float = 0.05,
    test: float = 0.05,
) -> list[PackageDescription]:
    """The records of one split of :func:`read_corpus` (by :func:`split_of` of their source).

    Raises:
        DebianCorpusError: as :func:`read_corpus`.
        ValueError: ``split`` is not train, valid or test, or bad fractions.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    return [r for r in read_corpus(lists_dir) if split_of(r.source, seed, valid, test) == split]


__all__ = [
    "APT_HELPER",
    "FETCH_COMMAND",
    "LISTS_DIR",
    "SPLITS",
    "DebianCorpusError",
    "PackageDescription",
    "Split",
    "list_files",
    "load_split",
    "normalize_section",
    "parse_description",
    "parse_packages",
    "parse_translations",
    "read_corpus",
    "read_list_file",
    "split_of",
    "split_sentences",
]
