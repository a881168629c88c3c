"""One run per directory: a second process cannot write into a locked run directory, a dead
holder's lock is taken over with a warning, and the holder is named in the error."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import warnings

import pytest

from qkv.tasks import TaskOptions, build_trainer, get_task
from qkv.training import RunLock, RunLockedError, TrainConfig
from qkv.training.runlock import LOCK_FILE, read_holder

HOLDER = textwrap.dedent(
    """
    import sys
    from qkv.training import RunLock

    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # hold until the parent closes our stdin
    print("released", flush=True)
    """
)


def _holder(tmp_path, run):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, str(script), str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line == "locked\n", child.communicate()[1][-3000:]
    return child


def test_a_second_process_gets_one_clear_error_naming_dir_pid_and_host(tmp_path):
    run = tmp_path / "run"
    child = _holder(tmp_path, run)
    try:
        holder = read_holder(run / LOCK_FILE)
        assert holder is not None and holder.pid == child.pid
        assert holder.host == socket.gethostname()
        with pytest.raises(RunLockedError) as info:
            RunLock(run).acquire()
        msg = str(info.value)
        assert str(run) in msg and f"pid {child.pid}" in msg and socket.gethostname() in msg
        assert isinstance(info.value, ValueError)  # the CLI prints it as a user error
        assert info.value.holder == holder and info.value.run_dir == run
        # a trainer on the same directory fails before writing anything
        task = get_task("copy", TaskOptions(n_train=32, n_valid=8, n_test=8, max_len=4))
        cfg = TrainConfig(steps=1, batch_size=8, progress=False)
        with pytest.raises(RunLockedError, match=f"pid {child.pid}"):
            build_trainer(task, cfg, run, model_overrides={"d_model": 16, "n_heads": 2})
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]
    finally:
        out, _ = child.communicate("")  # the holder releases and exits normally
    assert child.returncode == 0 and "released" in out
    assert (run / LOCK_FILE).read_text() == ""  # released cleanly: no stale holder left
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean release leaves nothing to take over
        with RunLock(run) as lock:
            assert lock.held and read_holder(run / LOCK_FILE).pid == os.getpid()
    assert not lock.held


def test_a_killed_holders_lock_is_taken_over_with_a_warning(tmp_path):
    run = tmp_path / "run"
    child = _holder(tmp_path, run)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert read_holder(run / LOCK_FILE).pid == child.pid  # the file still names it
    with pytest.warns(RuntimeWarning, match=rf"stale lock of pid {child.pid} on host"):
        lock = RunLock(run).acquire()
    try:
        assert read_holder(run / LOCK_FILE).pid == os.getpid()
    finally:
        lock.release()


def test_the_lock_is_reentrant_within_a_process_and_released_last(tmp_path):
    run = tmp_path / "run"
    a = RunLock(run).acquire()
    b = RunLock(run).acquire()  # e.g. a resumed trainer while the failed one still exists
    assert a.took_os_lock and not b.took_os_lock
    a.release()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()  # b holds it
    b.release()
    assert (run / LOCK_FILE).read_text() == ""
    b.release()  # a second release is a no-op


def test_cli_train_into_a_locked_directory_exits_2(tmp_path):
    run = tmp_path / "run"
    child = _holder(tmp_path, run)
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        args = ["train", "--task", "copy", "--n-train", "32", "--steps", "1", "--batch-size",
                "8", "--no-progress", "--model", "d_model=16", "--model", "n_heads=2",
                "--out", str(run)]  # fmt: skip
        r = subprocess.run(
            [sys.executable, "-m", "qkv", *args], capture_output=True, text=True, env=env
        )
    finally:
        child.communicate("")
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"is in use by pid {child.pid}" in r.stderr and str(run) in r.stderr
    assert not (run / "metrics.jsonl").exists()
