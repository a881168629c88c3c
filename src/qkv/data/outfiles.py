"""Writing output files in place without following a link: run files and reports.

A file qkv writes under a fixed name (``run.lock``, ``metrics.jsonl`` in a run directory;
``report.html`` or ``alignment.png`` where the user points) may have been replaced by a
symbolic link, by accident or by someone sharing the directory; opening it the ordinary way
would truncate or append to the link's target, a file qkv did not create. Here the file is
opened with ``O_NOFOLLOW`` (the kernel refuses a link as the last component, with no
check-then-open race) and must then be a regular file, and for run files one with no other
hard link. Every refusal is an :class:`UnsafeRunFileError` (a ``ValueError``: the CLI prints
it as one ``qkv: error:`` line) naming the file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class UnsafeRunFileError(ValueError):
    """A file a run writes in place (``run.lock``, ``metrics.jsonl``) is a symbolic link, not
    a regular file, or a hard link shared with another name: writing it would change a file
    qkv did not create. The message names the file (the CLI prints it as a user error)."""


def _refuse(path: Path, what: str) -> UnsafeRunFileError:
    return UnsafeRunFileError(
        f"{path} is {what}; qkv writes run files only as regular files of its own and "
        "never through a link (that would overwrite another file): move it away, or choose "
        "another output directory"
    )


def open_run_file(path: str | Path, flags: int, mode: int = 0o644, *, own: bool = True) -> int:
    """Open (creating it if missing) a file that a run writes in place, never through a link.

    ``O_NOFOLLOW`` makes the kernel refuse a symbolic link as the last component (no
    check-then-open race); the opened file must then be a regular file with no other hard
    link, so that truncating or appending to it cannot reach a file someone else made.

    Args:
        path: the file.
        flags: ``os.O_RDWR``, ``os.O_WRONLY | os.O_APPEND``, ... (``O_CREAT`` is added).
        mode: permissions of a new file.
        own: also refuse a file with another hard link (a run's own files have one name;
            a user's output file may have several).

    Returns:
        An open file descriptor (the caller closes it).

    Raises:
        UnsafeRunFileError: a symbolic link, a directory, a device, a FIFO, or a hard link.
        OSError: the file cannot be opened for another reason.
    """
    path = Path(path)
    # O_NONBLOCK: opening a FIFO for writing would otherwise wait for a reader forever.
    extra = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | os.O_CREAT | extra, mode)
    except OSError as e:
        if os.path.islink(path) or e.errno == errno.ELOOP:
            raise _refuse(path, f"a symbolic link (to {os.readlink(path)})") from None
        if e.errno == errno.EISDIR or path.is_dir():
            raise _refuse(path, "a directory") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (own and st.st_nlink > 1):
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else "a hard link"
        raise _refuse(path, what + f" ({st.st_nlink} names)" * (what == "a hard link"))
    return fd


def check_run_file(path: str | Path) -> None:
    """Refuse (like :func:`open_run_file`) a run file that exists and is not a regular file
    of its own, before it is read or rewritten; a missing file passes."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, f"a symbolic link (to {os.readlink(path)})")
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, "not a regular file")
    if st.st_nlink > 1:
        raise _refuse(path, f"a hard link ({st.st_nlink} names)")


def append_run_file(path: str | Path, text: str) -> None:
    """Append ``text`` (UTF-8) to a run file opened with :func:`open_run_file`."""
    fd = open_run_file(path, os.O_WRONLY | os.O_APPEND)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(text)


def write_output_file(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to an output file the user named (a report, a figure), replacing a
    regular file's contents but never writing through a symbolic link.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        UnsafeRunFileError: ``path`` is a symbolic link, a directory or not a regular file.
    """
    path = Path(path)
    fd = open_run_file(path, os.O_WRONLY, own=False)
    with os.fdopen(fd, "wb") as f:
        f.truncate(0)
        f.write(data)
    return path


__all__ = [
    "UnsafeRunFileError",
    "append_run_file",
    "check_run_file",
    "open_run_file",
    "write_output_file",
]
