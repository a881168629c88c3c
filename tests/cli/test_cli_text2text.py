"""``qkv train|eval|generate`` on the text2text task, end to end on a tiny made-up mixture."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _text2text import write_mixture


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "qkv", *args], capture_output=True, text=True, env=env
    )


# 36 s on 2 cores: the CLI path of every task is covered quickly by the other tasks' tests
@pytest.mark.slow
def test_cli_train_eval_generate(tmp_path) -> None:
    data, out = write_mixture(tmp_path), tmp_path / "run"
    common = ["--data", str(data), "--vocab-size", "300", "--max-len", "24"]
    tiny = ["--preset", "t5-tiny", "--steps", "4", "--batch-size", "8", "--eval-limit", "6"]
    r = _run_cli(["train", "--task", "text2text", *common, *tiny, "--out", str(out)])
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["step"] == 4 and "classify_accuracy" in summary["valid"]
    assert (
        "classify: This " in r.stderr and "translate German" in r.stderr
    )  # samples of each task after evaluation
    r = _run_cli(["eval", "--checkpoint", str(out), "--split", "test", "--json"])
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert {"score", "summarize_rougeL", "translate_bleu", "classify_accuracy"} <= set(metrics)
    r = _run_cli(
        ["generate", "--checkpoint", str(out), "classify: It is a game.", "summarize: x y"]
    )
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr
    r = _run_cli(["generate", "--checkpoint", str(out), "no prefix here"])
    assert r.returncode == 2 and "must start with one of" in r.stderr
    # a single-task baseline: the same task and recipe, a one-task mixture
    one = tmp_path / "one"
    args = ["--tasks", "classify", "--mix-cap", "0", "--out", str(one)]
    r = _run_cli(["train", "--task", "text2text", *common, *tiny, *args])
    assert r.returncode == 0, r.stderr
    assert {k for k in json.loads(r.stdout)["valid"] if k.endswith("_loss")} == {"classify_loss"}
