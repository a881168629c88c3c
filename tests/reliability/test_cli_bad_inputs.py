"""Every user error on the command line is one line, ``qkv: error: ...``, exit 2, never a
traceback: a table of bad flags, files and checkpoints, each run through ``qkv.cli.main``."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from qkv.cli import main

TINY_RUN = [
    "--task", "copy", "--n-train", "64", "--max-len", "4", "--steps", "1", "--batch-size", "8",
    "--model", "d_model=16", "--model", "n_heads=2", "--model", "d_ff=32",
    "--model", "n_encoder_layers=1", "--model", "n_decoder_layers=1",
    "--eval-limit", "4", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained tiny run, damaged copies of it, a pickle posing as an HF model, a file."""
    base = tmp_path_factory.mktemp("cli")
    run = base / "run"
    assert main(["train", *TINY_RUN, "--out", str(run)]) == 0
    ckpt = run / "checkpoints" / (run / "latest").read_text().strip()
    neg = base / "negative-step"
    shutil.copytree(run, neg)
    state = neg / "checkpoints" / ckpt.name / "trainer_state.json"
    st = json.loads(state.read_text())
    st["step"] = -3
    state.write_text(json.dumps(st))
    bad_task = base / "bad-task"
    shutil.copytree(ckpt, bad_task)
    tj = json.loads((bad_task / "task.json").read_text())
    tj["options"]["max_len"] = -1
    (bad_task / "task.json").write_text(json.dumps(tj))
    hf = base / "hf-pickle"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10}))

    class Evil:
        def __reduce__(self):  # runs `print` on unpickling, were pickles ever loaded
            return (print, ("pwned",))

    (hf / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Evil()}))
    a_file = base / "a-file.txt"
    a_file.write_text("not a directory\n")
    return {"run": run, "ckpt": ckpt, "neg": neg, "bad_task": bad_task, "hf": hf,
            "file": a_file, "base": base}  # fmt: skip


