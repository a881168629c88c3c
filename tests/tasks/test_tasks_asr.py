"""The asr task end to end on a handful of synthetic utterances: ``qkv train --task asr``,
``qkv eval`` (WER, CER, real-time factor; fused with the transcripts' n-gram), ``qkv
generate`` on a WAV file and with ``--say``, ``qkv viz`` (the alignment figure and report),
and the task's errors."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest

from qkv.cli import main
from qkv.data import ding
from qkv.data.audio import read_wav, synthesize, write_wav
from qkv.tasks import TaskError, TaskOptions, get_task, load_task
from qkv.tasks.speech import asr as asr_module
from qkv.tasks.speech._asr_decoding import transcript_lexicon
from qkv.training import check_checkpoint

pytestmark = [
    pytest.mark.skipif(
        shutil.which("espeak-ng") is None,
        reason="espeak-ng is not installed (apt-get install espeak-ng; .ci/run installs it)",
    ),
    pytest.mark.skipif(
        not ding.DING_PATH.is_file(), reason="trans-de-en is not installed (its sentences)"
    ),
]
# --lm-weight 0: the n-gram of ~14,500 sentences takes seconds to build in every command
# that decodes; _check_fused_lm decodes with it
TINY = ["--n-train", "12", "--n-valid", "3", "--n-test", "3", "--model", "d_model=32",
        "--model", "n_heads=2", "--model", "d_ff=48", "--model", "n_encoder_layers=1",
        "--model", "n_decoder_layers=1", "--lm-weight", "0"]  # fmt: skip


@pytest.fixture
def run_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QKV_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    argv = ["train", "--task", "asr", "--steps", "3", "--batch-size", "4", "--eval-every", "3",
            "--out", str(out), "--no-progress", *TINY]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    return out


def test_train_eval_generate_viz_and_errors(run_dir, tmp_path, capsys, monkeypatch):
    assert main(["eval", "--checkpoint", str(run_dir), "--split", "test", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {"wer", "cer", "loss", "audio_seconds", "decode_seconds", "rtf"} <= set(scores)
    assert {"ctc_wer", "ctc_cer", "ctc_loss"} <= set(scores)  # the default CTC head
    assert scores["audio_seconds"] > 1.0
    assert scores["rtf"] == pytest.approx(scores["decode_seconds"] / scores["audio_seconds"])

    wav = write_wav(tmp_path / "hello.wav", synthesize("hello world", "en-gb+f2"))
    assert main(["generate", "--checkpoint", str(run_dir), str(wav), "test:0"]) == 0
    lines = capsys.readouterr().out.split("\n")  # two transcripts (maybe <empty>)
    assert len(lines) == 3 and lines[0].startswith(f"{wav}\t") and lines[1].startswith("test:0\t")
    assert main(["generate", "--checkpoint", str(run_dir), "--say", "good morning",
                 "--say", "good night", "--voice", "en-us+m3"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 3 and lines[0].startswith("good morning\t")

    out = tmp_path / "viz" / "report.html"
    out.parent.mkdir()  # viz refuses an --out in a missing directory
    argv = ["viz", "--checkpoint", str(run_dir), "valid:1", "--out", str(out),
            "--png", str(tmp_path / "png"), "--target", "a b"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "png" / "alignment.png").stat().st_size > 1000
    assert (tmp_path / "png" / "cross_grid.png").is_file()
    page = out.read_text(encoding="utf-8")
    assert "alignment: cross-attention" in page and "data:image/png;base64," in page

    _check_fused_lm(run_dir, capsys, monkeypatch)

    # errors are one line and exit 2
    argv = ["train", "--task", "asr", "--ctc-weight", "1.5", "--steps", "1", *TINY]
    assert main(argv) == 2
    assert "task 'asr': ctc_weight must be in [0, 1), got 1.5" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(run_dir), str(tmp_path / "none.wav")]) == 2
    assert "is neither a sound file nor SPLIT:N" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", str(run_dir), "test:99"]) == 2
    assert "split 'test' has 3 utterances" in capsys.readouterr().err


def _check_fused_lm(run_dir, capsys, monkeypatch):  # type: ignore[no-untyped-def]
    """Shallow fusion: the checkpoint keeps the n-gram's text, the 12 training transcripts
    and Ding's other sentences, no held-out one; a task loaded from it builds the n-gram
    without the corpus, and that n-gram knows them; ``qkv eval --lm-weight`` decodes with
    it."""
    capsys.readouterr()  # what the commands before printed
    ck = Path(check_checkpoint(run_dir))
    texts = json.loads((ck / "transcripts.json").read_text(encoding="utf-8"))
    task = load_task(ck)
    train = [u.text for u in task.examples("train")]
    held = [f" {u.text} " for split in ("valid", "test") for u in task.examples(split)]
    assert texts[:12] == train and len(texts) > 10_000
    assert all(isinstance(t, str) and t and not any(h in f" {t} " for h in held) for t in texts)
    task = load_task(ck)

    def no_corpus(split):  # type: ignore[no-untyped-def]
        raise AssertionError(f"the corpus was read ({split})")

    monkeypatch.setattr(task, "examples", no_corpus)
    lm = task.language_model()
    tok = task.tokenizer
    for text in texts[:3]:  # a training sentence beats its own letters reversed
        assert lm.score(tok.encode(text)) > lm.score(tok.encode(text[::-1])) + 5.0
    penalties = []

    def spy(words, tokenizer, vocab, penalty):  # type: ignore[no-untyped-def]
        penalties.append(penalty)
        return transcript_lexicon(words, tokenizer, vocab, penalty)

    monkeypatch.setattr(asr_module, "transcript_lexicon", spy)
    argv = ["eval", "--checkpoint", str(run_dir), "--split", "test", "--json", "--beam-size",
            "2", "--lm-weight", "0.5"]  # fmt: skip
    assert main(argv) == 0
    fused = json.loads(capsys.readouterr().out)
    assert fused["wer"] >= 0 and fused["decode_seconds"] > 0 and penalties == []  # run's: 0
    assert main([*argv, "--oov-penalty", "3"]) == 0  # the flag decodes with the lexicon
    assert json.loads(capsys.readouterr().out)["wer"] >= 0 and penalties == [3.0]
    beams = []
    evaluate = asr_module.ASRTask.evaluate

    @functools.wraps(evaluate)  # its signature stays evaluate's (the CLI inspects it)
    def spy_beam(self, *args, **kw):  # type: ignore[no-untyped-def]
        beams.append(kw["beam_size"])
        return evaluate(self, *args, **kw)

    monkeypatch.setattr(asr_module.ASRTask, "evaluate", spy_beam)
    assert main(["eval", "--checkpoint", str(run_dir), "--split", "test", "--lm-weight", "0"]) == 0
    assert beams == [8]  # without --beam-size: the task's default_beam, not 1
    gen = ["generate", "--checkpoint", str(run_dir), "test:0", "--beam-size", "2"]
    assert main([*gen, "--lm-weight", "0.5", "--oov-penalty", "2"]) == 0  # generate's too
    assert penalties == [3.0, 2.0] and "test:0\t" in capsys.readouterr().out
    saved = (ck / "transcripts.json").read_text(encoding="utf-8")
    (ck / "transcripts.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TaskError, match="transcripts.json: not a readable transcript list"):
        load_task(ck)
    (ck / "transcripts.json").write_text(saved, encoding="utf-8")


def test_task_features_and_options(tmp_path, monkeypatch):
    monkeypatch.setenv("QKV_CACHE", str(tmp_path / "cache"))
    task = get_task("asr", TaskOptions(n_train=6, n_valid=2, n_test=2, extra={"augment": False}))
    utts = task.examples("train")
    batch = task.collate(utts[:3])
    assert batch["src"].shape[0] == 3 and batch["src"].shape[2] == 80
    frames = [len(u.audio) // 160 for u in utts[:3]]
    assert batch["src_padding_mask"].sum(-1).tolist() == frames
    assert task.augment(batch) is batch  # augment=False
    assert task.tokenizer.decode(batch["tgt_out"][0, : len(utts[0].text)].tolist()) == utts[0].text
    signal = read_wav(write_wav(tmp_path / "x.wav", utts[0].audio))
    assert len(signal) == len(utts[0].audio)
    with pytest.raises(TaskError, match=r"task 'asr' takes no --bogus"):
        get_task("asr", TaskOptions(extra={"bogus": 1}))
