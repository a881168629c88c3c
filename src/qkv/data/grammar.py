"""A tiny synchronous grammar: English-like sentences and their translation into "Kalo",
an invented verb-final language with gender and number agreement.

Every pair is generated from one sentence tree, and the tree can be read back from the
English string alone (each word has one part of speech; only subjects coordinate; PPs are
clause-final), so the Kalo side is a *function* of the English side and 100 BLEU is
attainable. The data need no files: :func:`make_splits` draws them from a seeded RNG.

Source (English)::

    S      -> Clause [("and" | "but") Clause] "."
    Clause -> Subj Vt NP [PP]  |  Subj Vi [PP]
    Subj   -> Pronoun | NP | NP "and" NP
    NP     -> Det [Adj] Noun          Det: the | a / some | this / these (singular / plural)
    PP     -> Prep NP

Target (Kalo), the same tree with these rules:

1. **Word order** is subject, PP, object, verb (SOV, verb-final): ``Subj' [PP'] [NP'] V'``.
2. **Postpositions**: ``PP' -> NP' Postp`` ("in the garden" -> "ka hort inu").
3. **Noun phrases** are ``Det' Noun' [Adj']``: the adjective follows the noun.
4. **Gender**: each noun is masculine or feminine (a property of the word, see
   :data:`NOUNS`). The article agrees in gender and number; the adjective takes ``-o``
   (masculine) or ``-a`` (feminine).

   =========  ======  ======  ======  ======
   Det        m. sg.  f. sg.  m. pl.  f. pl.
   =========  ======  ======  ======  ======
   the        ke      ka      kei     kai
   a / some   on      ona     onoi    onai
   this/these tis     tisa    tisoi   tisai
   =========  ======  ======  ======  ======

5. **Plural** nouns add ``-n`` after a vowel and ``-en`` after a consonant
   (mira -> miran, toran -> toranen).
6. **Verb agreement**: the verb stem takes a suffix for the subject's person and number:
   1 sg. ``-o``, 2 sg. ``-as``, 3 sg. ``-at``, 1 pl. ``-amo``, 3 pl. ``-ant``. Pronouns:
   I=mi (1 sg.), you=tu (2 sg.), he=lo, she=la (3 sg.), we=nos (1 pl.), they=ilo (3 pl.);
   a noun phrase is 3rd person of its number; two coordinated noun phrases are 3 pl.
7. **Conjunctions**: "and" between noun phrases is ``e``, between clauses ``ta``;
   "but" is ``sed``. The final "." stays.

Examples::

    the big dog sees a small cat in the garden.
    ke toran grando ka hort inu ona mira pika vidat.

    she runs but these old kings and the woman help some children.
    la kurat sed tisoi rekonen veto e ka dal onoi bemin jutant.

(English "a" becomes "an" before a vowel: "an old king" -> "on rekon veto".)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

Gender = Literal["m", "f"]
Number = Literal["sg", "pl"]
Person = Literal["1sg", "2sg", "3sg", "1pl", "3pl"]
DetKind = Literal["def", "indef", "dem"]


class Noun(NamedTuple):
    """A noun: English singular and plural, Kalo stem, Kalo gender."""

    sg: str
    pl: str
    stem: str
    gender: Gender


class Verb(NamedTuple):
    """A verb: English base and 3rd singular forms, Kalo stem."""

    base: str
    third: str
    stem: str


NOUNS: tuple[Noun, ...] = (
    Noun("cat", "cats", "mira", "f"),
    Noun("dog", "dogs", "toran", "m"),
    Noun("bird", "birds", "velu", "f"),
    Noun("horse", "horses", "kabo", "m"),
    Noun("child", "children", "bemi", "m"),
    Noun("woman", "women", "dal", "f"),
    Noun("man", "men", "gor", "m"),
    Noun("king", "kings", "rekon", "m"),
    Noun("queen", "queens", "rin", "f"),
    Noun("farmer", "farmers", "pelta", "m"),
    Noun("teacher", "teachers", "mest", "f"),
    Noun("house", "houses", "dun", "m"),
    Noun("tree", "trees", "arbo", "f"),
    Noun("river", "rivers", "flum", "m"),
    Noun("garden", "gardens", "hort", "f"),
    Noun("book", "books", "libor", "m"),
)
ADJECTIVES: dict[str, str] = {
    "big": "grand",
    "small": "pik",
    "old": "vet",
    "young": "jun",
    "red": "rub",
    "green": "verd",
    "happy": "fel",
    "quiet": "kalm",
}
TRANSITIVE: tuple[Verb, ...] = (
    Verb("see", "sees", "vid"),
    Verb("like", "likes", "am"),
    Verb("follow", "follows", "sekw"),
    Verb("find", "finds", "trov"),
    Verb("carry", "carries", "port"),
    Verb("help", "helps", "jut"),
)
INTRANSITIVE: tuple[Verb, ...] = (
    Verb("sleep", "sleeps", "dorm"),
    Verb("run", "runs", "kur"),
    Verb("sing", "sings", "kant"),
)
PRONOUNS: dict[str, tuple[str, Person]] = {
    "I": ("mi", "1sg"),
    "you": ("tu", "2sg"),
    "he": ("lo", "3sg"),
    "she": ("la", "3sg"),
    "we": ("nos", "1pl"),
    "they": ("ilo", "3pl"),
}
PREPOSITIONS: dict[str, str] = {
    "in": "inu",
    "on": "supa",
    "near": "apud",
    "with": "kun",
    "under": "sub",
    "behind": "post",
}
SOURCE_DETERMINERS: dict[tuple[DetKind, Number], str] = {
    ("def", "sg"): "the",
    ("def", "pl"): "the",
    ("indef", "sg"): "a",
    ("indef", "pl"): "some",
    ("dem", "sg"): "this",
    ("dem", "pl"): "these",
}
TARGET_DETERMINERS: dict[tuple[DetKind, Gender, Number], str] = {
    ("def", "m", "sg"): "ke",
    ("def", "f", "sg"): "ka",
    ("def", "m", "pl"): "kei",
    ("def", "f", "pl"): "kai",
    ("indef", "m", "sg"): "on",
    ("indef", "f", "sg"): "ona",
    ("indef", "m", "pl"): "onoi",
    ("indef", "f", "pl"): "onai",
    ("dem", "m", "sg"): "tis",
    ("dem", "f", "sg"): "tisa",
    ("dem", "m", "pl"): "tisoi",
    ("dem", "f", "pl"): "tisai",
}
ADJECTIVE_SUFFIX: dict[Gender, str] = {"m": "o", "f": "a"}
VERB_SUFFIX: dict[Person, str] = {"1sg": "o", "2sg": "as", "3sg": "at", "1pl": "amo", "3pl": "ant"}
CLAUSE_CONJUNCTIONS: dict[str, str] = {"and": "ta", "but": "sed"}
NP_CONJUNCTION = ("and", "e")
VOWELS = frozenset("aeiou")
MIN_WORDS, MAX_WORDS = 4, 14  # English words per sentence, the final "." included


@dataclass(frozen=True)
class NP:
    """A noun phrase: determiner kind, optional adjective (English), noun, number."""

    det: DetKind
    adj: str | None
    noun: Noun
    number: Number


@dataclass(frozen=True)
class Clause:
    """Subject (a pronoun or one or two noun phrases), verb, optional object and PP."""

    subject: str | tuple[NP, ...]
    verb: Verb
    obj: NP | None
    pp: tuple[str, NP] | None


@dataclass(frozen=True)
class Sentence:
    """One or two clauses joined by an English conjunction."""

    clauses: tuple[Clause, ...]
    conjunction: str | None = None


# -- rules ---------------------------------------------------------------------------------
def plural(stem: str) -> str:
    """Kalo plural: ``-n`` after a vowel, ``-en`` after a consonant (rule 5)."""
    return stem + ("n" if stem[-1] in VOWELS else "en")


def subject_person(subject: str | tuple[NP, ...]) -> Person:
    """Person and number of a subject (rule 6)."""
    if isinstance(subject, str):
        return PRONOUNS[subject][1]
    if len(subject) > 1:
        return "3pl"
    return "3pl" if subject[0].number == "pl" else "3sg"


def _np_source(np: NP) -> list[str]:
    det = SOURCE_DETERMINERS[(np.det, np.number)]
    noun = np.noun.pl if np.number == "pl" else np.noun.sg
    rest = [np.adj, noun] if np.adj else [noun]
    if det == "a" and rest[0][0] in VOWELS:
        det = "an"
    return [det, *rest]


def _np_target(np: NP) -> list[str]:
    g = np.noun.gender
    det = TARGET_DETERMINERS[(np.det, g, np.number)]
    noun = plural(np.noun.stem) if np.number == "pl" else np.noun.stem
    adj = [ADJECTIVES[np.adj] + ADJECTIVE_SUFFIX[g]] if np.adj else []
    return [det, noun, *adj]


def _subject_words(subject: str | tuple[NP, ...], target: bool) -> list[str]:
    if isinstance(subject, str):
        return [PRONOUNS[subject][0] if target else subject]
    render = _np_target if target else _np_source
    words = render(subject[0])
    for np in subject[1:]:
        words += [NP_CONJUNCTION[1] if target else NP_CONJUNCTION[0], *render(np)]
    return words


def _clause_source(c: Clause) -> list[str]:
    person = subject_person(c.subject)
    verb = c.verb.third if person == "3sg" else c.verb.base
    words = [*_subject_words(c.subject, False), verb]
    if c.obj is not None:
        words += _np_source(c.obj)
    if c.pp is not None:
        words += [c.pp[0], *_np_source(c.pp[1])]
    return words


def _clause_target(c: Clause) -> list[str]:
    words = _subject_words(c.subject, True)
    if c.pp is not None:
        words += [*_np_target(c.pp[1]), PREPOSITIONS[c.pp[0]]]
    if c.obj is not None:
        words += _np_target(c.obj)
    return [*words, c.verb.stem + VERB_SUFFIX[subject_person(c.subject)]]


def source_words(s: Sentence) -> list[str]:
    """The English words of a sentence (final "." included)."""
    words = _clause_source(s.clauses[0])
    for c in s.clauses[1:]:
        words += [s.conjunction or "and", *_clause_source(c)]
    return [*words, "."]


def target_words(s: Sentence) -> list[str]:
    """The Kalo words of a sentence (final "." included)."""
    words = _clause_target(s.clauses[0])
    for c in s.clauses[1:]:
        words += [CLAUSE_CONJUNCTIONS[s.conjunction or "and"], *_clause_target(c)]
    return [*words, "."]


def to_text(words: list[str]) -> str:
    """Words joined by spaces, with the final "." attached ("the cat sleeps.")."""
    return " ".join(words[:-1]) + words[-1] if words[-1] == "." else " ".join(words)


# -- sampling ------------------------------------------------------------------------------
def _sample_np(rng: random.Random) -> NP:
    det: DetKind = rng.choices(("def", "indef", "dem"), weights=(2, 1, 1))[0]
    adj = rng.choice(sorted(ADJECTIVES)) if rng.random() < 0.4 else None
    number: Number = "pl" if rng.random() < 0.35 else "sg"
    return NP(det, adj, rng.choice(NOUNS), number)


def _sample_clause(rng: random.Random) -> Clause:
    r = rng.random()
    if r < 0.2:
        subject: str | tuple[NP, ...] = rng.choice(list(PRONOUNS))
    elif r < 0.3:
        subject = (_sample_np(rng), _sample_np(rng))
    else:
        subject = (_sample_np(rng),)
    transitive = rng.random() < 0.7
    verb = rng.choice(TRANSITIVE if transitive else INTRANSITIVE)
    obj = _sample_np(rng) if transitive else None
    pp = (rng.choice(sorted(PREPOSITIONS)), _sample_np(rng)) if rng.random() < 0.35 else None
    return Clause(subject, verb, obj, pp)


def sample_sentence(rng: random.Random) -> Sentence:
    """Draw one sentence of :data:`MIN_WORDS`..:data:`MAX_WORDS` English words (rejection
    sampling, so the result depends only on the RNG's state)."""
    while True:
        if rng.random() < 0.3:
            conj = rng.choice(("and", "and", "but"))
            s = Sentence((_sample_clause(rng), _sample_clause(rng)), conj)
        else:
            s = Sentence((_sample_clause(rng),))
        if MIN_WORDS <= len(source_words(s)) <= MAX_WORDS:
            return s


def sample_pairs(seed: int) -> Iterator[tuple[str, str]]:
    """An endless deterministic stream of ``(english, kalo)`` text pairs."""
    rng = random.Random(seed)
    while True:
        s = sample_sentence(rng)
        yield to_text(source_words(s)), to_text(target_words(s))


def make_splits(sizes: dict[str, int], seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Draw disjoint splits of distinct English sentences.

    Splits are filled in the order given (put ``test`` and ``valid`` first so they do not
    change when the training set grows).

    Args:
        sizes: number of pairs per split name, e.g. ``{"test": 500, "valid": 500,
            "train": 20000}``.
        seed: RNG seed.

    Raises:
        ValueError: a negative size.
    """
    for name, n in sizes.items():
        if n < 0:
            raise ValueError(f"split size for {name!r} must be >= 0, got {n}")
    seen: set[str] = set()
    stream = sample_pairs(seed)
    out: dict[str, list[tuple[str, str]]] = {}
    for name, n in sizes.items():
        pairs: list[tuple[str, str]] = []
        while len(pairs) < n:
            src, tgt = next(stream)
            if src not in seen:
                seen.add(src)
                pairs.append((src, tgt))
        out[name] = pairs
    return out


def vocabulary() -> tuple[set[str], set[str]]:
    """Every English and every Kalo word the grammar can produce (punctuation included)."""
    src = {"."} | set(PRONOUNS) | set(ADJECTIVES) | set(PREPOSITIONS) | set(CLAUSE_CONJUNCTIONS)
    src |= {*SOURCE_DETERMINERS.values(), "an"}
    src |= {n.sg for n in NOUNS} | {n.pl for n in NOUNS}
    src |= {v.base for v in TRANSITIVE + INTRANSITIVE} | {
        v.third for v in TRANSITIVE + INTRANSITIVE
    }
    tgt = {".", NP_CONJUNCTION[1], *CLAUSE_CONJUNCTIONS.values(), *PREPOSITIONS.values()}
    tgt |= set(TARGET_DETERMINERS.values()) | {p for p, _ in PRONOUNS.values()}
    tgt |= {n.stem for n in NOUNS} | {plural(n.stem) for n in NOUNS}
    tgt |= {a + s for a in ADJECTIVES.values() for s in ADJECTIVE_SUFFIX.values()}
    tgt |= {v.stem + s for v in TRANSITIVE + INTRANSITIVE for s in VERB_SUFFIX.values()}
    return src, tgt


__all__ = [
    "ADJECTIVES",
    "INTRANSITIVE",
    "NOUNS",
    "NP",
    "PREPOSITIONS",
    "PRONOUNS",
    "TARGET_DETERMINERS",
    "TRANSITIVE",
    "VERB_SUFFIX",
    "Clause",
    "Noun",
    "Sentence",
    "Verb",
    "make_splits",
    "plural",
    "sample_pairs",
    "sample_sentence",
    "source_words",
    "target_words",
    "to_text",
    "vocabulary",
]
