"""A synthetic speech corpus of real English sentences spoken by espeak-ng (audio files are
read and written by :mod:`qkv.data.audio_files`, re-exported here).

No speech corpus can be downloaded here, so :func:`speech_corpus` builds an honest stand-in:
English sentences written by people (the English side of the Debian ``trans-de-en``
dictionary, :mod:`qkv.data.ding`) spoken by the formant synthesizer ``espeak-ng`` with a
random accent, voice variant, speed and pitch per utterance, then a random gain and additive
white noise at a random signal-to-noise ratio. **The speech is synthetic; the text is real.**

Voices are held out: a voice is an accent plus a variant (``en-gb-scotland+f2``), and the
valid and test splits use variants that the training split never hears (so a model must
generalize across speakers), with sentences disjoint from the training ones.

The corpus is generated once, in parallel (a bounded number of ``espeak-ng`` processes),
and cached under ``~/.cache/qkv/asr/<key>`` (``key`` hashes every setting and the seed;
files are written atomically). Everything is seeded: the same settings give the same
samples, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from qkv._resources import is_exhaustion, start_error
from qkv.data.audio_files import (
    MAX_AUDIO_SECONDS,
    SAMPLE_RATE,
    AudioFileError,
    SpeechError,
    decode_wav_bytes,
    read_wav,
    resample,
    write_wav,
)
from qkv.data.cachefiles import CountProgress, format_clock, write_atomically

ESPEAK = "espeak-ng"
#: espeak-ng's English accents (``espeak-ng --voices=en``, the built-in ``gmw`` ones; the
#: ``mb-*`` voices need MBROLA, which Debian packages separately).
ACCENTS: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
#: Voice variants (``espeak-ng --voices=variant``): speakers' timbres, held out by split.
VARIANTS: tuple[str, ...] = (
    *(f"m{i}" for i in range(1, 9)),
    *(f"f{i}" for i in range(1, 6)),
    "klatt",
    "klatt2",
    "klatt3",
)
#: The characters a transcript may hold after :func:`normalize_text`.
ALPHABET = "abcdefghijklmnopqrstuvwxyz' "
_CACHE_VERSION = 1
_DROP = re.compile(r"[^a-z' ]+")
# written forms espeak-ng does not read as written: digits, symbols, and the Ding
# dictionary's placeholders ("to give sb sth")
_UNSPOKEN = re.compile(r"[0-9%&$@#*+=/_]|\b(?:sb|sth|etw|jdn|jdm)\b", re.IGNORECASE)


# -- synthesis ---------------------------------------------------------------------------
def require_espeak() -> str:
    """The path of ``espeak-ng``.

    Raises:
        SpeechError: it is not installed (naming the Debian package).
    """
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise SpeechError("speech synthesis needs espeak-ng: `apt-get install espeak-ng`")
    return exe


def synthesize(text: str, voice: str = "en-us", *, speed: int = 175, pitch: int = 50) -> np.ndarray:
    """Speak ``text`` with ``espeak-ng`` (``-v voice -s speed -p pitch``).

    Args:
        text: what to say (read from standard input, so it is never taken for an option).
        voice: an accent, optionally with a variant (``en-gb+f2``).
        speed: words per minute (espeak-ng's ``-s``, 80-450).
        pitch: 0-99 (``-p``).

    Returns:
        Mono float32 samples at :data:`SAMPLE_RATE`.

    Raises:
        SpeechError: espeak-ng is missing or fails (its message is included).
        qkv._resources.ResourceLimitError: no process could be started for it.
    """
    cmd = [require_espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout"]
    try:
        proc = subprocess.run(cmd, input=text.encode(), capture_output=True, check=False)
    except OSError as e:
        if is_exhaustion(e):  # fork failed: "[Errno 11] Resource temporarily unavailable"
            raise start_error("espeak-ng", e, "let fewer processes run at once") from None
        raise
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise SpeechError(f"espeak-ng -v {voice} failed: {err}")
    x, rate = decode_wav_bytes(proc.stdout, "espeak-ng's output")
    return resample(x, rate)


def normalize_text(text: str) -> str:
    """A transcript as the models see it: lower case, letters, apostrophes and single
    spaces (hyphens become spaces, other punctuation goes)."""
    text = text.lower().replace("-", " ").replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(_DROP.sub(" ", text).split())


# -- the corpus --------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeechSettings:
    """How :func:`speech_corpus` speaks its sentences (every field enters the cache key).

    Attributes:
        seed: seeds the sentence and voice split and every utterance's randomness.
        n_train / n_valid / n_test: utterances per split (each a different sentence).
        max_chars: longest sentence (characters) kept (about 4 s of speech at 175 wpm).
        speed: range of espeak-ng speeds, words per minute.
        pitch: range of pitches (0-99).
        gain_db: range of the gain applied to the peak-normalized signal.
        snr_db: range of the signal-to-noise ratio of the added white noise.
        valid_variants / test_variants: how many voice variants each held-out split gets
            to itself (none of them is heard in training).
    """

    seed: int = 0
    n_train: int = 4000
    n_valid: int = 200
    n_test: int = 300
    max_chars: int = 60
    speed: tuple[int, int] = (140, 210)
    pitch: tuple[int, int] = (30, 70)
    gain_db: tuple[float, float] = (-12.0, 0.0)
    snr_db: tuple[float, float] = (15.0, 40.0)
    valid_variants: int = 2
    test_variants: int = 3

    def __post_init__(self) -> None:
        for name in ("n_train", "n_valid", "n_test", "max_chars", "valid_variants"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.test_variants, int) or self.test_variants < 1:
            raise ValueError(f"test_variants must be an int >= 1, got {self.test_variants!r}")
        if self.valid_variants + self.test_variants >= len(VARIANTS):
            raise ValueError(
                f"valid_variants ({self.valid_variants}) + test_variants "
                f"({self.test_variants}) must leave training variants among {len(VARIANTS)}"
            )
        for name in ("speed", "pitch", "gain_db", "snr_db"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be a range (lo <= hi), got {(lo, hi)}")

    def key(self) -> str:
        """The cache key: a hash of every setting and the corpus format version."""
        blob = json.dumps({"v": _CACHE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Utterance:
    """One spoken sentence.

    Attributes:
        audio: mono float32 samples at :data:`SAMPLE_RATE`.
        text: the transcript (:func:`normalize_text` of ``sentence``).
        sentence: the sentence as written (what espeak-ng read).
        voice: ``accent+variant``.
        speed / pitch: espeak-ng's settings.
    """

    audio: np.ndarray = field(repr=False)
    text: str
    sentence: str
    voice: str
    speed: int
    pitch: int

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return len(self.audio) / SAMPLE_RATE


def split_voices(settings: SpeechSettings) -> dict[str, list[str]]:
    """The voice variants of each split: disjoint, seeded (see :class:`SpeechSettings`)."""
    variants = list(VARIANTS)
    random.Random(settings.seed).shuffle(variants)
    n_t, n_v = settings.test_variants, settings.valid_variants
    return {
        "test": sorted(variants[:n_t]),
        "valid": sorted(variants[n_t : n_t + n_v]),
        "train": sorted(variants[n_t + n_v :]),
    }


def usable_sentences(pairs: Sequence[tuple[str, str]], max_chars: int) -> list[str]:
    """The distinct English sides of ``(german, english)`` pairs that are short enough and
    speak as they are written (no digits or symbols whose spoken form differs from the
    text, none of the dictionary's placeholders ``sb``/``sth``), in first-seen order."""
    seen: dict[str, None] = {}
    for _, en in pairs:
        if len(en) <= max_chars and not _UNSPOKEN.search(en):
            if normalize_text(en):
                seen.setdefault(en, None)
    return list(seen)


def language_model_texts(
    pairs: Sequence[tuple[str, str]], train: Sequence[str], held_out: Sequence[str]
) -> list[str]:
    """The text of a language model for the transcripts: the training transcripts
    ``train``, then every other English side of ``pairs`` that speaks as written (of any
    length: those above ``max_chars`` are never spoken), as transcripts
    (:func:`normalize_text`), in first-seen order: none that equals or contains a
    ``held_out`` transcript as whole words (the valid and test sentences), so no held-out
    sentence is in the text, alone or inside a longer one."""
    held = [f" {h} " for h in sorted(set(held_out), key=len)]
    known = dict.fromkeys(train)
    extra: dict[str, None] = {}
    for _, en in pairs:
        text = "" if _UNSPOKEN.search(en) else normalize_text(en)
        if text and text not in known and text not in extra:
            words = f" {text} "  # whole words: a held-out " h " inside " text "
            if not any(h in words for h in held):
                extra[text] = None
    return [*known, *extra]


#: One utterance to make: sentence, voice, speed, pitch, split number, settings, index.
_Job = tuple[str, str, int, int, int, SpeechSettings, int]


def _speak(job: _Job) -> np.ndarray:
    sentence, voice, speed, pitch, split_id, s, i = job
    x = synthesize(sentence, voice, speed=speed, pitch=pitch)
    rng = np.random.default_rng([s.seed, split_id, i])
    peak = float(np.abs(x).max()) or 1.0
    gain = 10.0 ** (rng.uniform(*s.gain_db) / 20.0)
    x = x / peak * gain
    snr = rng.uniform(*s.snr_db)
    noise_rms = np.sqrt(np.mean(x**2)) / 10.0 ** (snr / 20.0)
    x = x + rng.standard_normal(len(x)).astype(np.float32) * noise_rms
    # quantized as the cache stores it, so a fresh corpus equals a cached one exactly
    return (np.round(np.clip(x, -1.0, 1.0) * 32767.0) / 32767.0).astype(np.float32)


def default_cache_dir() -> Path:
    """``$QKV_CACHE/asr``, else ``$XDG_CACHE_HOME/qkv/asr``, else ``~/.cache/qkv/asr``."""
    if os.environ.get("QKV_CACHE"):
        return Path(os.environ["QKV_CACHE"]) / "asr"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qkv" / "asr"


def _save_split(path: Path, utts: list[Utterance]) -> None:
    """One ``.npz`` per split: all samples as int16 end to end, offsets, and the metadata
    as JSON; written atomically (:func:`~qkv.data.cachefiles.write_atomically`)."""
    pcm = np.concatenate([np.round(u.audio * 32767.0).astype(np.int16) for u in utts] or [[]])
    offsets = np.cumsum([0] + [len(u.audio) for u in utts]).astype(np.int64)
    meta = [
        {"text": u.text, "sentence": u.sentence, "voice": u.voice, "speed": u.speed,
         "pitch": u.pitch}
        for u in utts
    ]  # fmt: skip
    write_atomically(
        path,
        lambda f: np.savez(
            f, pcm=pcm.astype(np.int16), offsets=offsets, meta=np.array(json.dumps(meta))
        ),
    )


def _load_split(path: Path) -> list[Utterance]:
    with np.load(path) as z:
        pcm, offsets, meta = z["pcm"], z["offsets"], json.loads(str(z["meta"]))
    audio = pcm.astype(np.float32) / 32767.0
    return [Utterance(audio[offsets[i] : offsets[i + 1]], **m) for i, m in enumerate(meta)]


def _cached_split(path: Path, n: int) -> list[Utterance] | None:
    """A split the cache holds whole (``n`` utterances), or None: missing, or unreadable
    (a damaged file is made again, never trusted)."""
    if not path.is_file():
        return None
    try:
        utts = _load_split(path)
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None
    return utts if len(utts) == n else None


#: The order the splits are made in: the small held-out ones first, so an interrupted
#: corpus keeps them and a rerun makes only the training split.
_MAKE_ORDER: tuple[str, ...] = ("test", "valid", "train")


def _speak_all(jobs: list[_Job], workers: int, progress: CountProgress) -> list[np.ndarray]:
    """The audio of every job, ``workers`` espeak-ng processes at a time. On an error or
    Ctrl-C the jobs not yet started are dropped (not waited for)."""
    pool = None
    try:
        pool = ThreadPoolExecutor(max_workers=workers)  # threads wait on processes
        out = []
        for x in pool.map(_speak, jobs):
            out.append(x)
            progress.advance()
        return out
    except RuntimeError as e:  # "can't start new thread"
        if is_exhaustion(e):
            fix = "make the corpus with fewer workers (--workers 1)"
            raise start_error(f"{workers} threads to run espeak-ng", e, fix) from None
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def speech_corpus(
    sentences: Sequence[str],
    settings: SpeechSettings | None = None,
    *,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, list[Utterance]]:
    """The ``train``/``valid``/``test`` utterances of ``sentences``: made once, then read
    from the cache.

    Sentences are shuffled with the seed and cut into test, valid and train (disjoint);
    each utterance gets an accent, a variant of its split (:func:`split_voices`), a speed
    and a pitch drawn with the seed, then a gain and noise (:class:`SpeechSettings`).

    Each split is its own cache file, written atomically when the split is done (test,
    then valid, then the large train split): a failure or Ctrl-C keeps the finished splits,
    and a rerun makes only the missing ones (the same samples as a corpus made in one go).

    Args:
        sentences: the texts to speak, as written.
        settings: the corpus settings (default :class:`SpeechSettings`).
        cache_dir: where corpora live (default :func:`default_cache_dir`); each one in
            ``cache_dir/<settings.key()>-<hash of the sentences>``.
        workers: the most ``espeak-ng`` processes run at once.
        progress: say on standard error what is being made: True, a bar per split when
            standard error is a terminal and otherwise a line per tenth of a split; False,
            nothing. (Reading a cached corpus says nothing.)

    Returns:
        Split name -> utterances.

    Raises:
        SpeechError: espeak-ng is missing or fails, or too few sentences.
        ValueError: ``workers < 1``.
    """
    s = settings or SpeechSettings()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    text_key = hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    where = root / f"{s.key()}-{text_key}"
    counts = {"test": s.n_test, "valid": s.n_valid, "train": s.n_train}
    out: dict[str, list[Utterance]] = {}
    for name in _MAKE_ORDER:
        cached = _cached_split(where / f"{name}.npz", counts[name])
        if cached is not None:
            out[name] = cached
    if len(out) == len(counts):
        return {name: out[name] for name in ("train", "valid", "test")}
    need = s.n_train + s.n_valid + s.n_test
    if len(sentences) < need:
        raise SpeechError(
            f"the speech corpus needs {need} distinct sentences (n_train + n_valid + n_test), "
            f"got {len(sentences)}"
        )
    require_espeak()
    jobs = _draw_jobs(sentences, s)  # every split's draws, so a missing one gets its own
    missing = [name for name in _MAKE_ORDER if name not in out]
    where.mkdir(parents=True, exist_ok=True)
    say = CountProgress("speech corpus:", 0, enabled=progress)
    kept = f"; the cached {' and '.join(out)} kept" if out else ""
    say.line(
        f"making {', '.join(f'{n} ({counts[n]:,})' for n in missing)} utterances with "
        f"espeak-ng, {workers} at a time, into {where}{kept}"
    )
    for name in missing:
        show = CountProgress(f"speech corpus: {name}", counts[name], unit="utterances",
                             enabled=progress)  # fmt: skip
        try:
            audio = _speak_all(jobs[name], workers, show)
        finally:
            seconds = show.close()
        out[name] = [
            Utterance(x, normalize_text(j[0]), j[0], j[1], j[2], j[3])
            for x, j in zip(audio, jobs[name])
        ]
        _save_split(where / f"{name}.npz", out[name])
        say.line(f"{name}: {counts[name]:,} utterances in {format_clock(seconds)}, cached")
    return {name: out[name] for name in ("train", "valid", "test")}


def _draw_jobs(sentences: Sequence[str], s: SpeechSettings) -> dict[str, list[_Job]]:
    """Each split's utterances to speak (sentence, voice, speed, pitch, ...), drawn with the
    seed in one fixed order whichever splits are then made."""
    order = list(sentences)
    rng = random.Random(s.seed)
    rng.shuffle(order)
    voices = split_voices(s)
    counts = {"test": s.n_test, "valid": s.n_valid, "train": s.n_train}
    jobs: dict[str, list[_Job]] = {}
    start = 0
    for split_id, name in enumerate(_MAKE_ORDER):
        chosen = order[start : start + counts[name]]
        start += counts[name]
        jobs[name] = []
        for i, sentence in enumerate(chosen):
            voice = f"{rng.choice(ACCENTS)}+{rng.choice(voices[name])}"
            jobs[name].append((sentence, voice, rng.randint(*s.speed), rng.randint(*s.pitch),
                               split_id, s, i))  # fmt: skip
    return jobs


__all__ = [
    "ACCENTS",
    "ALPHABET",
    "MAX_AUDIO_SECONDS",
    "SAMPLE_RATE",
    "VARIANTS",
    "AudioFileError",
    "SpeechError",
    "SpeechSettings",
    "Utterance",
    "default_cache_dir",
    "language_model_texts",
    "normalize_text",
    "read_wav",
    "require_espeak",
    "resample",
    "speech_corpus",
    "split_voices",
    "synthesize",
    "usable_sentences",
    "write_wav",
]
