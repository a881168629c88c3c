"""A run directory: checkpoints that are never lost, a ``latest`` pointer, one writer.

Layout::

    run_dir/
      run.lock                 the writer's pid and host (see qkv.training.runlock)
      latest                   "step-00000100\\n": the newest complete checkpoint's name
      metrics.jsonl
      averaged -> checkpoints/averaged    a symbolic link to the averaged weights
      checkpoints/
        step-00000050/         complete checkpoints (see qkv.training.checkpoint)
        step-00000100/
        averaged/
        step-00000100.1/       a re-save of step 100 (``.1``, ``.2``...: the next free name)
        .tmp-*/ .old-*/        debris of a crash: removed at the next start

The invariant: at every instant ``latest`` is absent (before the first save) or names a
complete checkpoint, and ``averaged`` is absent or links to a complete checkpoint. A save
writes and fsyncs ``checkpoints/.tmp-<name>-*``, renames it to a name nothing points to yet
(``step-N``, or ``step-N.1`` when step N exists: re-saving a step after averaging, resuming
a finished run, or stopping early on a save step), switches the pointer with ``os.replace``
(and fsyncs the directory), and only then removes what the pointer named before. Directories
are deleted by renaming them to ``.old-*`` first, so no name ever holds a half-deleted one.

A checkpoint directory that no pointer names is *committed* only when it is ``latest`` or an
older step (one directory per step: the one ``latest`` names, else the newest version).
Anything else was left by a crash and :func:`clean_run_dir` removes it when the next writer
opens the directory (:func:`open_run_dir`, :func:`hold_run_dir`).
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qkv.training import _atomic
from qkv.training import checkpoint as ckpt
from qkv.training.runlock import RunLock

#: In a run directory: the link to the averaged checkpoint.
AVERAGED = "averaged"
_STEP = re.compile(r"^step-(\d+)$")
_TEMP_POINTER = re.compile(rf"^\.({re.escape(ckpt.LATEST_FILE)}|{AVERAGED})-\d+(-[0-9a-f]+)?$")


def _step_of(name: str) -> tuple[int, int] | None:
    """``(step, version)`` of ``step-N`` / ``step-N.V``; None for any other name."""
    parsed = _atomic.version_of(name)
    if parsed is None:
        return None
    m = _STEP.match(parsed[0])
    return (int(m[1]), parsed[1]) if m else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The committed step checkpoints of a run, oldest first, one per step.

    A checkpoint is committed when ``latest`` names it, or it is an older step (of several
    versions of one step, the newest). Without a ``latest`` file nothing is committed.

    Raises:
        CheckpointError: a damaged ``latest`` file.
    """
    run_dir = Path(run_dir)
    latest = ckpt.read_latest(run_dir)
    parsed = _step_of(latest) if latest is not None else None
    if parsed is None:
        return []
    by_step: dict[int, tuple[int, Path]] = {}
    root = run_dir / ckpt.CHECKPOINTS_DIR
    for p in root.iterdir() if root.is_dir() else ():
        sv = _step_of(p.name)
        if sv is None or not p.is_dir() or sv[0] > parsed[0]:
            continue
        if sv[0] == parsed[0] and p.name != latest:
            continue
        if sv[0] not in by_step or sv[1] > by_step[sv[0]][0]:
            by_step[sv[0]] = (sv[1], p)
    return [by_step[s][1] for s in sorted(by_step)]


def save_run_checkpoint(
    run_dir: str | Path,
    name: str,
    model: nn.Module,
    model_config: dict[str, Any],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict[str, Any] | None = None,
    extra_writer: Callable[[Path], None] | None = None,
    keep: int | None = None,
) -> Path:
    """Save a checkpoint into a run directory and make ``latest`` name it, crash-safely.

    Args:
        run_dir: the run directory.
        name: ``step-<N>`` (the saved directory may be ``step-<N>.<V>`` if step N exists).
        model, model_config, optimizer, trainer_state, extra_writer: see
            :func:`qkv.training.checkpoint.write_checkpoint`.
        keep: keep this many newest step checkpoints (None: keep all).

    Returns:
        The new checkpoint directory.

    Raises:
        ValueError: ``name`` is not ``step-<digits>``.
        OSError: writing failed; ``latest`` then still names the previous checkpoint (or the
            new one, when only the final fsync failed), and no partial directory remains.
    """
    m = _STEP.match(name)
    if m is None:
        raise ValueError(f"a run checkpoint is named step-<digits>, got {name!r}")
    run_dir = Path(run_dir)
    root = run_dir / ckpt.CHECKPOINTS_DIR
    step = int(m[1])
    before = [p for p in _committed_or_none(run_dir) if (_step_of(p.name) or (-1,))[0] == step]
    tmp = ckpt.write_checkpoint(
        root,
        name,
        model,
        model_config,
        optimizer=optimizer,
        trainer_state=trainer_state,
        extra_writer=extra_writer,
    )
    final = _publish(tmp, root, name)
    try:
        ckpt.update_latest(run_dir, final.name)
    except BaseException:
        if _latest_or_none(run_dir) != final.name:  # not switched: the new one is debris
            _atomic.discard_published(final)
        raise
    # committed: an earlier version of this step, and steps beyond `keep`, are debris now
    for old in before:
        _atomic.remove_quietly(old, "superseded checkpoint")
    if keep is not None:
        prune_checkpoints(run_dir, keep)
    return final


