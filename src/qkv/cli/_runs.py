"""What ``qkv train`` says about a run directory before it trains: there is no run to resume,
the run has no checkpoint yet, or another process is writing it (named by pid and host)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from qkv.training import checkpoint as ckpt
from qkv.training.runlock import LOCK_FILE, LockHolder, read_holder

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def live_holder(run_dir: Path) -> LockHolder | None:
    """The process that holds ``run_dir``'s lock now, or None when the lock is free (or
    cannot be probed: no lock file, no ``flock``).

    The probe takes the kernel lock on a fresh descriptor and lets it go at once; a lock held
    by another live process makes it fail, which is the answer. This process's own lock is
    re-entrant (:class:`~qkv.training.runlock.RunLock`), so it does not count.
    """
    path = run_dir / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = read_holder(path)
        if (
            holder is not None
            and holder.pid == os.getpid()
            and holder.host == (socket.gethostname() or "unknown-host")
        ):
            return None  # this process: its lock is re-entrant (a trainer built anew)
        return holder or LockHolder(pid=-1, host="unknown host", since="")
    except OSError:  # e.g. a filesystem without flock: nothing to tell
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _in_use(run_dir: Path, holder: LockHolder) -> str:
    who = "an unknown process" if holder.pid < 0 else str(holder)
    return f"run directory {run_dir} is in use by {who} (training now)"


def _has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a checkpoint, or a run directory that names one."""
    return (run_dir / ckpt.MODEL_FILE).exists() or (run_dir / ckpt.LATEST_FILE).exists()


def resume_problem(run_dir: Path) -> str | None:
    """Why ``qkv train --resume --out run_dir`` cannot start, or None to go on (the
    checkpoint's own files are checked when it is read).

    No directory, an empty one, one whose run has saved no checkpoint yet (naming the process
    that trains it, if one does), or a run another process is training now.
    """
    if not run_dir.exists():
        return (
            f"--out {run_dir} does not exist: there is no run to resume; start one without --resume"
        )
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        return f"--out {run_dir} is empty: there is no run to resume; start one without --resume"
    holder = live_holder(run_dir)
    if not _has_checkpoint(run_dir):
        if holder is not None:
            return (
                f"{_in_use(run_dir, holder)} and has saved no checkpoint yet; wait for its "
                "first checkpoint and for it to end, then resume"
            )
        return (
            f"the run in {run_dir} has no checkpoint yet (it ended before its first save); "
            "start it afresh without --resume"
        )
    if holder is not None:
        return f"{_in_use(run_dir, holder)}; wait for it to end, then resume"
    return None


def new_run_problem(run_dir: Path) -> str | None:
    """Why ``qkv train --out run_dir`` (a new run) cannot start, or None to go on: another
    process trains in it (named), or it holds a finished or stopped run (resume it)."""
    holder = live_holder(run_dir) if run_dir.is_dir() else None
    if holder is not None:
        return f"{_in_use(run_dir, holder)}; wait for it to end, or choose another --out"
    if (run_dir / ckpt.LATEST_FILE).exists():
        return (
            f"--out {run_dir} already holds a run; pass --resume to continue it or choose "
            "another --out"
        )
    return None


__all__ = ["live_holder", "new_run_problem", "resume_problem"]
