"""Nothing is lost: Ctrl-C/SIGTERM save a checkpoint at a step boundary, the CLI says how to
resume (exit 130, no traceback), and ``qkv train --resume --out R --steps N`` continues the
run with its own settings, step for step as if it had never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qkv.cli import main
from qkv.tasks import TaskOptions, build_trainer, get_task, load_trained
from qkv.training import TrainConfig
from qkv.training.trainer import TrainingInterrupted

#: a tiny run whose flags differ from every default that shapes the trajectory
ARGS = [
    "--task", "copy", "--n-train", "256", "--max-len", "6", "--data-seed", "3",
    "--model", "d_model=32", "--model", "n_heads=2", "--model", "d_ff=64",
    "--model", "n_encoder_layers=1", "--model", "n_decoder_layers=1", "--model", "dropout=0.1",
    "--batch-size", "16", "--lr", "3e-3", "--schedule", "cosine", "--warmup", "3",
    "--seed", "7", "--label-smoothing", "0.05", "--adam-eps", "1e-6", "--eval-limit", "8",
    "--log-every", "1", "--no-progress", "--threads", "1",
]  # fmt: skip
STEPS = 12


def _losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]
    return out


def test_ctrl_c_saves_and_a_bare_resume_continues_the_run_exactly(tmp_path, capsys):
    full = tmp_path / "full"
    assert main(["train", *ARGS, "--steps", str(STEPS), "--out", str(full)]) == 0
    # the same run, interrupted by SIGINT during step 5 (the handler lets the step finish)
    cut = tmp_path / "cut"
    options = TaskOptions(n_train=256, max_len=6, seed=3)
    cfg = TrainConfig(
        steps=STEPS, batch_size=16, lr=3e-3, schedule="cosine", warmup=3, seed=7,
        label_smoothing=0.05, eps=1e-6, eval_limit=8, log_every=1, progress=False, threads=1,
    )  # fmt: skip
    model = {"d_model": 32, "n_heads": 2, "d_ff": 64, "n_encoder_layers": 1,
             "n_decoder_layers": 1, "dropout": 0.1}  # fmt: skip

    def ctrl_c(step: int, logs: dict[str, float]) -> None:
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    tr = build_trainer(get_task("copy", options), cfg, cut, model_overrides=model, on_step=ctrl_c)
    with pytest.raises(TrainingInterrupted) as e:
        tr.fit()
    assert e.value.step == 5 and e.value.checkpoint is not None
    assert (cut / "latest").read_text().strip() == "step-00000005"
    del tr
    # resume with only --resume --out --steps: every other setting comes from the run
    assert main(["train", "--resume", "--out", str(cut), "--steps", str(STEPS)]) == 0
    a, b = _losses(full), _losses(cut)
    assert sorted(b) == list(range(1, STEPS + 1))  # no step logged twice
    assert [b[s] for s in range(1, STEPS + 1)] == [a[s] for s in range(1, STEPS + 1)]
    capsys.readouterr()


def test_resume_refuses_settings_that_change_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *ARGS, "--steps", "2", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--lr", "0.5", "--batch-size", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--lr 0.5 (the run has 0.003)" in err and "--batch-size 8 (the run has 16)" in err
    assert err.count("\n") == 0 and err.startswith("qkv: error:")
    assert main(["train", "--resume", "--out", str(run), "--model", "d_model=64"]) == 2
    assert "--preset and --model" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(run), "--n-train", "128"]) == 2
    assert "n_train=128 (the run has 256)" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(run), "--task", "reverse"]) == 2
    assert "trains task 'copy'" in capsys.readouterr().err
    # what may change: steps, cadence, device, threads
    assert main(["train", "--resume", "--out", str(run), "--steps", "3", "--eval-every", "1",
                 "--save-every", "1", "--log-every", "2", "--device", "cpu"]) == 0  # fmt: skip
    assert json.loads((run / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())[
        "train_config"
    ]["lr"] == pytest.approx(3e-3)


def test_a_real_ctrl_c_exits_130_with_how_to_resume(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qkv", "train", *ARGS, "--steps", "100000", "--out", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists() or len(_losses(run)) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"resume with: qkv train --resume --out {run}" in err
    step = json.loads((run / "checkpoints" / (run / "latest").read_text().strip()
                       / "trainer_state.json").read_text())["step"]  # fmt: skip
    assert step >= 3 and f"interrupted at step {step}" in err
    r = subprocess.run(
        [sys.executable, "-m", "qkv", "train", "--resume", "--out", str(run),
         "--steps", str(step + 2)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["step"] == step + 2


def test_a_final_evaluation_that_fails_keeps_the_trained_checkpoint(tmp_path, monkeypatch):
    """The last steps are saved before the final evaluation: a failing evaluation (a bug, a
    device error) costs the evaluation, not the run."""
    run = tmp_path / "run"
    task = get_task("copy", TaskOptions(n_train=64, max_len=6, seed=3))
    cfg = TrainConfig(steps=4, batch_size=16, progress=False, threads=1, eval_limit=4)
    model = {"d_model": 32, "n_heads": 2, "d_ff": 64, "n_encoder_layers": 1,
             "n_decoder_layers": 1}  # fmt: skip
    tr = build_trainer(task, cfg, run, model_overrides=model)

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(tr, "evaluate", broken)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        tr.fit()
    assert (run / "latest").read_text().strip() == "step-00000004"
    trained, _ = load_trained(run)  # the saved weights are the trained ones
    for (name, a), b in zip(trained.state_dict().items(), tr.model.state_dict().values()):
        assert torch.equal(a, b), name
