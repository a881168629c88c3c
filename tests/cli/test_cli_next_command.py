"""The command `make demo` prints next works as printed, from the shell that ran it."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from qkv.cli import demo


@pytest.mark.parametrize("cwd_kind", ["repo", "elsewhere"])
def test_printed_command_runs_without_qkv_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cwd_kind: str
) -> None:
    script = Path(sys.executable).parent / "qkv"
    if not script.is_file():
        pytest.skip("qkv is not installed as a script beside this python")
    cwd = Path.cwd() if cwd_kind == "repo" else tmp_path
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a shell without the venv activated
    monkeypatch.setattr(sys, "argv", [str(script)])
    command = demo._qkv_command()
    assert command != "qkv"
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [*shlex.split(command), "--help"], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout


def test_plain_qkv_when_it_is_on_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Path(sys.executable).parent / "qkv"
    if not script.is_file():
        pytest.skip("qkv is not installed as a script beside this python")
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [str(script)])
    assert demo._qkv_command() == "qkv"
