"""The run-directory rules: fresh names for re-saves, what counts as committed, what the start
of a run cleans, pruning never touching ``latest``, and the migrations from older layouts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from qkv.training import (
    check_checkpoint,
    clean_run_dir,
    list_checkpoints,
    rundir,
    save_run_checkpoint,
)
from qkv.training import checkpoint as ckpt


def _model(value: float) -> nn.Module:
    m = nn.Linear(4, 3)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(value)
    return m


def _save(run: Path, step: int, value: float | None = None, keep: int | None = None) -> Path:
    value = float(step) if value is None else value
    return save_run_checkpoint(run, f"step-{step:08d}", _model(value), {"v": value},
                               trainer_state={"step": step}, keep=keep)  # fmt: skip


def _value(d: Path) -> float:
    return float(load_file(str(d / ckpt.MODEL_FILE))["weight"][0, 0])


def _names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / ckpt.CHECKPOINTS_DIR).iterdir())


def test_a_resave_gets_a_fresh_name_and_the_old_one_goes_after_the_switch(tmp_path):
    run = tmp_path / "run"
    _save(run, 1)
    _save(run, 2)
    assert ckpt.read_latest(run) == "step-00000002"
    second = _save(run, 2, value=2.5)  # the same step again (averaging, a finished resume...)
    assert second.name == "step-00000002.1" and ckpt.read_latest(run) == second.name
    assert _names(run) == ["step-00000001", "step-00000002.1"]
    assert _value(check_checkpoint(run)) == 2.5
    third = _save(run, 2, value=2.75)  # the plain name is free again
    assert third.name == "step-00000002" and _names(run) == ["step-00000001", "step-00000002"]
    assert [p.name for p in list_checkpoints(run)] == ["step-00000001", "step-00000002"]


def test_pruning_keeps_the_newest_and_never_latest(tmp_path):
    run = tmp_path / "run"
    for step in range(1, 6):
        _save(run, step, keep=2)
    assert _names(run) == ["step-00000004", "step-00000005"]
    ckpt.update_latest(run, "step-00000004")  # a user points latest back
    assert rundir.prune_checkpoints(run, 1) == []  # step 5 is not committed; 4 is latest
    assert _names(run) == ["step-00000004", "step-00000005"]
    with pytest.raises(ValueError, match="keep must be >= 1"):
        rundir.prune_checkpoints(run, 0)
    with pytest.raises(ValueError, match="step-<digits>"):
        save_run_checkpoint(run, "final", _model(0), {})


def test_the_start_of_a_run_removes_exactly_the_leftovers(tmp_path):
    run = tmp_path / "run"
    _save(run, 1)
    _save(run, 2)
    root = run / ckpt.CHECKPOINTS_DIR
    # what killed writers leave behind
    (root / ".tmp-step-00000003-abc").mkdir()
    (root / ".old-step-00000001-abc").mkdir()
    shutil.copytree(root / "step-00000002", root / "step-00000003")  # published, not switched
    shutil.copytree(root / "step-00000002", root / "step-00000002.1")  # ditto, a re-save
    (run / ".latest-123-abcdef01").write_text("step-00000003\n")
    (run / "metrics.jsonl").write_text("{}\n")
    removed = {p.name for p in clean_run_dir(run)}
    assert removed == {".tmp-step-00000003-abc", ".old-step-00000001-abc", "step-00000003",
                       "step-00000002.1", ".latest-123-abcdef01"}  # fmt: skip
    assert _names(run) == ["step-00000001", "step-00000002"]
    assert (run / "metrics.jsonl").exists() and _value(check_checkpoint(run)) == 2.0
    assert clean_run_dir(run) == []


def test_without_a_readable_latest_no_checkpoint_is_removed(tmp_path):
    run = tmp_path / "run"
    _save(run, 1)
    (run / "latest").write_text("../elsewhere\n")
    (run / ckpt.CHECKPOINTS_DIR / ".tmp-x").mkdir()
    assert [p.name for p in clean_run_dir(run)] == [".tmp-x"]
    assert _names(run) == ["step-00000001"]
    (run / "latest").unlink()  # before the first completed save
    assert clean_run_dir(run) == [] and _names(run) == ["step-00000001"]
    with pytest.raises(ckpt.CheckpointError, match="is incomplete"):
        check_checkpoint(run)


def test_a_crash_of_the_old_replacement_scheme_is_recovered(tmp_path):
    """qkv before this layout moved the old checkpoint into .old-<name>-*/<name> and the new
    one in; a crash between the two left latest naming nothing."""
    run = tmp_path / "run"
    good = _save(run, 1)
    trash = run / ckpt.CHECKPOINTS_DIR / ".old-step-00000001-xyz"
    trash.mkdir()
    os.rename(good, trash / good.name)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        check_checkpoint(run)
    clean_run_dir(run)
    assert _value(check_checkpoint(run)) == 1.0 and not trash.exists()


def test_averaged_is_a_link_switched_atomically_and_replaces_an_old_directory(tmp_path):
    run = tmp_path / "run"
    _save(run, 1)
    ckpt.save_checkpoint(run / "averaged", _model(0.5), {})  # the layout before links
    link = rundir.save_averaged(run, _model(0.25), {})
    assert link.is_symlink() and os.readlink(link) == "checkpoints/averaged"
    assert _value(check_checkpoint(link)) == 0.25
    rundir.save_averaged(run, _model(0.125), {})
    assert os.readlink(link) == "checkpoints/averaged.1" and _value(link) == 0.125
    assert _names(run) == ["averaged.1", "step-00000001"]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_a_standalone_checkpoint_is_replaced_whole(tmp_path):
    d = tmp_path / "ckpt"
    ckpt.save_checkpoint(d, _model(1), {})
    ckpt.save_checkpoint(d, _model(2), {})
    assert _value(d) == 2.0 and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
