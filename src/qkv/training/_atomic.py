"""Crash-safe filesystem steps for checkpoints.

Every change a reader can see is one ``rename(2)``: a finished directory is moved to a name
nothing points to yet (:func:`publish_dir`), a pointer (a small file or a symbolic link) is
switched with ``os.replace`` (:func:`replace_text_file`, :func:`replace_symlink`), and a
directory is deleted by first renaming it to an ``.old-*`` name (:func:`remove_dir`), so that
a crash never leaves a half-written or half-deleted directory under a name that is read.
Before each rename the data it publishes is fsync'ed, and after it the parent directory.
Debris of a crash (``.tmp-*``, ``.old-*`` and temporary pointers) carries a dot prefix that
no reader follows; :func:`qkv.training.rundir.clean_run_dir` removes it at the next start.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path

from qkv.data._saves import fsync_path
from qkv.data.outfiles import (
    UnsafeRunFileError,
    append_run_file,
    check_run_file,
    open_run_file,
)

#: Prefix of directories being written (removed at the next start when a crash left them).
TMP_PREFIX = ".tmp-"
#: Prefix of directories being deleted.
OLD_PREFIX = ".old-"
#: ``name`` or ``name.<version>``: a re-saved directory gets the next free version.
VERSIONED = re.compile(r"^(?P<base>[^.][^/\\]*?)(?:\.(?P<version>\d+))?$")


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (bottom-up), ``root`` included."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))


def make_temp_dir(parent: Path, name: str) -> Path:
    """A new empty ``parent/.tmp-<name>-<random>`` directory."""
    return Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}-", dir=parent))


def version_of(name: str) -> tuple[str, int] | None:
    """``("step-00000100", 2)`` for ``"step-00000100.2"``; version 0 without a suffix; None
    for names that start with a dot (debris and temporaries)."""
    m = VERSIONED.match(name)
    if m is None:
        return None
    return m["base"], int(m["version"] or 0)


def fresh_name(parent: Path, base: str) -> str:
    """``base`` if ``parent/base`` does not exist, else ``base.1``, ``base.2``, ... the first
    free one: a name no pointer can name yet."""
    if not os.path.lexists(parent / base):
        return base
    version = 1
    while os.path.lexists(parent / f"{base}.{version}"):
        version += 1
    return f"{base}.{version}"


def publish_dir(tmp: Path, parent: Path, base: str) -> Path:
    """Move the finished (already fsync'ed) directory ``tmp`` to a fresh name under ``parent``.

    Args:
        tmp: a complete directory on the same filesystem as ``parent``.
        parent: where it is published.
        base: the wanted name; ``base.N`` when ``base`` is taken (see :func:`fresh_name`).

    Returns:
        The published path.
    """
    final = parent / fresh_name(parent, base)
    os.rename(tmp, final)
    fsync_path(parent)
    return final


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def replace_text_file(path: Path, text: str) -> None:
    """Atomically make ``path`` hold ``text``: a temporary sibling is written, fsync'ed and
    renamed over ``path`` with ``os.replace``, then the directory is fsync'ed."""
    tmp = _temp_sibling(path)
    try:
        with open(tmp, "x", encoding="utf-8") as f:  # "x": never through a planted name
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        discard_file(tmp)
        raise
    fsync_path(path.parent)


def replace_symlink(path: Path, target: str) -> None:
    """Atomically make ``path`` a symbolic link to ``target`` (relative to ``path.parent``).

    A real directory at ``path`` (written by qkv before links were used) is first renamed to
    an ``.old-*`` sibling, the one moment ``path`` is missing, and deleted after the switch.

    Raises:
        OSError: the filesystem or platform has no symbolic links (the caller falls back).
    """
    tmp = _temp_sibling(path)
    os.symlink(target, tmp)
    trash: Path | None = None
    try:
        if path.is_dir() and not path.is_symlink():
            trash = trash_path(path)
            os.rename(path, trash)
        os.replace(tmp, path)
    except BaseException:
        try:
            if trash is not None and not os.path.lexists(path):
                os.rename(trash, path)  # put the old directory back
                trash = None
        except Exception:  # best effort: the old directory survives as .old-*
            pass
        discard_file(tmp)
        raise
    fsync_path(path.parent)
    if trash is not None:
        discard_dir(trash)


def trash_path(path: Path) -> Path:
    """A fresh ``.old-<name>-<random>`` sibling name for a directory about to be deleted."""
    return path.with_name(f"{OLD_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")


def remove_dir(path: Path) -> None:
    """Delete a directory so that a crash cannot leave it half-deleted under its name: it is
    renamed to ``.old-<name>-<random>`` (and the parent fsync'ed) before ``rmtree``.

    Raises:
        OSError: the rename failed (``path`` is then untouched). Failures of the deletion
            itself are ignored: the ``.old-*`` debris is removed at the next start.
    """
    trash = trash_path(path)
    os.rename(path, trash)
    fsync_path(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def discard_published(path: Path) -> None:
    """Best-effort :func:`remove_dir` of a directory already under a readable name, when a
    save fails before its pointer switched (never raises; leftovers go at the next start)."""
    try:
        remove_dir(path)
    except Exception:  # best effort: the original error is the one worth raising
        pass


def discard_dir(path: Path) -> None:
    """Best-effort ``rmtree`` for cleaning up after a failure (never raises)."""
    try:
        shutil.rmtree(path, ignore_errors=True)
    except Exception:  # best effort: the original error is the one worth raising
        pass


def discard_file(path: Path) -> None:
    """Best-effort unlink for cleaning up after a failure (never raises)."""
    try:
        os.unlink(path)
    except Exception:  # best effort: the original error is the one worth raising
        pass


def remove_quietly(path: Path, why: str) -> bool:
    """:func:`remove_dir` after a commit: a failure only warns (the directory is debris that
    the next start removes) and returns False.

    Args:
        path: the directory to delete.
        why: what it is, for the warning (``"old checkpoint"``).
    """
    try:
        remove_dir(path)
    except OSError as e:
        warnings.warn(
            f"could not remove {why} {path} ({e}); it will be removed at the next start",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


__all__ = [
    "OLD_PREFIX",
    "TMP_PREFIX",
    "UnsafeRunFileError",
    "append_run_file",
    "check_run_file",
    "discard_dir",
    "discard_file",
    "discard_published",
    "fresh_name",
    "fsync_path",
    "fsync_tree",
    "make_temp_dir",
    "open_run_file",
    "publish_dir",
    "remove_dir",
    "remove_quietly",
    "replace_symlink",
    "replace_text_file",
    "trash_path",
    "version_of",
]
