"""Audio files, transcript normalization, voice hold-out and the espeak-ng speech corpus
(determinism, a cache per split that an interrupted corpus keeps, progress on standard error,
a clear error without espeak-ng), and WER/CER via jiwer."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from qkv.data import audio, metrics
from qkv.data.audio import SpeechError, SpeechSettings

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng; .ci/run installs it)",
)


def test_wav_round_trip_and_resampling(tmp_path):
    t = np.arange(22050) / 22050.0
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    path = audio.write_wav(tmp_path / "a.wav", tone, rate=22050)
    same = audio.read_wav(path, rate=22050)
    assert np.abs(same - tone).max() <= 1 / 32767  # 16-bit quantization
    x = audio.read_wav(path)  # resampled to 16 kHz
    assert len(x) == 16000
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 s of signal: bin k is k Hz
    with pytest.raises(SpeechError, match="does not exist"):
        audio.read_wav(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(SpeechError, match="is not a PCM WAV file"):
        audio.read_wav(tmp_path / "bad.wav")


def test_normalize_text():
    assert audio.normalize_text("It\u2019s a well-known fact, isn't it?") == (
        "it's a well known fact isn't it"
    )
    assert audio.normalize_text("  Hello,   World!  ") == "hello world"


def test_usable_sentences_keep_what_is_spoken_as_written():
    pairs = [("a", "Give sb sth back."), ("b", "It costs 5 euros."), ("c", "Fine, thanks!"),
             ("d", "Fine, thanks!"), ("e", "A sentence far too long to be spoken here.")]  # fmt: skip
    assert audio.usable_sentences(pairs, max_chars=20) == ["Fine, thanks!"]


def test_language_model_texts_add_other_sentences_but_never_a_held_out_one():
    pairs = [("a", "Good night."), ("b", "Say good night to him."), ("c", "Hello there!"),
             ("d", "It costs 5 euros."), ("e", "Goodnightly, fine."), ("f", "Hello   there"),
             ("g", "A sentence over sixty characters is kept: it is never spoken at all."),
             ("h", "Goodnightly, fine!")]  # fmt: skip
    texts = audio.language_model_texts(pairs, ["hello there", "i see"], ["good night"])
    assert texts == [
        "hello there",  # the training transcripts first, each once
        "i see",
        "goodnightly fine",  # holds "good night" inside a word only
        "a sentence over sixty characters is kept it is never spoken at all",
    ]


def test_voices_are_held_out():
    for seed in range(5):
        v = audio.split_voices(SpeechSettings(seed=seed))
        assert not set(v["train"]) & set(v["test"])
        assert not set(v["train"]) & set(v["valid"])
        assert not set(v["valid"]) & set(v["test"])
        assert (len(v["test"]), len(v["valid"])) == (3, 2)
        assert sorted(v["train"] + v["valid"] + v["test"]) == sorted(audio.VARIANTS)


def test_settings_errors_name_values():
    with pytest.raises(ValueError, match=r"speed must be a range \(lo <= hi\), got \(200, 100\)"):
        SpeechSettings(speed=(200, 100))
    with pytest.raises(ValueError, match="must leave training variants"):
        SpeechSettings(valid_variants=8, test_variants=8)


def test_missing_espeak_names_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SpeechError, match=r"needs espeak-ng: `apt-get install espeak-ng`"):
        audio.synthesize("hello")


SENTENCES = [f"Sentence number {w} is spoken here." for w in
             ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")]  # fmt: skip


@needs_espeak
def test_corpus_is_deterministic_cached_and_holds_out_voices(tmp_path, monkeypatch):
    s = SpeechSettings(seed=3, n_train=6, n_valid=2, n_test=2)
    a = audio.speech_corpus(SENTENCES, s, cache_dir=tmp_path / "a", workers=2)
    b = audio.speech_corpus(SENTENCES, s, cache_dir=tmp_path / "b", workers=1)
    for split in ("train", "valid", "test"):
        assert [u.text for u in a[split]] == [u.text for u in b[split]]
        for u, v in zip(a[split], b[split]):
            assert (u.voice, u.speed, u.pitch) == (v.voice, v.speed, v.pitch)
            assert np.array_equal(u.audio, v.audio)
    voices = audio.split_voices(s)
    for split in ("train", "valid", "test"):
        assert all(u.voice.split("+")[1] in voices[split] for u in a[split])
        assert all(0.5 < u.seconds < 10 for u in a[split])
    texts = {split: {u.sentence for u in a[split]} for split in a}
    assert not texts["train"] & (texts["valid"] | texts["test"])
    # the cache answers without espeak-ng, with the same samples
    monkeypatch.setattr(shutil, "which", lambda name: None)
    c = audio.speech_corpus(SENTENCES, s, cache_dir=tmp_path / "a")
    assert np.array_equal(c["test"][1].audio, a["test"][1].audio)
    with pytest.raises(SpeechError, match="needs espeak-ng"):
        audio.speech_corpus(SENTENCES, s, cache_dir=tmp_path / "fresh")


def _corpus_dir(root):
    (where,) = [p for p in root.iterdir() if p.is_dir()]
    return where


def _same_corpus(a, b):
    for split in ("train", "valid", "test"):
        assert [u.text for u in a[split]] == [u.text for u in b[split]]
        assert all(np.array_equal(u.audio, v.audio) for u, v in zip(a[split], b[split]))


REAL_SYNTHESIZE = audio.synthesize


class CountingSynth:
    """``audio.synthesize`` that counts its calls and can fail on one sentence."""

    def __init__(self, fail_on: str | None = None, error: BaseException | None = None):
        self.real, self.calls, self.fail_on, self.error = REAL_SYNTHESIZE, [], fail_on, error

    def __call__(self, text, voice="en-us", **kwargs):
        self.calls.append(text)
        if text == self.fail_on:
            raise self.error
        return self.real(text, voice, **kwargs)


MANY = [f"Sentence number {i} is spoken here." for i in range(24)]


@needs_espeak
def test_corpus_progress_counts_each_split_in_plain_lines(tmp_path, capsys):
    s = SpeechSettings(seed=3, n_train=20, n_valid=2, n_test=2)
    audio.speech_corpus(MANY, s, cache_dir=tmp_path, workers=2)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith("speech corpus: making test (2), valid (2), train (20) "
                               "utterances with espeak-ng, 2 at a time, into ")  # fmt: skip
    assert "speech corpus: train 10/20 utterances (" in err and "left)" in err
    for split, n in (("test", 2), ("valid", 2), ("train", 20)):
        assert f"speech corpus: {split}: {n} utterances in " in err
    assert "\r" not in err  # standard error is no terminal here: no bar
    audio.speech_corpus(MANY, s, cache_dir=tmp_path)  # cached: nothing to say
    assert capsys.readouterr().err == ""
    audio.speech_corpus(MANY, s, cache_dir=tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""


@needs_espeak
@pytest.mark.parametrize("error", [KeyboardInterrupt(), SpeechError("espeak-ng failed")])
def test_a_stopped_training_split_keeps_the_finished_splits(tmp_path, capsys, monkeypatch, error):
    s = SpeechSettings(seed=3, n_train=6, n_valid=2, n_test=2)
    fresh = audio.speech_corpus(SENTENCES, s, cache_dir=tmp_path / "fresh", progress=False)
    train = [u.sentence for u in fresh["train"]]
    synth = CountingSynth(fail_on=train[0], error=error)
    monkeypatch.setattr(audio, "synthesize", synth)
    with pytest.raises(type(error)):
        audio.speech_corpus(SENTENCES, s, cache_dir=tmp_path / "c", workers=1, progress=False)
    where = _corpus_dir(tmp_path / "c")
    # the finished splits are cached whole; no partial training split, no temporary file
    assert sorted(p.name for p in where.iterdir()) == ["test.npz", "valid.npz"]
    # the training jobs not yet started were dropped, not waited for
    assert len([t for t in synth.calls if t in train]) <= 2
    synth = CountingSynth()
    monkeypatch.setattr(audio, "synthesize", synth)
    again = audio.speech_corpus(SENTENCES, s, cache_dir=tmp_path / "c", workers=2)
    assert sorted(synth.calls) == sorted(train)  # only the training split was made
    assert "; the cached test and valid kept" in capsys.readouterr().err
    _same_corpus(again, fresh)  # the same samples as a corpus made in one go


@needs_espeak
def test_a_damaged_split_file_is_made_again(tmp_path, monkeypatch):
    s = SpeechSettings(seed=3, n_train=6, n_valid=2, n_test=2)
    first = audio.speech_corpus(SENTENCES, s, cache_dir=tmp_path, progress=False)
    (_corpus_dir(tmp_path) / "valid.npz").write_bytes(b"not a zip file")
    synth = CountingSynth()
    monkeypatch.setattr(audio, "synthesize", synth)
    again = audio.speech_corpus(SENTENCES, s, cache_dir=tmp_path, progress=False)
    assert sorted(synth.calls) == sorted(u.sentence for u in first["valid"])
    _same_corpus(again, first)


def test_error_rates_on_known_strings():
    refs = ["the cat sat on the mat", "hello world"]
    hyps = ["the cat sit on mat", "hello world"]
    # one substitution and one deletion over 8 reference words
    assert metrics.word_error_rate(hyps, refs) == pytest.approx(100 * 2 / 8)
    # "sat"->"sit" is 1 edit, "the " deleted is 4, over 22 + 11 characters
    assert metrics.char_error_rate(hyps, refs) == pytest.approx(100 * 5 / 33)
    assert metrics.word_error_rate(["a b"], ["a"]) == pytest.approx(100.0)  # an insertion
    with pytest.raises(ValueError, match="a reference is empty"):
        metrics.word_error_rate(["x"], [""])
