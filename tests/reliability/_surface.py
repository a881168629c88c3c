"""Shared by the ``test_surface_*`` tables: a tiny trained run and the check that a command
fails as the CLI promises (exit 2, one ``qkv: error:`` line naming the argument or file)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from qkv.cli import main

#: A copy run of 16-wide layers that trains one step in about a second.
TINY_RUN = [
    "--task", "copy", "--n-train", "64", "--max-len", "4", "--steps", "1", "--batch-size", "8",
    "--model", "d_model=16", "--model", "n_heads=2", "--model", "d_ff=32",
    "--model", "n_encoder_layers=1", "--model", "n_decoder_layers=1",
    "--eval-limit", "4", "--no-progress",
]  # fmt: skip


#: A digits run (a classifier: it decodes nothing) of 16-wide layers, one step.
TINY_DIGITS = [
    "train", "--task", "digits", "--steps", "1", "--n-train", "32", "--batch-size", "8",
    "--eval-limit", "4", "--no-progress", "--model", "n_layers=1", "--model", "d_model=16",
    "--model", "n_heads=2", "--model", "d_ff=32",
]  # fmt: skip


def train_tiny(out: Path, *extra: str) -> Path:
    """Train :data:`TINY_RUN` into ``out`` (a run directory) and return it."""
    assert main(["train", *TINY_RUN, *extra, "--out", str(out)]) == 0
    return out


def run_cli(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``qkv ARGV``, run in this process."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's own errors
        code = e.code  # type: ignore[assignment]
    captured = capsys.readouterr()
    return int(code or 0), captured.out, captured.err


def one_line_problems(code: int, out: str, err: str, fragments: Sequence[str]) -> list[str]:
    """What is wrong with a refusal: not exit 2, not one ``qkv: error:`` line, a missing
    fragment, a traceback."""
    problems = []
    err = err.strip()
    if code != 2:
        problems.append(f"exit {code}")
    if not err.startswith("qkv: error:") or "\n" in err:
        problems.append(f"stderr is not one 'qkv: error:' line: {err[-400:]!r}")
    problems += [f"{f!r} not in {err!r}" for f in fragments if f not in err]
    if "Traceback" in err + out:
        problems.append("a traceback")
    return problems


def assert_refused(argv: Sequence[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    """Run ``qkv ARGV`` and assert it is refused in one line containing every fragment;
    return the line."""
    code, out, err = run_cli(argv, capsys)
    problems = one_line_problems(code, out, err, fragments)
    assert not problems, f"qkv {' '.join(argv)}: " + "; ".join(problems)
    return err.strip()
