"""Running out of processes or threads: one wording wherever qkv starts some.

A machine (or a user's ``ulimit -u``, or a container's pid limit) that allows no more
processes or threads makes each library fail in its own way: the ``tokenizers`` package
panics in Rust (``PanicException``, which is not even an ``Exception``), ``subprocess``
raises ``[Errno 11] Resource temporarily unavailable`` with no word of what it was
starting, ``threading`` says ``can't start new thread``. The places that start processes
or threads turn these into a :class:`ResourceLimitError` saying what was being started,
the limits in force and what to do, which the CLI prints as one ``qkv: error:`` line.

This module imports nothing from qkv, so every layer may use it.
"""

from __future__ import annotations

import errno
import os
import resource
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: ``errno`` values of a ``fork``/``clone``/``pthread_create`` that ran out of room.
EXHAUSTED = (errno.EAGAIN, errno.ENOMEM)
#: What the ``tokenizers`` package's panic says when its thread pool cannot start (Rust's
#: ``ThreadPoolBuildError`` around an ``io::Error`` of ``WouldBlock``, errno 11).
_PANIC_SIGNS = ("ThreadPoolBuildError", "Resource temporarily unavailable", "os error 11")


class ResourceLimitError(OSError):
    """Processes or threads could not be started: the message says which, the limits in
    force and what to do (the CLI prints it as one ``qkv: error:`` line, exit 2)."""


def limit_library_threads(n: int) -> None:
    """Ask the libraries that start threads of their own to start at most ``n`` (what
    ``--threads N`` means beside torch's pool): ``RAYON_NUM_THREADS`` for the ``tokenizers``
    package's pool, and for ``n == 1`` ``TOKENIZERS_PARALLELISM=false`` (no pool at all).
    A value the user set in the environment wins; the ``tokenizers`` package reads them
    when it first runs in parallel."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(n))
    if n == 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def is_panic(e: BaseException) -> bool:
    """Whether ``e`` is a Rust panic raised through PyO3 (``pyo3_runtime.PanicException``, a
    ``BaseException``: ``except Exception`` lets it through)."""
    return type(e).__name__ == "PanicException"


def is_exhaustion(e: BaseException) -> bool:
    """Whether ``e`` says that no more processes or threads could be started: an ``OSError``
    of errno 11 or 12 from ``fork``, Python's ``can't start new thread``, or a panic of the
    ``tokenizers`` package whose thread pool could not be built."""
    if isinstance(e, OSError):
        return e.errno in EXHAUSTED
    if isinstance(e, RuntimeError):
        return "can't start new thread" in str(e)
    return is_panic(e) and any(sign in str(e) for sign in _PANIC_SIGNS)


def _cause(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno is not None:
        return f"Errno {e.errno}: {(e.strerror or os.strerror(e.errno)).lower()}"
    if is_panic(e) and any(sign in str(e) for sign in _PANIC_SIGNS):
        return f"Errno {errno.EAGAIN}: {os.strerror(errno.EAGAIN).lower()}"
    return " ".join(str(e).split())[:200] or type(e).__name__


def _limit(which: int) -> int | None:
    try:
        soft, _ = resource.getrlimit(which)
    except (ValueError, OSError):  # pragma: no cover - a platform without the limit
        return None
    return None if soft == resource.RLIM_INFINITY else soft


@contextmanager
def starting(what: str, fix: str) -> Iterator[None]:
    """Run a block of native code that may start threads (the ``tokenizers`` package's
    pool): when they cannot start, raise :func:`start_error` instead of the library's error.

    Rust's panic hook writes its own report to file descriptor 2 (the thread, the source
    line, a debug dump, maybe a backtrace) before Python sees the panic; that report is kept
    back while the block runs, dropped when the block failed for want of threads, and
    written out unchanged otherwise.

    Raises:
        ResourceLimitError: the block could not start its threads.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr to keep back: the report stays
        saved = None
    failed: BaseException | None = None
    with tempfile.TemporaryFile() as held:
        if saved is not None:
            os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException as e:
            failed = e
        finally:
            if saved is not None:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                if failed is None or not is_exhaustion(failed):
                    held.seek(0)
                    sys.stderr.flush()
                    os.write(2, held.read())
    if failed is not None:
        if is_exhaustion(failed):
            raise start_error(what, failed, fix) from None
        raise failed


def limits_note() -> str:
    """The limits that decide how many processes and threads may start, as a clause:
    ``"the process limit (ulimit -u) is 64"``, with the address-space limit (``ulimit -v``,
    which bounds thread stacks) when one is set."""
    nproc = _limit(resource.RLIMIT_NPROC)
    parts = [f"the process limit (ulimit -u) is {nproc:,}" if nproc is not None else
             "the process limit (ulimit -u) is unlimited, so the machine or its container "
             "(cgroup pids.max) ran out"]  # fmt: skip
    space = _limit(resource.RLIMIT_AS)
    if space is not None:
        parts.append(f"the address-space limit (ulimit -v) is {space // 2**20:,} MiB")
    return " and ".join(parts)


def check_thread_room(n: int, what: str, fix: str) -> None:
    """Refuse to go on when ``n`` more threads cannot start, found by starting ``n`` threads
    that only wait, then letting them end (a millisecond for a dozen).

    torch's CPU pool (OpenMP) starts its threads at the first parallel operation, and when
    it cannot, libgomp ends the process (``libgomp: Thread creation failed: Resource
    temporarily unavailable``, exit 1) with nothing Python can catch: the room is probed
    before, with threads of the same default stack size, so that the process limit, the
    address-space limit and a container's pid limit are all seen.

    Raises:
        ResourceLimitError: ``could not start WHAT (can't start new thread): the process
            limit (ulimit -u) is 64; raise `ulimit -u`, or FIX``.
    """
    release = threading.Event()
    started: list[threading.Thread] = []
    try:
        for _ in range(n):
            t = threading.Thread(target=release.wait, name="qkv-room-probe", daemon=True)
            t.start()
            started.append(t)
    except RuntimeError as e:
        if not is_exhaustion(e):
            raise
        raise start_error(what, e, fix) from None
    finally:
        release.set()
        for t in started:
            t.join()


def start_error(what: str, e: BaseException, fix: str) -> ResourceLimitError:
    """The error to raise (``from None``) when starting ``what`` failed with ``e``.

    Args:
        what: what was being started (``"the tokenizer's training threads"``).
        e: the library's exception (see :func:`is_exhaustion`).
        fix: what else to do, after raising the limit (``"set TOKENIZERS_PARALLELISM=false"``).

    Returns:
        ``could not start WHAT (Errno 11: resource temporarily unavailable): the process
        limit (ulimit -u) is 64; raise `ulimit -u`, or FIX``.
    """
    first = (
        "raise `ulimit -u`" if _limit(resource.RLIMIT_NPROC) is not None else "end other processes"
    )
    return ResourceLimitError(
        f"could not start {what} ({_cause(e)}): {limits_note()}; {first}, or {fix}"
    )


__all__ = [
    "EXHAUSTED",
    "ResourceLimitError",
    "check_thread_room",
    "is_exhaustion",
    "is_panic",
    "limit_library_threads",
    "limits_note",
    "start_error",
    "starting",
]