def remove_checkpoints(run_dir: str | Path, dirs: list[Path]) -> list[Path]:
    """Delete these committed step checkpoints (never the one ``latest`` names).

    Returns:
        The directories removed.
    """
    latest = _latest_or_none(Path(run_dir))
    removed = []
    for old in dirs:
        if old.name != latest and _atomic.remove_quietly(old, "old checkpoint"):
            removed.append(old)
    return removed


def prune_checkpoints(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest committed step checkpoints (never ``latest``'s).

    Returns:
        The directories removed.

    Raises:
        ValueError: ``keep < 1``.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    return remove_checkpoints(run_dir, list_checkpoints(run_dir)[:-keep])


def save_averaged(
    run_dir: str | Path,
    model: nn.Module,
    model_config: dict[str, Any],
    *,
    extra_writer: Callable[[Path], None] | None = None,
) -> Path:
    """Save ``run_dir/averaged`` (a symbolic link to ``checkpoints/averaged[.V]``) with the
    same guarantee as :func:`save_run_checkpoint`: the link is switched atomically.

    Where the filesystem has no symbolic links, ``averaged`` is a directory replaced by two
    renames (see :func:`qkv.training.checkpoint.save_checkpoint`).

    Returns:
        ``run_dir/averaged``.
    """
    run_dir = Path(run_dir)
    root = run_dir / ckpt.CHECKPOINTS_DIR
    link = run_dir / AVERAGED
    tmp = ckpt.write_checkpoint(root, AVERAGED, model, model_config, extra_writer=extra_writer)
    before = _averaged_target(run_dir)
    final = _publish(tmp, root, AVERAGED)
    try:
        _atomic.replace_symlink(link, f"{ckpt.CHECKPOINTS_DIR}/{final.name}")
    except BaseException as e:
        if _averaged_target(run_dir) != final.name:
            _atomic.discard_published(final)
            if isinstance(e, OSError | NotImplementedError) and _no_symlinks(run_dir):
                return ckpt.save_checkpoint(link, model, model_config, extra_writer=extra_writer)
        raise
    if before is not None and before != final.name:
        _atomic.remove_quietly(root / before, "superseded averaged checkpoint")
    return link


def clean_run_dir(run_dir: str | Path) -> list[Path]:
    """Remove what a killed writer left: ``.tmp-*``/``.old-*`` directories, temporary
    pointers, and checkpoints no pointer commits (see the module docstring). What ``latest``
    and ``averaged`` name is never touched; with a damaged ``latest`` no checkpoint is.

    Call it only while holding the run's lock (:func:`open_run_dir` does).

    Returns:
        The paths removed.
    """
    run_dir = Path(run_dir)
    root = run_dir / ckpt.CHECKPOINTS_DIR
    removed: list[Path] = []
    if not run_dir.is_dir():
        return removed
    _recover_legacy_old(run_dir)
    for p in run_dir.iterdir():
        if _TEMP_POINTER.match(p.name):
            _atomic.discard_file(p)
            removed.append(p)
        elif (
            p.name.startswith((_atomic.TMP_PREFIX, _atomic.OLD_PREFIX))
            and p.is_dir()
            and not p.is_symlink()
        ):
            _atomic.discard_dir(p)
            removed.append(p)
    if not root.is_dir():
        return removed
    latest = _latest_or_none(run_dir)
    # without a readable latest naming a checkpoint, which step directories were committed is
    # unknown: keep them all (list_checkpoints ignores them anyway)
    latest_ok = latest is not None and (root / latest).is_dir()
    committed = {p.name for p in list_checkpoints(run_dir)} if latest_ok else set()
    averaged = _averaged_target(run_dir)
    for p in sorted(root.iterdir()):
        if p.name.startswith((_atomic.TMP_PREFIX, _atomic.OLD_PREFIX)):
            _atomic.discard_dir(p)
            removed.append(p)
        elif _step_of(p.name) is not None and latest_ok and p.name not in committed:
            if _atomic.remove_quietly(p, "uncommitted checkpoint"):
                removed.append(p)
        elif (_atomic.version_of(p.name) or ("",))[0] == AVERAGED and p.name != averaged:
            if _atomic.remove_quietly(p, "superseded averaged checkpoint"):
                removed.append(p)
    return removed


def open_run_dir(run_dir: str | Path) -> RunLock:
    """Open a run directory for writing: create it, take its lock, and (when this process
    did not hold it already) clean what a killed writer left.

    Returns:
        The held lock; release it (or use it as a context manager) when the run ends.

    Raises:
        qkv.training.runlock.RunLockedError: another live process writes into it.
    """
    lock = RunLock(run_dir).acquire()
    try:
        if lock.took_os_lock:
            clean_run_dir(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock


_OWNED: weakref.WeakKeyDictionary[Any, dict[str, RunLock]] = weakref.WeakKeyDictionary()


def hold_run_dir(owner: object, run_dir: str | Path) -> RunLock:
    """:func:`open_run_dir` once per ``(owner, run_dir)``: the lock is held until ``owner``
    (a trainer) is garbage-collected, :func:`release_run_dir` is called, or the process ends.

    Args:
        owner: the object the lock lives with (must support weak references).
        run_dir: the run directory.

    Returns:
        The held lock.

    Raises:
        qkv.training.runlock.RunLockedError: another live process writes into it.
    """
    held = _OWNED.setdefault(owner, {})
    key = os.path.abspath(run_dir)
    if key not in held:
        lock = open_run_dir(run_dir)
        held[key] = lock
        weakref.finalize(owner, lock.release)
    return held[key]


def release_run_dir(owner: object) -> None:
    """Release every run-directory lock :func:`hold_run_dir` took for ``owner``."""
    for lock in _OWNED.pop(owner, {}).values():
        lock.release()


# ---------------------------------------------------------------------------------------
def _publish(tmp: Path, root: Path, base: str) -> Path:
    try:
        return _atomic.publish_dir(tmp, root, base)
    except BaseException:
        _atomic.discard_dir(tmp)
        raise


def _committed_or_none(run_dir: Path) -> list[Path]:
    try:
        return list_checkpoints(run_dir)
    except ckpt.CheckpointError:
        return []


def _latest_or_none(run_dir: Path) -> str | None:
    try:
        return ckpt.read_latest(run_dir)
    except ckpt.CheckpointError:
        return None


def _averaged_target(run_dir: Path) -> str | None:
    """The ``checkpoints/`` entry ``run_dir/averaged`` links to, or None."""
    link = run_dir / AVERAGED
    if not link.is_symlink():
        return None
    target = Path(os.readlink(link))
    if target.parent != Path(ckpt.CHECKPOINTS_DIR):
        return None
    return target.name


def _no_symlinks(run_dir: Path) -> bool:
    probe = run_dir / f".symlink-probe-{os.getpid()}"
    try:
        os.symlink(".", probe)
    except (OSError, NotImplementedError):
        return True
    _atomic.discard_file(probe)
    return False


def _recover_legacy_old(run_dir: Path) -> None:
    """qkv before 0.x replaced a checkpoint by renaming the old one into
    ``checkpoints/.old-<name>-*/<name>`` and the new one in: a crash between the two left
    ``latest`` naming nothing. Put the old one back before cleaning."""
    name = _latest_or_none(run_dir)
    root = run_dir / ckpt.CHECKPOINTS_DIR
    if name is None or (root / name).exists() or not root.is_dir():
        return
    for trash in root.glob(f"{_atomic.OLD_PREFIX}{name}-*"):
        candidate = trash / name
        if all((candidate / f).is_file() for f in ckpt.REQUIRED):
            os.rename(candidate, root / name)
            _atomic.fsync_path(root)
            return


__all__ = [
    "AVERAGED",
    "clean_run_dir",
    "hold_run_dir",
    "list_checkpoints",
    "open_run_dir",
    "prune_checkpoints",
    "release_run_dir",
    "remove_checkpoints",
    "save_averaged",
    "save_run_checkpoint",
]