def _cases(f: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    run, out = str(f["run"]), str(f["base"] / "new")
    return [
        # (name, argv, a fragment the one line must contain)
        ("--device bogus", ["train", "--device", "bogus", "--out", out], "--device"),
        ("--device cuda on a CPU build", ["train", "--device", "cuda", "--out", out], "CUDA"),
        (
            "--device bogus in generate",
            ["generate", "--checkpoint", run, "--device", "nope", "a"],
            "--device",
        ),
        ("--threads -1", ["train", "--threads", "-1", "--out", out], "--threads"),
        ("--steps 0", ["train", "--steps", "0", "--out", out], "--steps"),
        ("--steps x", ["train", "--steps", "x", "--out", out], "--steps"),
        ("--out names a file", ["train", "--out", str(f["file"])], "is a file"),
        (
            "viz --out names a directory",
            ["viz", "--checkpoint", run, "a", "--out", str(f["base"])],
            "is a directory",
        ),
        (
            "--temperature nan",
            ["generate", "--checkpoint", run, "--temperature", "nan", "a"],
            "--temperature",
        ),
        ("--top-k 2.5", ["generate", "--checkpoint", run, "--top-k", "2.5", "a"], "--top-k"),
        (
            "--length-penalty nan",
            ["generate", "--checkpoint", run, "--length-penalty", "nan", "a"],
            "--length-penalty",
        ),
        (
            "--beam-size 0 in generate",
            ["generate", "--checkpoint", run, "--beam-size", "0", "a"],
            "--beam-size",
        ),
        (
            "--max-new-tokens past the model's positions",
            ["generate", "--checkpoint", run, "--max-new-tokens", "1000", "a"],
            "max_len",
        ),
        (
            "--max-new-tokens x beam that no memory holds",
            [
                "generate",
                "--checkpoint",
                run,
                "--strategy",
                "beam",
                "--beam-size",
                "100000000",
                "a",
            ],
            "does not fit",
        ),
        (
            "--model vocab_size=3 with larger ids",
            ["train", *TINY_RUN, "--model", "vocab_size=3", "--out", out],
            "vocab_size",
        ),
        (
            "--model unknown_field=1",
            ["train", *TINY_RUN, "--model", "bogus=1", "--out", out],
            "bogus",
        ),
        (
            "--model without =",
            ["train", *TINY_RUN, "--model", "d_model", "--out", out],
            "KEY=VALUE",
        ),
        (
            "--model d_ff=1e10",
            ["train", *TINY_RUN, "--model", "d_ff=1e10", "--out", out],
            "d_ff",
        ),
        (
            "--model n_layers=10**400",
            ["train", "--task", "lm", "--model", "n_layers=" + "9" * 400, "--out", out],
            "n_layers",
        ),
        ("--hf holding a pickle", ["generate", "--hf", str(f["hf"]), "a"], "pytorch_model.bin"),
        ("--lr inf", ["train", "--lr", "inf", "--out", out], "--lr"),
        ("--clip-norm nan", ["train", "--clip-norm", "nan", "--out", out], "--clip-norm"),
        ("--weight-decay -1", ["train", "--weight-decay", "-1", "--out", out], "--weight-decay"),
        ("--eval-limit -1", ["train", "--eval-limit", "-1", "--out", out], "--eval-limit"),
        (
            "--label-smoothing 1",
            ["train", "--label-smoothing", "1", "--out", out],
            "--label-smoothing",
        ),
        ("--betas 0.9", ["train", "--betas", "0.9", "--out", out], "--betas"),
        (
            "--grad-accum that does not divide",
            ["train", "--grad-accum", "3", "--out", out],
            "--grad-accum",
        ),
        (
            "--batch-size larger than the data",
            ["train", *TINY_RUN, "--batch-size", "4096", "--out", out],
            "--batch-size",
        ),
        ("eval --beam-size 0", ["eval", "--checkpoint", run, "--beam-size", "0"], "--beam-size"),
        ("eval --limit -1", ["eval", "--checkpoint", run, "--limit", "-1"], "--limit"),
        (
            "--data to a task that makes its own",
            ["train", "--task", "copy", "--data", "x.tsv", "--out", out],
            "takes no --data",
        ),
        (
            "--data missing",
            ["train", "--task", "lm", "--data", str(f["base"] / "none.txt"), "--out", out],
            "none.txt",
        ),
        (
            "--n-train 1e9",
            ["train", "--task", "copy", "--n-train", "1e9", "--out", out],
            "n_train",
        ),
        (
            "--vocab-size 1e9 for BPE",
            [
                "train",
                "--task",
                "synthetic",
                "--tokenizer",
                "bpe",
                "--vocab-size",
                "1e9",
                "--out",
                out,
            ],
            "vocab_size",
        ),
        ("--task nope", ["train", "--task", "nope", "--out", out], "unknown task"),
        (
            "--preset of another family",
            ["train", "--task", "copy", "--preset", "gpt2-tiny", "--out", out],
            "preset",
        ),
        ("--resume without a run", ["train", "--resume", "--out", out], "does not exist"),
        (
            "a second run into the same --out",
            ["train", *TINY_RUN, "--out", run],
            "already holds a run",
        ),
        (
            "negative step in trainer state",
            ["train", "--resume", "--out", str(f["neg"]), "--steps", "3"],
            "step",
        ),
        (
            "max_len -1 in task.json",
            ["generate", "--checkpoint", str(f["bad_task"]), "a"],
            "max_len",
        ),
        (
            "generate on a missing checkpoint",
            ["generate", "--checkpoint", out, "a"],
            "does not exist",
        ),
        (
            "--init-from and --init-from-hf",
            ["train", "--init-from", run, "--init-from-hf", str(f["hf"]), "--out", out],
            "not both",
        ),
        ("unknown flag", ["train", "--stepz", "3"], "--stepz"),
        ("info of an unknown preset", ["info", "gpt5"], "gpt5"),
    ]


def test_every_bad_input_is_one_line_exit_2(files, capsys, monkeypatch):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the worker's threads
    failures = []
    cases = _cases(files)
    for name, argv, fragment in cases:
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors
            code = e.code
        captured = capsys.readouterr()
        err = captured.err.strip()
        problems = []
        if code != 2:
            problems.append(f"exit {code}")
        if not err.startswith("qkv: error:") or "\n" in err:
            problems.append(f"stderr is not one 'qkv: error:' line: {err[-400:]!r}")
        if fragment not in err:
            problems.append(f"{fragment!r} not in {err!r}")
        if "Traceback" in err or "pwned" in captured.out:
            problems.append("a traceback or an unpickled payload")
        if problems:
            failures.append(f"{name}: " + "; ".join(problems))
    assert not failures, "\n".join(failures)
    assert not (files["base"] / "new").exists()  # nothing was written for a refused run
    assert len(cases) >= 40
