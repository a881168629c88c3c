"""Tokenizers: special ids, round trips, save/load, errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    detokenize,
    split_words,
    train_tokenizer,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "She said: \"It's well-known (really) that 3.5% of cats don't sleep!\"",
    "Grüße aus Köln, naïve café — ünïcödé ☃?",
    "the cat sees the dog, and the dog sleeps.",
]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS * 20, vocab_size=300)


def _all(bpe: BPETokenizer) -> list[Tokenizer]:
    return [CharTokenizer.train(CORPUS), WordTokenizer.train(CORPUS), bpe]


def test_special_ids_are_the_same_for_every_kind(bpe: BPETokenizer) -> None:
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    for tok in _all(bpe):
        assert [tok.id_to_token(i) for i in range(4)] == list(SPECIAL_TOKENS)
        assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
        assert (tok.PAD, tok.BOS, tok.EOS, tok.UNK) == (0, 1, 2, 3)


@pytest.mark.parametrize("text", CORPUS)
def test_round_trip_on_training_text(text: str, bpe: BPETokenizer) -> None:
    for tok in _all(bpe):
        ids = tok.encode(text)
        assert all(i >= 4 for i in ids), f"{tok}: encode must not emit specials"
        assert tok.decode(ids) == text, tok


def test_decode_skips_specials(bpe: BPETokenizer) -> None:
    for tok in _all(bpe):
        ids = tok.encode("the dog.")
        assert tok.decode([BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]) == "the dog."


def test_char_tokenizer_vocab_and_unknown() -> None:
    tok = CharTokenizer.train(["abca", "b"])
    assert tok.vocab_size == 4 + 3
    assert tok.vocab[4:] == ["a", "b", "c"]
    assert tok.encode("abz") == [4, 5, UNK_ID]
    assert tok.decode(tok.encode("abz")) == "ab"  # <unk> is a special: skipped


def test_word_tokenizer_splits_words_and_punctuation() -> None:
    assert split_words("Hello, world! It's well-known: 3.5% (ok).") == [
        "Hello",
        ",",
        "world",
        "!",
        "It's",
        "well-known",
        ":",
        "3.5",
        "%",
        "(",
        "ok",
        ")",
        ".",
    ]
    tok = WordTokenizer.train(["a b b c c c"], min_freq=2)
    assert tok.vocab[4:] == ["c", "b"]  # most frequent first
    assert tok.encode("a c") == [UNK_ID, 4]


def test_word_tokenizer_lowercase_and_max_size() -> None:
    tok = WordTokenizer.train(["The the THE cat"], lowercase=True, max_size=5)
    assert tok.vocab == [*SPECIAL_TOKENS, "the"]
    assert tok.encode("THE Cat") == [4, UNK_ID]
    with pytest.raises(ValueError, match="max_size"):
        WordTokenizer.train(["x"], max_size=4)
    with pytest.raises(ValueError, match="min_freq"):
        WordTokenizer.train(["x"], min_freq=0)


def test_detokenize_rules() -> None:
    assert detokenize(["the", "cat", "(", "big", ")", "sleeps", "."]) == "the cat (big) sleeps."
    assert detokenize(["he", "said", '"', "hi", "!", '"', "twice"]) == 'he said "hi!" twice'
    assert detokenize([]) == ""


_words = st.sampled_from(
    [
        "the",
        "cat",
        "3.5",
        "don't",
        "well-known",
        "Köln",
        ".",
        ",",
        "!",
        "?",
        ":",
        ";",
        "(",
        ")",
        '"',
        "-",
        "'",
        "%",
        "[",
        "]",
        "x1",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_words, max_size=12))
def test_split_words_inverts_detokenize(words: list[str]) -> None:
    assert split_words(detokenize(words)) == words


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_bpe_round_trips_any_text(text: str) -> None:
    tok = _BPE_ANY
    assert tok.decode(tok.encode(text)) == text.replace("<pad>", "").replace("<bos>", "").replace(
        "<eos>", ""
    ).replace("<unk>", "")


_BPE_ANY = BPETokenizer.train(CORPUS, vocab_size=270)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(categories=["L", "N", "P", "Zs"]), max_size=60))
def test_word_encode_is_idempotent_through_decode(text: str) -> None:
    tok = WordTokenizer.train([text])
    ids = tok.encode(text)
    assert tok.encode(tok.decode(ids)) == ids


def test_save_load_round_trip(tmp_path, bpe: BPETokenizer) -> None:
    for tok in [*_all(bpe), WordTokenizer.train(CORPUS, lowercase=True)]:
        d = tmp_path / tok.kind / str(id(tok))
        path = tok.save(d)
        assert path == d / "tokenizer.json"
        assert json.loads(path.read_text(encoding="utf-8"))["kind"] == tok.kind
        back = Tokenizer.load(d)
        assert type(back) is type(tok)
        assert back.vocab_size == tok.vocab_size
        for text in CORPUS:
            assert back.encode(text) == tok.encode(text)
            assert back.decode(back.encode(text)) == tok.decode(tok.encode(text))
    assert Tokenizer.load(tmp_path / "word" / str(id(tok))).lowercase is True  # type: ignore[attr-defined]


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"kind": "sentencepiece"}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokenizer.json.*unknown tokenizer kind 'sentencepiece'"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        Tokenizer.load(tmp_path)


def test_bad_ids_and_bad_sizes(bpe: BPETokenizer) -> None:
    for tok in _all(bpe):
        with pytest.raises(ValueError, match=f"token id {tok.vocab_size} is outside"):
            tok.decode([tok.vocab_size])
        with pytest.raises(ValueError, match="outside"):
            tok.id_to_token(-1)
    with pytest.raises(ValueError, match=r"vocab_size \(100\) must be at least 260"):
        BPETokenizer.train(CORPUS, vocab_size=100)
    with pytest.raises(ValueError, match="unknown tokenizer kind 'sp'"):
        train_tokenizer("sp", CORPUS)


def test_bpe_learns_merges_and_batches(bpe: BPETokenizer) -> None:
    assert 260 < bpe.vocab_size <= 300
    text = "the quick brown fox"
    assert len(bpe.encode(text)) < len(text.encode())  # merges shorten the byte sequence
    assert bpe.encode_batch([text, "dog"]) == [bpe.encode(text), bpe.encode("dog")]
    assert bpe.decode_batch([bpe.encode(text)]) == [text]
