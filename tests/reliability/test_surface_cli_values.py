"""Every flag value a command takes is bounded and checked before any work: thread counts
above the machine's cores (torch's OpenMP pool segfaults), integers past 64 bits, empty
names and paths, and output files in missing directories are one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _surface import assert_refused, train_tiny

from qkv.cli._common import available_cpus


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("values") / "run")


def _cases(run: Path, new: Path) -> list[tuple[str, list[str], tuple[str, ...]]]:
    ck, out = str(run), str(new)
    many = str(available_cpus() + 1)
    return [
        # (name, argv, fragments of the one line)
        ("train --threads 100000", ["train", "--threads", "100000", "--out", out],
         ("--threads", f"at most {available_cpus()}")),
        ("train --threads cores+1", ["train", "--threads", many, "--out", out], ("--threads",)),
        ("generate --threads 100000", ["generate", "--checkpoint", ck, "--threads", "100000", "a"],
         ("--threads", "CPU cores")),
        ("eval --threads 100000", ["eval", "--checkpoint", ck, "--threads", "100000"],
         ("--threads",)),
        ("viz --threads 100000", ["viz", "--checkpoint", ck, "a", "--threads", "100000"],
         ("--threads",)),
        ("demo --threads 100000", ["demo", "--threads", "100000", "--out", out], ("--threads",)),
        ("bench attention --threads 100000", ["bench", "attention", "--threads", "100000"],
         ("--threads", "CPU cores")),
        ("bench long --threads 100000", ["bench", "long", "--threads", "100000"],
         ("--threads", "CPU cores")),
        ("bench peers --threads 100000", ["bench", "peers", "--threads", "100000"],
         ("--threads", "CPU cores")),
        ("bench train --nanogpt without model.py", ["bench", "train", "--nanogpt",
         str(new / "nanoGPT")], ("--nanogpt", str(new / "nanoGPT"), "no model.py")),
        ("train --seed 1e30", ["train", "--seed", "1e30", "--out", out], ("--seed", "2**63 - 1")),
        ("generate --seed 1e30", ["generate", "--checkpoint", ck, "--seed", "1e30", "a"],
         ("--seed", "2**63 - 1")),
        ("train --steps 1e30", ["train", "--steps", "1e30", "--out", out], ("--steps", "at most")),
        ("train --steps 1e12", ["train", "--steps", "1e12", "--out", out],
         ("--steps", "at most 1,000,000,000")),
        ("train --warmup 1e12", ["train", "--warmup", "1e12", "--out", out],
         ("--warmup", "at most 1,000,000,000")),
        ("train --log-every 1e12", ["train", "--log-every", "1e12", "--out", out],
         ("--log-every", "at most")),
        ("train --grad-accum 1e30", ["train", "--grad-accum", "1e30", "--out", out],
         ("--grad-accum", "at most")),
        ("train --batch-size 1e12", ["train", "--batch-size", "1e12", "--out", out],
         ("--batch-size", "at most")),
        ("task option --n-train 1e30", ["train", "--task", "copy", "--n-train", "1e30",
         "--out", out], ("--n-train", "at most")),
        ("demo --steps 0", ["demo", "--steps", "0", "--out", out], ("--steps",)),
        ("train --task ''", ["train", "--task", "", "--out", out], ("--task", "empty")),
        ("train --out ''", ["train", "--out", ""], ("--out", "empty")),
        ("train --init-from ''", ["train", "--init-from", "", "--out", out],
         ("--init-from", "empty")),
        ("demo --out ''", ["demo", "--out", ""], ("--out", "empty")),
        ("generate --checkpoint ''", ["generate", "--checkpoint", "", "a"],
         ("--checkpoint", "empty")),
        ("eval --checkpoint ''", ["eval", "--checkpoint", ""], ("--checkpoint", "empty")),
        ("viz --out ''", ["viz", "--checkpoint", ck, "a", "--out", ""], ("--out", "empty")),
        ("viz --out in a missing directory",
         ["viz", "--checkpoint", ck, "a", "--out", str(new / "no" / "r.html")],
         ("--out", str(new / "no"), "does not exist")),
        ("a task flag of another task", ["train", "--task", "digits", "--vocab-size", "100",
         "--out", out], ("--vocab-size", "digits")),
    ]  # fmt: skip


def test_every_bad_value_is_one_line_exit_2(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the worker's threads
    new = tmp_path / "new"
    cases = _cases(run, new)
    failures = []
    for name, argv, fragments in cases:
        try:
            assert_refused(argv, capsys, *fragments)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)
    assert not new.exists()  # nothing was written for a refused command
    assert len(cases) == 29


def test_threads_up_to_the_cores_are_taken(run, capsys, monkeypatch):
    """The bound refuses only what the machine lacks: all its cores are a valid count."""
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    from qkv.cli import main

    assert (
        main(["generate", "--checkpoint", str(run), "--threads", str(available_cpus()), "a"]) == 0
    )
    assert calls == [available_cpus()]
