"""Crash safety of run directories, by fault injection at every filesystem step of a save.

A save is a sequence of filesystem mutations (mkdir, file writes, safetensors writes, fsync,
rename, replace, symlink, rmtree...). For k = 1, 2, ... we make the k-th mutation fail and
check, each time, that ``latest`` (and ``averaged``) still name a complete checkpoint whose
weights are exactly the old or the new ones, that the next start cleans every leftover, and
that a resume from ``latest`` works. Two failure models:

* ``crash``: the k-th mutation and every later one fail, as if the process died there (its
  clean-up handlers run but cannot touch the disk);
* ``error``: only the k-th fails (a full disk for a moment); the process goes on.

k grows until a save runs to the end without reaching the k-th mutation.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from qkv.tasks import TaskOptions, build_trainer, get_task, load_trained
from qkv.training import TrainConfig, Trainer, check_checkpoint, list_checkpoints, rundir
from qkv.training import checkpoint as ckpt

TINY = {"d_model": 32, "n_heads": 2, "d_ff": 64, "n_encoder_layers": 1, "n_decoder_layers": 1}


class Injected(OSError):
    """The injected failure."""


class Faults:
    """Count filesystem mutations and fail the k-th (``crash``: and every later one)."""

    def __init__(self, k: int, crash: bool) -> None:
        self.k, self.crash = k, crash
        self.calls: list[str] = []
        self.failed: str | None = None

    def hit(self, what: str) -> None:
        self.calls.append(what)
        n = len(self.calls)
        if n == self.k or (self.crash and n > self.k):
            self.failed = self.failed or what
            raise Injected(f"injected failure at mutation {n} ({what})")

    @property
    def fired(self) -> bool:
        return len(self.calls) >= self.k


def _wrap(faults: Faults, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        faults.hit(name)
        return fn(*args, **kwargs)

    return wrapper


def _wrap_open(faults: Faults, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+"):
            faults.hit(f"open({Path(str(file)).name}, {mode!r})")
        return fn(file, mode, *args, **kwargs)

    return wrapper


MUTATIONS = [
    (os, "replace"),
    (os, "rename"),
    (os, "fsync"),
    (os, "symlink"),
    (os, "mkdir"),
    (os, "unlink"),
    (os, "rmdir"),
    (shutil, "rmtree"),
    (ckpt, "save_file"),
    (ckpt, "save_model"),
]


@contextmanager
def inject(monkeypatch: pytest.MonkeyPatch, faults: Faults) -> Iterator[Faults]:
    with monkeypatch.context() as m:
        for mod, name in MUTATIONS:
            m.setattr(mod, name, _wrap(faults, f"{getattr(mod, '__name__', mod)}.{name}",
                                       getattr(mod, name)))  # fmt: skip
        m.setattr(io, "open", _wrap_open(faults, io.open))
        m.setattr(builtins, "open", _wrap_open(faults, builtins.open))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "could not remove ..."
            yield faults


# ---------------------------------------------------------------------------------------
def _cfg(**kw: Any) -> TrainConfig:
    base = dict(steps=2, batch_size=8, lr=1e-2, schedule="constant", warmup=0,
                label_smoothing=0.0, progress=False, log_every=1, eval_limit=4,
                keep_last=2, save_every=1)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _task():
    return get_task("copy", TaskOptions(n_train=32, n_valid=8, n_test=8, max_len=4))


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(d / ckpt.MODEL_FILE))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _model_weights(tr: Trainer, where: Path) -> dict[str, torch.Tensor]:
    d = where / "probe"  # what save_model writes, without the run machinery
    ckpt.save_checkpoint(d, tr.model, tr.model_config)
    w = _weights(d)
    shutil.rmtree(d)
    return w


def _debris(run: Path) -> list[str]:
    """Names a clean run directory must not hold after the next start."""
    out = [p.name for p in run.iterdir() if p.name.startswith(".")]
    root = run / ckpt.CHECKPOINTS_DIR
    committed = {p.name for p in list_checkpoints(run)}
    averaged = (
        os.readlink(run / "averaged").split("/")[-1] if (run / "averaged").is_symlink() else None
    )
    for p in root.iterdir():
        if p.name.startswith("."):
            out.append(f"checkpoints/{p.name}")
        elif p.name.startswith("step-") and p.name not in committed:
            out.append(f"checkpoints/{p.name} (uncommitted)")
        elif p.name.startswith("averaged") and p.name != averaged:
            out.append(f"checkpoints/{p.name} (not linked)")
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A pristine run (steps 1, 2 saved; ``averaged`` saved) and a trainer at step 3."""
    base = tmp_path_factory.mktemp("pristine")
    run = base / "run"
    torch.manual_seed(0)
    tr = build_trainer(_task(), _cfg(average_last=2), run, model_overrides=TINY)
    tr.fit()  # saves step-1, step-2 and averaged
    rundir.release_run_dir(tr)
    assert (run / "averaged").is_symlink() and ckpt.read_latest(run) == "step-00000002"
    snapshot = base / "snapshot"
    shutil.copytree(run, snapshot, symlinks=True)
    old = _weights(check_checkpoint(run))
    old_avg = _weights(check_checkpoint(run / "averaged"))
    tr.train_step()  # step 3: the weights the failing saves write
    new = _model_weights(tr, base)
    assert not _same(old, new)
    resumer = build_trainer(_task(), _cfg(), None, model_overrides=TINY)
    return {"snapshot": snapshot, "tr": tr, "old": old, "new": new, "old_avg": old_avg,
            "resumer": resumer, "base": base}  # fmt: skip


