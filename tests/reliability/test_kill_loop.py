"""SIGKILL a process that saves a checkpoint every step, at random moments, many times.

The child opens the run directory (lock + clean-up of leftovers), then saves forever: a new
step each time (pruned to the last 2), every third step a re-save of the same step (the
versioned path), every fourth an ``averaged`` checkpoint; it prints each step once it is
saved. After every kill the parent checks that ``latest`` names a complete checkpoint whose
weights are the ones that step wrote (and at least as new as the last step printed), that
``averaged`` is complete, and that the next start takes over the stale lock and leaves no
leftovers.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qkv.training import check_checkpoint, list_checkpoints, open_run_dir
from qkv.training import checkpoint as ckpt

TRIALS = 24

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    from torch import nn

    from qkv.training import checkpoint as ckpt
    from qkv.training import rundir

    run = Path(sys.argv[1])
    lock = rundir.open_run_dir(run)  # takes the lock, cleans what the last kill left
    name = ckpt.read_latest(run)
    step = int(name.split("-")[1].split(".")[0]) if name else 0
    model = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 64))
    print("started", flush=True)

    def save(step):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(step)
        rundir.save_run_checkpoint(run, f"step-{step:08d}", model, {"step": step},
                                   trainer_state={"step": step}, keep=2)

    while True:
        step += 1
        save(step)
        if step % 3 == 0:
            save(step)  # the same step again: step-N.1
        if step % 4 == 0:
            rundir.save_averaged(run, model, {"step": step})
        print(step, flush=True)
    """
)


def _uniform_value(d: Path) -> float:
    tensors = load_file(str(d / ckpt.MODEL_FILE))
    values = torch.cat([t.flatten() for t in tensors.values()])
    assert bool((values == values[0]).all()), f"{d} holds a mix of steps"
    return float(values[0])


def _leftovers(run: Path) -> list[str]:
    out = [p.name for p in run.iterdir() if p.name.startswith(".")]
    committed = {p.name for p in list_checkpoints(run)}
    linked = os.readlink(run / "averaged").rsplit("/", 1)[-1] if (run / "averaged").exists() else ""
    for p in (run / ckpt.CHECKPOINTS_DIR).iterdir():
        if p.name.startswith(".") or (p.name.startswith("step-") and p.name not in committed):
            out.append(p.name)
        elif p.name.startswith("averaged") and p.name != linked:
            out.append(p.name)
    return out


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_last_checkpoint(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = random.Random(0)
    last_printed = 0
    with_leftovers = 0
    for trial in range(TRIALS):
        child = subprocess.Popen(
            [sys.executable, str(script), str(run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        first = child.stdout.readline()
        assert first == "started\n", child.communicate()[1][-3000:]
        # kill after 0..4 saves' worth of time: every phase of a save gets hit
        try:
            child.wait(timeout=rng.uniform(0.0, 0.4))
        except subprocess.TimeoutExpired:
            pass
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, err[-3000:]
        printed = [int(x) for x in out.split()]
        last_printed = max([last_printed, *printed])
        # latest names a complete checkpoint with the weights its step wrote
        if last_printed == 0 and ckpt.read_latest(run) is None:
            continue  # killed before the very first save finished
        good = check_checkpoint(run)
        step = ckpt.read_json(good / ckpt.STATE_FILE)["step"]
        assert step >= last_printed, (trial, step, last_printed)
        assert _uniform_value(good) == step
        if (run / "averaged").exists():
            assert 0 < _uniform_value(check_checkpoint(run / "averaged")) <= step
        # the next start takes over the dead child's lock and removes every leftover
        with_leftovers += bool(_leftovers(run))
        with pytest.warns(RuntimeWarning, match=rf"stale lock of pid {child.pid}"):
            lock = open_run_dir(run)
        try:
            assert _leftovers(run) == [], trial
            assert check_checkpoint(run) == good
        finally:
            lock.release()
    assert last_printed > 0
    print(f"{TRIALS} kills, {with_leftovers} left debris, reached step {last_printed}")
