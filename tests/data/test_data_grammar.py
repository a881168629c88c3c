"""The synthetic English -> Kalo grammar, checked against an independent re-statement of
its rules (the test parses the English side itself and predicts the Kalo side)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from qkv.data import grammar
from qkv.data.tokenizers import split_words

# -- an independent re-statement of the rules (module docstring of qkv.data.grammar) -----
GENDER = {n.sg: n.gender for n in grammar.NOUNS} | {n.pl: n.gender for n in grammar.NOUNS}
PLURAL_NOUNS = {n.pl for n in grammar.NOUNS}
STEM = {n.sg: n.stem for n in grammar.NOUNS} | {n.pl: n.stem for n in grammar.NOUNS}
ADJ = dict(grammar.ADJECTIVES)
VERBS = {v.base: v.stem for v in grammar.TRANSITIVE + grammar.INTRANSITIVE} | {
    v.third: v.stem for v in grammar.TRANSITIVE + grammar.INTRANSITIVE
}
TRANSITIVE = {v.base for v in grammar.TRANSITIVE} | {v.third for v in grammar.TRANSITIVE}
THIRD_SG = {v.third for v in grammar.TRANSITIVE + grammar.INTRANSITIVE}
PRON = {"I": ("mi", "1sg"), "you": ("tu", "2sg"), "he": ("lo", "3sg"), "she": ("la", "3sg"),
        "we": ("nos", "1pl"), "they": ("ilo", "3pl")}  # fmt: skip
ARTICLE = {
    ("the", "m", "sg"): "ke", ("the", "f", "sg"): "ka", ("the", "m", "pl"): "kei",
    ("the", "f", "pl"): "kai", ("a", "m", "sg"): "on", ("a", "f", "sg"): "ona",
    ("an", "m", "sg"): "on", ("an", "f", "sg"): "ona", ("some", "m", "pl"): "onoi",
    ("some", "f", "pl"): "onai", ("this", "m", "sg"): "tis", ("this", "f", "sg"): "tisa",
    ("these", "m", "pl"): "tisoi", ("these", "f", "pl"): "tisai",
}  # fmt: skip
SUFFIX = {"1sg": "o", "2sg": "as", "3sg": "at", "1pl": "amo", "3pl": "ant"}
POSTP = {"in": "inu", "on": "supa", "near": "apud", "with": "kun", "under": "sub", "behind": "post"}


def kalo_np(words: list[str], i: int) -> tuple[list[str], int, str]:
    """Translate the English NP at ``words[i]``; returns (kalo words, next index, number)."""
    det = words[i]
    adj = words[i + 1] if words[i + 1] in ADJ else None
    noun = words[i + 2] if adj else words[i + 1]
    number = "pl" if noun in PLURAL_NOUNS else "sg"
    g = GENDER[noun]
    stem = STEM[noun]
    if number == "pl":
        stem += "n" if stem[-1] in "aeiou" else "en"
    out = [ARTICLE[(det, g, number)], stem]
    if adj:
        out.append(ADJ[adj] + ("o" if g == "m" else "a"))
    return out, i + (3 if adj else 2), number


def kalo_clause(words: list[str], i: int) -> tuple[list[str], int]:
    if words[i] in PRON:
        subj, person, i = [PRON[words[i]][0]], PRON[words[i]][1], i + 1
    else:
        subj, i, number = kalo_np(words, i)
        person = "3pl" if number == "pl" else "3sg"
        if words[i] == "and":  # after a subject NP only a verb or a second NP can follow
            more, i, _ = kalo_np(words, i + 1)
            subj, person = [*subj, "e", *more], "3pl"
    verb = words[i]
    assert (verb in THIRD_SG) == (person == "3sg"), f"English agreement broken: {words}"
    i += 1
    obj: list[str] = []
    if verb in TRANSITIVE:
        obj, i, _ = kalo_np(words, i)
    pp: list[str] = []
    if words[i] in POSTP:
        np_words, j, _ = kalo_np(words, i + 1)
        pp, i = [*np_words, POSTP[words[i]]], j
    return [*subj, *pp, *obj, VERBS[verb] + SUFFIX[person]], i


def kalo_sentence(english: str) -> str:
    words = split_words(english)
    out, i = kalo_clause(words, 0)
    if words[i] in ("and", "but"):
        conj = "ta" if words[i] == "and" else "sed"
        more, i = kalo_clause(words, i + 1)
        out = [*out, conj, *more]
    assert words[i:] == ["."], f"unparsed tail {words[i:]} in {english!r}"
    return " ".join(out) + "."


@pytest.fixture(scope="module")
def splits() -> dict[str, list[tuple[str, str]]]:
    return grammar.make_splits({"test": 300, "valid": 300, "train": 3000}, seed=0)


def test_docstring_example() -> None:
    assert kalo_sentence("the big dog sees a small cat in the garden.") == (
        "ke toran grando ka hort inu ona mira pika vidat."
    )


def test_every_pair_follows_the_restated_rules(splits) -> None:
    for pairs in splits.values():
        for en, ka in pairs:
            assert kalo_sentence(en) == ka, en


def test_articles_and_adjectives_agree_with_noun_gender(splits) -> None:
    """Every Kalo noun is preceded by an article of its gender (and number), and an
    adjective after it carries the gender's suffix."""
    stems = {n.stem: n.gender for n in grammar.NOUNS}
    stems |= {grammar.plural(n.stem): n.gender for n in grammar.NOUNS}
    art_gender = {v: g for (_, g, _), v in grammar.TARGET_DETERMINERS.items()}
    adj_forms = {a + s: g for a in ADJ.values() for g, s in (("m", "o"), ("f", "a"))}
    n_checked = 0
    for _, ka in splits["train"]:
        words = split_words(ka)
        for i, w in enumerate(words):
            if w in stems:
                assert art_gender[words[i - 1]] == stems[w], ka
                if i + 1 < len(words) and words[i + 1] in adj_forms:
                    assert adj_forms[words[i + 1]] == stems[w], ka
                n_checked += 1
    assert n_checked > 5000


