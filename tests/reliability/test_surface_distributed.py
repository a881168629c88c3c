"""Under ``torchrun`` every process reads the same flags: a global batch that does not split
evenly over the processes (x --grad-accum) is refused in one line by each of them before any
joins the process group (it was a ValueError from inside the trainer of each rank, after the
group had formed). Tested as a function and through the CLI with ``WORLD_SIZE`` set; no
process group is started."""

from __future__ import annotations

import pytest
from _surface import TINY_RUN, assert_refused

from qkv.cli import CLIError
from qkv.cli._world import check_world_batch, world_size

REFUSED = [
    # (settings, world size, fragments)
    ({"batch_size": 3}, 2, ("--batch-size 3", "world size 2", "e.g. 2 or 4")),
    ({"batch_size": 6, "grad_accum": 2}, 2, ("--grad-accum 2 = 4", "e.g. 4 or 8")),
    ({"batch_size": 1}, 2, ("--batch-size 1", "e.g. 2")),
    ({"batch_size": 64}, 3, ("world size 3", "e.g. 63 or 66")),
    ({}, 3, ("--batch-size 64",)),  # the default batch
]
TAKEN = [({"batch_size": 4}, 2), ({"batch_size": 8, "grad_accum": 2}, 2), ({"batch_size": 3}, 1)]


@pytest.mark.parametrize("settings,world,fragments", REFUSED)
def test_a_batch_that_does_not_split_is_refused(settings, world, fragments):
    with pytest.raises(CLIError) as e:
        check_world_batch(settings, world)
    for f in fragments:
        assert f in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("settings,world", TAKEN)
def test_a_batch_that_splits_is_taken(settings, world):
    check_world_batch(settings, world)


def test_world_size_from_the_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert world_size() == 2
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv("WORLD_SIZE", bad)
        with pytest.raises(CLIError, match="WORLD_SIZE"):
            world_size()


def test_train_refuses_before_joining_the_group(tmp_path, capsys, monkeypatch):
    """A rank of a 2-process run with --batch-size 3: one line, exit 2, and nothing
    written (the process group is never joined: no MASTER_ADDR is set, which joining
    would need)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    argv = [a if a != "8" else "3" for a in TINY_RUN]  # --batch-size 3
    assert "3" in argv
    assert_refused(["train", *argv, "--out", str(tmp_path / "r")], capsys,
                   "--batch-size 3", "world size 2")  # fmt: skip
    assert not (tmp_path / "r").exists()
