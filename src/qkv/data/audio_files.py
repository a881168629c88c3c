"""Audio files: the one reader of audio input (:func:`read_wav`), a writer and a resampler.

:func:`read_wav` reads a file's header first and refuses, before reading any sample, a file
that is not a regular file, a sample rate or channel count a real recording cannot have, and
a length outside the caller's limits; then samples that are not finite or absurdly loud.
Every refusal is an :class:`AudioFileError` (a ``ValueError``: the CLI prints it as one
``qkv: error:`` line) naming the file and the limit.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import wave
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

#: The sample rate every model input uses (Whisper's).
SAMPLE_RATE = 16000


class SpeechError(ValueError):
    """Audio that cannot be read or made (a missing program, a damaged file)."""


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono signal by polyphase filtering (``scipy.signal.resample_poly``, a
    Kaiser-windowed low-pass at the lower Nyquist frequency).

    Args:
        audio: ``(n,)`` float samples.
        rate: its sample rate in Hz.
        target: the wanted rate.

    Returns:
        ``(round(n * target / rate),)`` float32 samples.
    """
    if rate == target:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly  # an optional dependency (the speech extra)

    g = gcd(rate, target)
    return resample_poly(audio, target // g, rate // g).astype(np.float32)


def decode_wav_bytes(data: bytes, what: str) -> tuple[np.ndarray, int]:
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            # espeak-ng's streamed header has no length: read to the end
            raw = w.readframes(2**31 - 1)
    except (wave.Error, EOFError) as e:
        raise SpeechError(f"{what} is not a PCM WAV file: {e}") from e
    if width not in (1, 2, 4):
        raise SpeechError(f"{what}: {8 * width}-bit samples are not supported (8, 16 or 32)")
    return _pcm_to_float(raw, width, channels).mean(axis=1), rate  # mono: the channels' mean


#: Sample rates a file may declare, in Hz (a rate of 0 or 2**32 - 1 is a damaged header).
MIN_RATE, MAX_RATE = 1_000, 384_000
#: The most channels a file may declare.
MAX_CHANNELS = 64
#: The longest input :func:`read_wav` reads by default, in seconds (10 minutes: 38 MB of
#: float32 at 16 kHz); callers pass their own (speech recognition: 30 s).
MAX_AUDIO_SECONDS = 600.0
#: The shortest input, in seconds: one 25 ms analysis window (400 samples at 16 kHz).
MIN_AUDIO_SECONDS = 0.025
#: The largest sample magnitude accepted (full scale is 1; a float file may exceed it a
#: little, 1e30 is a damaged or hostile file whose spectrum overflows float32).
MAX_AMPLITUDE = 16.0


class AudioFileError(SpeechError):
    """An audio file that is refused or cannot be read; the message names the file and,
    where there is one, the limit it breaks."""


@dataclass(frozen=True)
class AudioHeader:
    """What an audio file's header declares, read before any sample.

    Attributes:
        rate: samples per second per channel.
        channels: interleaved channels.
        frames: samples per channel (bounded by the file's size for a streamed header).
    """

    rate: int
    channels: int
    frames: int


def _check_audio_file(path: Path) -> int:
    """The size of ``path`` in bytes, after checking that it is an existing regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioFileError(f"audio file {path} does not exist") from None
    except OSError as e:
        raise AudioFileError(f"audio file {path} cannot be read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioFileError(f"{path} is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        raise AudioFileError(f"{path} is not a regular file (a device, FIFO or socket)")
    return st.st_size


def _wav_header(path: Path, size: int) -> tuple[AudioHeader, int] | None:
    """The header of a PCM WAV file and its sample width in bytes; None for a WAV format
    the standard library does not decode (IEEE float, ...), which soundfile may read."""
    try:
        with wave.open(str(path)) as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.getnframes()
    except wave.Error as e:
        if str(e).startswith("unknown format"):
            return None
        raise AudioFileError(f"audio file {path} is not a PCM WAV file: {e}") from None
    except (EOFError, struct.error, OSError, ValueError, RuntimeError) as e:  # wave's seek
        raise AudioFileError(
            f"audio file {path} is not a PCM WAV file: {e or 'cut short'}"
        ) from None
    if width not in (1, 2, 4):
        raise AudioFileError(
            f"audio file {path}: {8 * width}-bit samples are not supported (8, 16 or 32)"
        )
    # a streamed header declares no (or any) length: the file's size bounds the samples
    frames = min(frames, size // max(1, channels * width))
    return AudioHeader(rate, channels, frames), width


def _check_header(h: AudioHeader, path: Path, max_seconds: float, min_seconds: float) -> None:
    if not MIN_RATE <= h.rate <= MAX_RATE:
        raise AudioFileError(
            f"audio file {path} declares a sample rate of {h.rate} Hz; supported rates are "
            f"{MIN_RATE}..{MAX_RATE} Hz"
        )
    if not 1 <= h.channels <= MAX_CHANNELS:
        raise AudioFileError(
            f"audio file {path} declares {h.channels} channels; the limit is 1..{MAX_CHANNELS}"
        )
    seconds = h.frames / h.rate
    if h.frames == 0 or seconds < min_seconds:
        raise AudioFileError(
            f"audio file {path} holds {h.frames} samples ({seconds:.4f} s); the shortest "
            f"input is {min_seconds} s"
        )
    if seconds > max_seconds:
        raise AudioFileError(
            f"audio file {path} is {seconds:.1f} s long; the limit is {max_seconds:g} s"
        )


def _pcm_to_float(raw: bytes, width: int, channels: int) -> np.ndarray:
    dtypes = {1: np.uint8, 2: np.int16, 4: np.int32}
    x = np.frombuffer(raw[: len(raw) // (width * channels) * width * channels], dtypes[width])
    x = x.astype(np.float32)
    x = (x - 128.0) / 128.0 if width == 1 else x / float(2 ** (8 * width - 1))
    return x.reshape(-1, channels)  # (n, channels)


def _read_soundfile(path: Path, max_seconds: float, min_seconds: float) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError as e:
        raise AudioFileError(
            f"{path}: only PCM .wav files can be read without soundfile (`pip install soundfile`)"
        ) from e
    # libsndfile reports a damaged file as LibsndfileError (a RuntimeError), and an absurd
    # header field as TypeError or ValueError
    unreadable = (RuntimeError, TypeError, ValueError)
    try:
        info = soundfile.info(str(path))  # the header only
        h = AudioHeader(int(info.samplerate), int(info.channels), max(0, int(info.frames)))
    except unreadable as e:
        raise AudioFileError(f"audio file {path} cannot be read: {e}") from None
    _check_header(h, path, max_seconds, min_seconds)
    try:
        data, _ = soundfile.read(str(path), frames=h.frames, dtype="float32", always_2d=True)
    except unreadable as e:
        raise AudioFileError(f"audio file {path} cannot be read: {e}") from None
    return data, h.rate


def read_wav(
    path: str | Path,
    rate: int = SAMPLE_RATE,
    *,
    max_seconds: float = MAX_AUDIO_SECONDS,
    min_seconds: float = MIN_AUDIO_SECONDS,
) -> np.ndarray:
    """An audio file as mono float32 samples at ``rate`` Hz: the one reader of audio input.

    Reads PCM WAV (8, 16 or 32-bit) with the standard library; other formats (float WAV,
    FLAC, OGG) through ``soundfile`` when it is installed. Before any sample is read, the
    file must be a regular file and its header must declare a rate in
    :data:`MIN_RATE`..:data:`MAX_RATE`, 1..:data:`MAX_CHANNELS` channels and a length
    between ``min_seconds`` and ``max_seconds`` (a 2-hour file is refused from its header,
    not read); only the declared samples are read. The samples must then be finite and at
    most :data:`MAX_AMPLITUDE` in magnitude. Channels are averaged; other sample rates are
    resampled (:func:`resample`).

    Args:
        path: the file.
        rate: the wanted sample rate.
        max_seconds: the longest input accepted.
        min_seconds: the shortest input accepted.

    Raises:
        AudioFileError: (a ``SpeechError``, a ``ValueError``) a missing, unreadable or
            refused file, named, with the limit it breaks.
    """
    path = Path(path)
    size = _check_audio_file(path)
    header = _wav_header(path, size) if path.suffix.lower() == ".wav" else None
    if header is not None:
        h, width = header
        _check_header(h, path, max_seconds, min_seconds)
        try:
            with wave.open(str(path)) as w:
                raw = w.readframes(h.frames)
        except (wave.Error, EOFError, struct.error, OSError, ValueError, RuntimeError) as e:
            raise AudioFileError(f"audio file {path} is not a PCM WAV file: {e}") from None
        data, sr = _pcm_to_float(raw, width, h.channels), h.rate
    else:
        data, sr = _read_soundfile(path, max_seconds, min_seconds)
    if len(data) == 0:
        raise AudioFileError(f"audio file {path} holds no samples")
    finite = np.isfinite(data)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=1)))
        raise AudioFileError(
            f"audio file {path} holds non-finite samples (NaN or Inf), the first at sample {first}"
        )
    peak = float(np.abs(data).max())
    if peak > MAX_AMPLITUDE:
        raise AudioFileError(
            f"audio file {path} has samples of magnitude {peak:.3g}; the limit is "
            f"{MAX_AMPLITUDE:g} (full scale is 1)"
        )
    return resample(data.mean(axis=1), sr, rate)  # mono: the mean of the channels


def write_wav(path: str | Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write mono float samples in ``[-1, 1]`` as a 16-bit PCM WAV file."""
    path = Path(path)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


__all__ = [
    "MAX_AMPLITUDE",
    "MAX_AUDIO_SECONDS",
    "MAX_CHANNELS",
    "MAX_RATE",
    "MIN_AUDIO_SECONDS",
    "MIN_RATE",
    "SAMPLE_RATE",
    "AudioFileError",
    "AudioHeader",
    "SpeechError",
    "decode_wav_bytes",
    "read_wav",
    "resample",
    "write_wav",
]