def test_verb_final_and_person_suffix() -> None:
    rng = random.Random(1)
    for _ in range(500):
        s = grammar.sample_sentence(rng)
        tw = grammar.target_words(s)
        for c in s.clauses:
            person = grammar.subject_person(c.subject)
            assert c.verb.stem + grammar.VERB_SUFFIX[person] in tw
        assert tw[-2].startswith(tuple(v.stem for v in grammar.TRANSITIVE + grammar.INTRANSITIVE))


def test_deterministic_per_seed() -> None:
    a = grammar.make_splits({"test": 50, "train": 200}, seed=3)
    b = grammar.make_splits({"test": 50, "train": 200}, seed=3)
    c = grammar.make_splits({"test": 50, "train": 200}, seed=4)
    assert a == b
    assert a != c


def test_splits_are_disjoint_and_distinct(splits) -> None:
    sources = [en for pairs in splits.values() for en, _ in pairs]
    assert len(sources) == len(set(sources)) == 3600
    assert [len(v) for v in splits.values()] == [300, 300, 3000]


def test_test_split_does_not_depend_on_train_size() -> None:
    small = grammar.make_splits({"test": 40, "valid": 40, "train": 10}, seed=0)
    big = grammar.make_splits({"test": 40, "valid": 40, "train": 500}, seed=0)
    assert small["test"] == big["test"] and small["valid"] == big["valid"]


def test_target_is_a_function_of_source() -> None:
    seen: dict[str, str] = {}
    for en, ka in _take(grammar.sample_pairs(7), 20000):
        assert seen.setdefault(en, ka) == ka, en


def test_lengths_and_vocabulary(splits) -> None:
    src_vocab, tgt_vocab = grammar.vocabulary()
    assert 50 <= len(src_vocab) <= 120 and 50 <= len(tgt_vocab) <= 130
    used_src: Counter[str] = Counter()
    used_tgt: Counter[str] = Counter()
    for en, ka in splits["train"]:
        ew, kw = split_words(en), split_words(ka)
        assert grammar.MIN_WORDS <= len(ew) <= grammar.MAX_WORDS
        assert len(kw) == len(ew)  # reordering and agreement never add or drop words
        used_src.update(ew)
        used_tgt.update(kw)
    assert set(used_src) <= src_vocab and set(used_tgt) <= tgt_vocab
    assert len(used_src) > 0.95 * len(src_vocab)


def test_make_splits_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError, match="'train' must be >= 0, got -1"):
        grammar.make_splits({"train": -1})


def _take(it, n):
    for _, x in zip(range(n), it):
        yield x