def _fresh_run(setup: dict[str, Any], tag: str) -> Path:
    run = setup["base"] / tag
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(setup["snapshot"], run, symlinks=True)
    return run


def _check_after(setup: dict[str, Any], run: Path, faults: Faults, raised: bool,
                 pointer: str, what: str) -> None:  # fmt: skip
    """``pointer`` (``latest`` or ``averaged``) names the old or the new weights (the new
    ones if the save did not raise); the other pointer is untouched."""
    tag = f"{what}, mutation {faults.k} ({faults.failed}), crash={faults.crash}"
    new = setup["new"]
    # 1. both pointers name complete checkpoints with exactly the old or the new weights
    latest = _weights(check_checkpoint(run))
    avg = _weights(check_checkpoint(run / "averaged"))
    moved, kept = (latest, avg) if pointer == "latest" else (avg, latest)
    old_moved = setup["old"] if pointer == "latest" else setup["old_avg"]
    old_kept = setup["old_avg"] if pointer == "latest" else setup["old"]
    assert _same(kept, old_kept), tag
    assert _same(moved, old_moved) or _same(moved, new), tag
    if not raised:
        assert _same(moved, new), tag
    _model, task = load_trained(run)
    assert task.name == "copy", tag
    good = check_checkpoint(run)
    # 2. the next start (a resume takes the lock and cleans) leaves no debris
    resumer: Trainer = setup["resumer"]
    resumer.out_dir = run
    resumer.load_state(check_checkpoint(run))
    rundir.release_run_dir(resumer)
    assert _debris(run) == [], tag
    st = ckpt.read_json(good / ckpt.STATE_FILE)
    assert resumer.step == st["step"] and resumer.step in (2, 3), tag
    # 3. the resumed trainer trains and saves
    logs = resumer.train_step()
    assert torch.isfinite(torch.tensor(logs["loss"])), tag
    resumer.save()
    rundir.release_run_dir(resumer)
    assert ckpt.read_latest(run) == f"step-{resumer.step:08d}", tag


def _sweep(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, what: str,
           action: Callable[[Trainer, Path], None], pointer: str) -> dict[str, int]:  # fmt: skip
    """Run ``action`` with a failure at every mutation, both failure models."""
    tr: Trainer = setup["tr"]
    points: dict[str, int] = {}
    for crash in (True, False):
        k = 0
        while True:
            k += 1
            run = _fresh_run(setup, f"{what}-{crash}-{k}")
            tr.out_dir = run
            rundir.hold_run_dir(tr, run)  # the run was opened before the save
            raised = False
            with inject(monkeypatch, Faults(k, crash)) as faults:
                try:
                    action(tr, run)
                except Injected:
                    raised = True
            rundir.release_run_dir(tr)  # the process ends
            if not faults.fired:
                assert not raised
                _check_after(setup, run, faults, raised, pointer, what)
                break
            _check_after(setup, run, faults, raised, pointer, what)
            shutil.rmtree(run)
        points[f"crash={crash}"] = k - 1
        assert k - 1 >= 10, f"{what}: only {k - 1} mutations in a save?"
    return points


def test_every_mutation_of_a_new_step_save(setup, monkeypatch):
    points = _sweep(setup, monkeypatch, "new-step", lambda tr, run: tr.save(), "latest")
    assert points["crash=True"] == points["crash=False"]


# 11 s: the new-step sweep stays fast; the same mutations of two other saves are slow
@pytest.mark.slow
def test_every_mutation_of_a_resave_of_the_latest_step(setup, monkeypatch):
    def resave(tr: Trainer, run: Path) -> None:
        tr.step -= 1  # step 2 again (as after averaging, or resuming a finished run)
        try:
            tr.save()
        finally:
            tr.step += 1

    _sweep(setup, monkeypatch, "resave", resave, "latest")


# 9 s: see the resave sweep
@pytest.mark.slow
def test_every_mutation_of_an_averaged_save(setup, monkeypatch):
    def averaged(tr: Trainer, run: Path) -> None:
        rundir.save_averaged(run, tr.model, tr.model_config, extra_writer=tr.save_extra)

    _sweep(setup, monkeypatch, "averaged", averaged, "averaged")


def test_the_sweep_reaches_every_kind_of_step(setup, monkeypatch):
    tr: Trainer = setup["tr"]
    run = _fresh_run(setup, "census")
    tr.out_dir = run
    rundir.hold_run_dir(tr, run)
    with inject(monkeypatch, Faults(10**9, crash=False)) as faults:
        tr.save()
        rundir.save_averaged(run, tr.model, tr.model_config, extra_writer=tr.save_extra)
    rundir.release_run_dir(tr)
    kinds = {c.split("(")[0] for c in faults.calls}
    for kind in ("os.rename", "os.replace", "os.fsync", "os.symlink", "os.mkdir",
                 "shutil.rmtree", "qkv.training.checkpoint.save_file",
                 "qkv.training.checkpoint.save_model", "open"):  # fmt: skip
        assert kind in kinds, (kind, faults.calls)
