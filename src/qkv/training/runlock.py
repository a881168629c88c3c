"""One run per directory: an exclusive lock on a run directory.

Two trainers writing into one run directory would interleave ``metrics.jsonl`` and prune each
other's checkpoints. :class:`RunLock` takes ``run_dir/run.lock`` exclusively with
``fcntl.flock`` (which the kernel releases when the holder dies, however it dies) and writes
the holder's pid, host and start time into it, so that a second writer fails at once with a
:class:`RunLockedError` naming the directory, the pid and the host.

A lock file that still names a holder although the lock is free was left by a process that
died without releasing it (SIGKILL, power loss); it is taken over with a warning. On a
filesystem without ``flock`` (or a platform without ``fcntl``) the pid file alone decides: a
holder on this host whose pid is gone is stale; a holder on another host cannot be checked
and keeps the lock (the error says which file to delete if that run is dead).

Within one process the lock is re-entrant: a script may build a second trainer on a
directory (e.g. to resume after an exception) while the first still exists.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from qkv.training._atomic import UnsafeRunFileError, open_run_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: The lock file inside a run directory.
LOCK_FILE = "run.lock"


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a run lock, as written in the lock file."""

    pid: int
    host: str
    since: str = ""

    def __str__(self) -> str:
        since = f", since {self.since}" if self.since else ""
        return f"pid {self.pid} on host {self.host}{since}"


class RunLockedError(ValueError):
    """Another live process holds the run directory (the CLI prints it as a user error).

    Attributes:
        run_dir: the directory.
        holder: the holder named in the lock file (None if unreadable).
        lock_file: the lock file's path.
    """

    def __init__(self, run_dir: Path, holder: LockHolder | None, lock_file: Path, hint: str):
        self.run_dir, self.holder, self.lock_file = run_dir, holder, lock_file
        who = str(holder) if holder is not None else "another process (unreadable lock file)"
        super().__init__(
            f"run directory {run_dir} is in use by {who} (lock file {lock_file}); "
            f"one run per directory: {hint}"
        )


def _hostname() -> str:
    return socket.gethostname() or "unknown-host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:  # pragma: no cover - e.g. a pid the platform rejects
        return False
    return True


def read_holder(lock_file: str | Path) -> LockHolder | None:
    """The holder named in a lock file, or None if it is missing, empty or unreadable."""
    try:
        with open(lock_file, "rb") as f:
            raw = f.read(4096)
        obj = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    pid, host = obj.get("pid"), obj.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(host, str):
        return None
    since = obj.get("since")
    return LockHolder(pid, host, since if isinstance(since, str) else "")


class _Held:
    """The process's one open, locked file descriptor for a run directory."""

    def __init__(self, fd: int) -> None:
        self.fd, self.count = fd, 0


_REGISTRY: dict[tuple[int, str], _Held] = {}
_REGISTRY_LOCK = threading.Lock()


class RunLock:
    """Exclusive lock on a run directory; a context manager.

    >>> with RunLock("runs/copy"):          # doctest: +SKIP
    ...     trainer.fit()

    Args:
        run_dir: the run directory (created if missing).

    Attributes:
        run_dir: the directory.
        path: the lock file, ``run_dir/run.lock``.
        took_os_lock: whether the last :meth:`acquire` took the lock from the OS (False when
            this process already held it: re-entrant).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.took_os_lock = False
        self._key: tuple[int, str] | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._key is not None

    def acquire(self) -> RunLock:
        """Take the lock (a no-op if this object already holds it).

        Returns:
            self.

        Raises:
            RunLockedError: another live process holds it.
            OSError: the directory or lock file cannot be created.
        """
        if self._key is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        key = (os.getpid(), os.path.realpath(self.run_dir))
        with _REGISTRY_LOCK:
            held = _REGISTRY.get(key)
            self.took_os_lock = held is None
            if held is None:
                held = _REGISTRY[key] = _Held(self._lock_os())
            held.count += 1
        self._key = key
        return self

    def release(self) -> None:
        """Give the lock back (a no-op if not held). The file stays, emptied, so that waiting
        processes and the next run open the same file."""
        key, self._key = self._key, None
        if key is None:
            return
        with _REGISTRY_LOCK:
            held = _REGISTRY[key]
            held.count -= 1
            if held.count > 0 or key[0] != os.getpid():
                return
            del _REGISTRY[key]
        try:
            os.ftruncate(held.fd, 0)
            if fcntl is not None:
                fcntl.flock(held.fd, fcntl.LOCK_UN)
        except OSError:  # pragma: no cover - closing releases the lock anyway
            pass
        finally:
            os.close(held.fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.run_dir)!r}, held={self.held})"

    # -- the OS lock -------------------------------------------------------------------------
    def _lock_os(self) -> int:
        fd = open_run_file(self.path, os.O_RDWR)
        try:
            if os.fstat(fd).st_size and read_holder(self.path) is None:
                # A file with other content under the lock's name (a user's file, or a
                # damaged lock): truncating it would destroy data qkv did not write.
                raise UnsafeRunFileError(
                    f"{self.path} is not a qkv lock file (it holds other data, which taking "
                    "the lock would erase): move it away, or choose another output directory"
                )
            flocked = self._flock(fd)
            previous = read_holder(self.path)
            if previous is not None and not flocked:
                self._check_stale_without_flock(previous)
            if previous is not None:
                warnings.warn(
                    f"{self.path}: taking over the stale lock of {previous}, which is no "
                    "longer running (it ended without releasing the lock)",
                    RuntimeWarning,
                    stacklevel=4,
                )
            self._write_holder(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _flock(self, fd: int) -> bool:
        """True if the kernel lock was taken; False if the filesystem has no flock."""
        if fcntl is None:  # pragma: no cover - Windows
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                self.run_dir,
                read_holder(self.path),
                self.path,
                "wait for that run to end, or choose another output directory",
            ) from None
        except OSError:  # pragma: no cover - e.g. ENOLCK on some network filesystems
            return False
        return True

    def _check_stale_without_flock(self, previous: LockHolder) -> None:  # pragma: no cover
        here = _hostname()
        if previous.host == here and previous.pid != os.getpid() and _pid_alive(previous.pid):
            raise RunLockedError(self.run_dir, previous, self.path, "wait for that run to end")
        if previous.host != here:
            raise RunLockedError(
                self.run_dir,
                previous,
                self.path,
                f"qkv cannot tell from {here} whether it still runs; if it does not, "
                f"delete {self.path}",
            )

    def _write_holder(self, fd: int) -> None:
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        data: dict[str, Any] = {"pid": os.getpid(), "host": _hostname(), "since": since}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(data) + "\n").encode(), 0)
        os.fsync(fd)


__all__ = ["LOCK_FILE", "LockHolder", "RunLock", "RunLockedError", "read_holder"]
