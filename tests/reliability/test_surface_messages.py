"""What a refusal says: a resume with nothing to resume, a run directory another process
trains in (named by pid and host), flags a resumed run cannot take, weights of another
shape, flags a task does not take, damaged numbers in saved JSON files (the file and the
field), text a speech synthesizer cannot speak, a task viz cannot draw. Each is one line,
exit 2, saying what is wrong and what to do; a new time budget on resume is said aloud."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _surface import TINY_RUN, assert_refused, run_cli, train_tiny

from qkv.tasks.synthetic.copy import CopyTask
from qkv.training import runlock
from qkv.training.runlock import RunLock


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("messages")
    run = train_tiny(base / "run")
    ckpt = run / "checkpoints" / (run / "latest").read_text().strip()
    huge = {}
    for name, field in (("config.json", "d_model"), ("task.json", "max_len"),
                        ("trainer_state.json", "bad_evals")):  # fmt: skip
        d = base / f"huge-{name}"
        shutil.copytree(ckpt, d)
        text = (d / name).read_text()
        text, n = re.subn(rf'("{field}": )\d+', lambda m: m[1] + "9" * 5000, text, count=1)
        assert n == 1
        (d / name).write_text(text)
        huge[name] = d
    no_ckpt = base / "no-checkpoint"  # a run killed before its first save
    no_ckpt.mkdir()
    (no_ckpt / "run.lock").write_text("")
    (no_ckpt / "metrics.jsonl").write_text("")
    empty = base / "empty"
    empty.mkdir()
    listops = base / "listops"
    assert run_main(["train", "--task", "listops", "--n-train", "32", "--n-valid", "4",
                     "--n-test", "4", "--max-len", "24", "--steps", "1", "--batch-size", "8",
                     "--model", "d_model=16", "--model", "n_heads=2", "--model", "d_ff=32",
                     "--model", "n_layers=1", "--eval-limit", "4", "--no-progress",
                     "--out", str(listops)]) == 0  # fmt: skip
    return {"base": base, "run": run, "ckpt": ckpt, "no_ckpt": no_ckpt, "empty": empty,
            "listops": listops, **{f"huge {k}": v for k, v in huge.items()}}  # fmt: skip


def run_main(argv: list[str]) -> int:
    from qkv.cli import main

    return main(argv)


def _cases(f: dict[str, Path]) -> list[tuple[str, list[str], tuple[str, ...]]]:
    run, new = str(f["run"]), str(f["base"] / "new")
    wide = [a if a != "d_model=16" else "d_model=64" for a in TINY_RUN]
    return [
        ("--resume with --init-from", ["train", "--resume", "--out", run, "--init-from", run],
         ("--init-from", "resumed run", "drop")),
        ("--resume with --init-from-hf",
         ["train", "--resume", "--out", run, "--init-from-hf", run], ("--init-from-hf",)),
        ("--resume with a budget already spent",
         ["train", "--resume", "--out", run, "--max-time", "0.001s"],
         ("--max-time", "already trained", "counts from the run's start")),
        ("--init-from weights of another width", ["train", *wide, "--init-from", run,
         "--out", new], ("do not fit", "pretrained (16,) vs model (64,)")),
        ("--resume a run with no checkpoint yet",
         ["train", "--resume", "--out", str(f["no_ckpt"])],
         ("no checkpoint yet", str(f["no_ckpt"]), "without --resume")),
        ("--resume an empty directory", ["train", "--resume", "--out", str(f["empty"])],
         ("is empty", "no run to resume")),
        ("--resume a missing directory", ["train", "--resume", "--out", new],
         ("does not exist", "no run to resume")),
        ("lm --batch-tokens", ["train", "--task", "lm", "--batch-tokens", "100", "--out", new],
         ("--batch-tokens", "'lm'", "translate", "copy")),
        ("--cache-frozen on a model that does not split",
         ["train", *TINY_RUN, "--cache-frozen", "--out", new],
         ("cache", "cannot run in two parts", "split_points")),
        ("--head-lr-scale 0", ["train", *TINY_RUN, "--head-lr-scale", "0", "--out", new],
         ("head", "0")),
        ("--lr-scale with a module the model lacks",
         ["train", *TINY_RUN, "--lr-scale", "vision=0.1", "--out", new],
         ("lr_scale", "'vision'", "no module", "embed")),
        ("a 5000-digit int in config.json",
         ["generate", "--checkpoint", str(f["huge config.json"]), "a"],
         ("config.json", "d_model", "5000 digits")),
        ("a 5000-digit int in task.json",
         ["generate", "--checkpoint", str(f["huge task.json"]), "a"],
         ("task.json", "options.max_len", "5000 digits")),
        ("a 5000-digit int in trainer_state.json",
         ["train", "--resume", "--out", str(f["huge trainer_state.json"])],
         ("trainer_state.json", "bad_evals", "5000 digits")),
        ("asr --say ''", ["generate", "--checkpoint", run, "--say", ""],
         ("--say", "give some text")),
        ("asr --say '  '", ["generate", "--checkpoint", run, "--say", "hello", "--say", "  "],
         ("--say",)),
        ("viz of a task without a text tokenizer", ["viz", "--checkpoint", str(f["listops"]),
         "[MAX 2 3 ]", "--out", str(f["base"] / "r.html")],
         ("'listops'", "viz", "tokenizer", "images")),
    ]  # fmt: skip


def test_every_refusal_says_what_to_do(files, capsys):
    cases = _cases(files)
    failures = []
    for name, argv, fragments in cases:
        try:
            assert_refused(argv, capsys, *fragments)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)
    assert not (files["base"] / "new").exists()
    assert not (files["base"] / "r.html").exists()
    assert len(cases) == 17


#: Holds a run lock in another process: runlock.py alone (standard library only), loaded by
#: its path so that the child starts in milliseconds.
HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("runlock", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["runlock"] = module
spec.loader.exec_module(module)
module.RunLock(sys.argv[2]).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_live_holder_is_named_before_resume_or_a_new_run(files, capsys):
    """A run another process trains now is named by its pid and host, whether or not it has
    saved a checkpoint, for --resume and for a new run into the same directory."""
    d = files["base"] / "held"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, runlock.__file__, str(d)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        who = f"pid {child.pid} on host"
        assert_refused(["train", "--resume", "--out", str(d)], capsys, who, "no checkpoint yet")
        assert_refused(["train", *TINY_RUN, "--out", str(d)], capsys, who, "in use by")
    finally:
        child.communicate("")
    assert not (d / "latest").exists()


def test_this_processs_own_lock_is_reentrant(files, capsys):
    """A script that resumes after an exception, its first trainer still alive, holds the
    lock itself: that is no other holder."""
    lock = RunLock(files["run"]).acquire()
    try:
        code, _, err = run_cli(["train", "--resume", "--out", str(files["run"]), "--steps", "1",
                                "--no-progress"], capsys)  # fmt: skip
        assert code == 0, err
    finally:
        lock.release()


def test_a_run_with_a_checkpoint_asks_for_resume_when_free(files, capsys):
    assert_refused(["train", *TINY_RUN, "--out", str(files["run"])], capsys, "pass --resume")


def test_a_new_budget_on_resume_is_said(tmp_path, capsys):
    run = train_tiny(tmp_path / "run")
    capsys.readouterr()
    code, out, err = run_cli(
        ["train", "--resume", "--out", str(run), "--steps", "2", "--max-time", "5m",
         "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    line = next(x for x in out.splitlines() if "max_time" in x)
    assert "max_time: 5:00 (new budget for this resumed run" in line
    state = json.loads((run / "checkpoints" / (run / "latest").read_text().strip()
                        / "trainer_state.json").read_text())  # fmt: skip
    assert state["train_config"]["max_time"] == 300.0 and state["step"] == 2


def test_a_budget_spent_on_preparation_is_refused(tmp_path, capsys, monkeypatch):
    """--max-time counts the whole command: when preparing the data took all of it, one
    line says so (naming --max-time and the preparation's time) instead of 0 steps."""

    real, slept = CopyTask.examples, []

    def slow(self, split):  # type: ignore[no-untyped-def]
        if split == "train" and not slept:  # a slow corpus, made once
            slept.append(time.sleep(1.2))
        return real(self, split)

    monkeypatch.setattr(CopyTask, "examples", slow)
    run = tmp_path / "run"
    argv = ["train", *[a for a in TINY_RUN if a not in ("--steps", "1")], "--max-time", "1s",
            "--out", str(run)]  # fmt: skip
    assert_refused(argv, capsys, "--max-time 1.0 s is spent before the first step",
                   "preparing the data took ", "give --max-time more than that")  # fmt: skip
    assert not (run / "latest").exists()  # nothing saved: a rerun starts afresh
    assert run_main(["train", *TINY_RUN, "--out", str(run)]) == 0
