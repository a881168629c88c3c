"""Audio inputs: the ``audio`` surface.

Every audio input (``asr generate``, ``asr viz``) is read by
:func:`qkv.data.audio_files.read_wav`. A table of bad files is refused with an
``AudioFileError`` (a ValueError, exit 2 with one ``qkv: error:`` line in the CLI) naming the
file and the limit, from the header alone where the header says enough (a 2-hour file is
never read); a Hypothesis fuzz of WAV headers and damaged files gives samples or that error,
never another exception.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkv.cli import main
from qkv.data import ding
from qkv.data.audio import AudioFileError, read_wav, write_wav
from qkv.data.audio_files import MAX_AMPLITUDE, MAX_RATE, MIN_AUDIO_SECONDS
from qkv.tasks import get_task


def wav_bytes(
    rate: int = 16000,
    channels: int = 1,
    width: int = 2,
    data: bytes = b"",
    declared: int | None = None,
    fmt: int = 1,
) -> bytes:
    """A canonical 44-byte-header WAV; ``declared`` is the data size the header states."""
    size = len(data) if declared is None else declared
    block = channels * width
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", (36 + size) & 0xFFFFFFFF, b"WAVE", b"fmt ", 16, fmt, channels,
        rate & 0xFFFFFFFF, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, 8 * width,
        b"data", size & 0xFFFFFFFF,
    )  # fmt: skip
    return header + data


def _float_wav(path: Path, x: np.ndarray, rate: int = 16000) -> Path:
    soundfile.write(str(path), x.astype(np.float32), rate, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audio")
    one_second = np.zeros(16000, dtype=np.int16).tobytes()
    raw = {
        "empty.wav": wav_bytes(),
        "one-sample.wav": wav_bytes(data=b"\x00\x10"),
        "rate-0.wav": wav_bytes(rate=0, data=one_second),
        "rate-2**32-1.wav": wav_bytes(rate=2**32 - 1, data=one_second),
        "rate-500.wav": wav_bytes(rate=500, data=one_second),
        "rate-over-max.wav": wav_bytes(rate=MAX_RATE + 1, data=one_second),
        "24-bit.wav": wav_bytes(width=3, data=b"\x00" * 300),
        "0-channels.wav": wav_bytes(channels=0, data=one_second),
        "text.wav": b"this is not a wav file\n",
        "zero-bytes.wav": b"",
    }
    out = {}
    for name, data in raw.items():
        (d / name).write_bytes(data)
        out[name] = d / name
    # 2 hours of 16 kHz silence, declared in the header: a sparse file, never read
    two_h = d / "two-hours.wav"
    n = 2 * 3600 * 16000 * 2
    two_h.write_bytes(wav_bytes(declared=n))
    os.truncate(two_h, 44 + n)
    out["two-hours.wav"] = two_h
    nan = np.zeros(16000)
    nan[1234] = np.nan
    out["nan.wav"] = _float_wav(d / "nan.wav", nan)
    inf = np.zeros(16000)
    inf[7] = np.inf
    out["inf.wav"] = _float_wav(d / "inf.wav", inf)
    loud = np.zeros(16000)
    loud[3] = 1e30
    out["amplitude-1e30.wav"] = _float_wav(d / "amplitude-1e30.wav", loud)
    (d / "a-directory").mkdir()
    out["a-directory"] = d / "a-directory"
    out["/dev/zero"] = Path("/dev/zero")
    os.mkfifo(d / "fifo.wav")
    out["fifo.wav"] = d / "fifo.wav"
    out["missing.wav"] = d / "missing.wav"
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    out["good.wav"] = write_wav(d / "good.wav", tone)
    out["good-float.wav"] = _float_wav(d / "good-float.wav", tone)
    # a header that declares more samples than the file holds: the ones there are read
    (d / "cut.wav").write_bytes(wav_bytes(data=np.ones(8000, "<i2").tobytes(), declared=10**6))
    out["cut.wav"] = d / "cut.wav"
    return out


#: (file, fragments the one error line must hold)
CASES = [
    ("empty.wav", ["holds 0 samples", f"the shortest input is {MIN_AUDIO_SECONDS} s"]),
    ("one-sample.wav", ["holds 1 samples", f"the shortest input is {MIN_AUDIO_SECONDS} s"]),
    ("rate-0.wav", ["sample rate of 0 Hz", "supported rates are 1000..384000 Hz"]),
    ("rate-2**32-1.wav", ["sample rate of 4294967295 Hz", "supported rates"]),
    ("rate-500.wav", ["sample rate of 500 Hz", "supported rates"]),
    ("rate-over-max.wav", [f"sample rate of {MAX_RATE + 1} Hz"]),
    ("24-bit.wav", ["24-bit samples are not supported"]),
    ("0-channels.wav", ["not a PCM WAV file"]),
    ("text.wav", ["not a PCM WAV file"]),
    ("zero-bytes.wav", ["not a PCM WAV file"]),
    ("two-hours.wav", ["7200.0 s long", "the limit is 600 s"]),
    ("nan.wav", ["non-finite samples", "sample 1234"]),
    ("inf.wav", ["non-finite samples", "sample 7"]),
    ("amplitude-1e30.wav", ["magnitude 1e+30", f"the limit is {MAX_AMPLITUDE:g}"]),
    ("a-directory", ["is a directory"]),
    ("/dev/zero", ["not a regular file"]),
    ("fifo.wav", ["not a regular file"]),
    ("missing.wav", ["does not exist"]),
]


@pytest.mark.parametrize(("name", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_read_wav_refuses_with_the_file_and_limit_named(files, name, fragments):
    t0 = time.perf_counter()
    with pytest.raises(AudioFileError) as e:
        read_wav(files[name])
    assert time.perf_counter() - t0 < 5  # refused from the header: nothing large is read
    msg = str(e.value)
    assert str(files[name]) in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_read_wav_reads_good_and_cut_files(files):
    x = read_wav(files["good.wav"])
    assert x.dtype == np.float32 and x.shape == (8000,) and 0.49 < np.abs(x).max() <= 0.5
    y = read_wav(files["good-float.wav"])
    assert np.abs(x - y).max() < 1e-4
    cut = read_wav(files["cut.wav"])  # the header lies about the length: read what is there
    assert cut.shape == (8000,) and np.allclose(cut, 1 / 32768)
    with pytest.raises(AudioFileError, match="0.5 s long; the limit is 0.25 s"):
        read_wav(files["good.wav"], max_seconds=0.25)


# -- the ASR task: the same reader, with its 30 s limit -------------------------------------
@pytest.fixture(scope="module")
def asr_task():
    return get_task("asr")


@pytest.mark.parametrize(
    ("name", "fragments"),
    [*(c for c in CASES if c[0] != "fifo.wav"), ("two-hours.wav", ["the limit is 30 s"])],
    ids=[*(c[0] for c in CASES if c[0] != "fifo.wav"), "two-hours over asr's 30 s"],
)
def test_asr_read_input_refuses_bad_audio(files, asr_task, name, fragments):
    with pytest.raises(ValueError) as e:
        asr_task.read_input(str(files[name]))
    msg = str(e.value)
    assert str(files[name]) in msg
    if name == "missing.wav":
        assert "neither a sound file nor SPLIT:N" in msg
        return
    for fragment in fragments:
        if "the limit is 600 s" not in fragment:  # asr states its own limit (30 s)
            assert fragment in msg, (fragment, msg)


def test_asr_read_input_refuses_31_seconds_from_the_header(tmp_path, asr_task):
    path = tmp_path / "long.wav"
    path.write_bytes(wav_bytes(data=np.zeros(31 * 16000, "<i2").tobytes()))
    with pytest.raises(AudioFileError, match="31.0 s long; the limit is 30 s"):
        asr_task.read_input(str(path))


# -- the CLI: asr generate and viz ----------------------------------------------------------
needs_speech = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or not ding.DING_PATH.is_file(),
    reason="an asr checkpoint needs espeak-ng and trans-de-en",
)
TINY_ASR = ["train", "--task", "asr", "--steps", "1", "--batch-size", "4", "--n-train", "8",
            "--n-valid", "2", "--n-test", "2", "--eval-limit", "2", "--no-progress",
            "--model", "d_model=16", "--model", "n_heads=2", "--model", "d_ff=32",
            "--model", "n_encoder_layers=1", "--model", "n_decoder_layers=1",
            "--lm-weight", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def asr_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("asr")
    mp = pytest.MonkeyPatch()
    mp.setenv("QKV_CACHE", str(base / "cache"))
    try:
        assert main([*TINY_ASR, "--out", str(base / "run")]) == 0
    finally:
        mp.undo()
    return base / "run"


@needs_speech
@pytest.mark.parametrize(
    "name",
    [
        "empty.wav",
        "rate-0.wav",
        "rate-2**32-1.wav",
        "nan.wav",
        "amplitude-1e30.wav",
        "two-hours.wav",
        "a-directory",
        "/dev/zero",
    ],
)
@pytest.mark.parametrize("command", ["generate", "viz"])
def test_cli_asr_generate_and_viz_exit_2_on_bad_audio(
    files, asr_run, capsys, tmp_path, command, name
):
    capsys.readouterr()
    argv = [command, "--checkpoint", str(asr_run), str(files[name])]
    if command == "viz":
        argv += ["--out", str(tmp_path / "r.html")]
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("qkv: error: "), err
    assert str(files[name]) in lines[0]


# -- fuzz: any header, any damage: samples or one AudioFileError ---------------------------
@st.composite
def _wav(draw: st.DrawFn) -> bytes:
    rate = draw(st.sampled_from([0, 1, 999, 8000, 16000, 22050, 44100, 384000, 2**31, 2**32 - 1]))
    channels = draw(st.integers(0, 9))
    width = draw(st.sampled_from([0, 1, 2, 3, 4, 8]))
    n = draw(st.integers(0, 2000))
    data = draw(st.binary(min_size=0, max_size=64)) * (n // 64 + 1)
    declared = draw(st.one_of(st.none(), st.integers(0, 2**32 - 1)))
    fmt = draw(st.sampled_from([1, 1, 3, 0xFFFE, 0]))
    out = bytearray(wav_bytes(rate, channels, width, data[:n], declared, fmt))
    for pos, value in draw(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)),
                                    max_size=3)):  # fmt: skip
        if pos < len(out):
            out[pos] = value
    return bytes(out)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(_wav())
def test_fuzz_wav_files_give_samples_or_one_error(tmp_path, data):
    path = tmp_path / "fuzz.wav"
    path.write_bytes(data)
    try:
        x = read_wav(path)
    except AudioFileError as e:
        assert str(path) in str(e)
        return
    assert x.dtype == np.float32 and x.ndim == 1 and np.isfinite(x).all()
