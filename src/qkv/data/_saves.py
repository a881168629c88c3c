"""Crash-safe saves into a directory, at the lowest layer so that every reader can use them.

Two steps a reader can rely on:

* :func:`replace_file` writes one file (a tokenizer's ``tokenizer.json``) into a hidden
  temporary sibling, flushes it and renames it over the file with ``os.replace``: a crash
  at any instant leaves the old file or the new one, never a truncated one. A crash before
  the rename leaves only the hidden ``.NAME-*`` sibling, which no reader opens.
* :func:`finish_pending_save` completes a multi-file save (``save_pretrained``: weights,
  config, tokenizer) that committed its files as ``directory/.save-pending/`` and was
  interrupted while moving them into place. Every reader of such a directory calls it
  first (the model's and the tokenizer's alike), so that the files it reads are all of
  one save.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

#: A save's complete, flushed files are renamed to ``directory/.save-pending/`` in one step:
#: the commit point. They are then moved into ``directory`` one by one; whoever opens the
#: directory next (a reader or the next save) finishes an interrupted move first, so a crash
#: at any instant leaves either the old files or the new ones, never new weights beside an
#: old config or tokenizer.
PENDING_DIR = ".save-pending"
#: The file moved last out of a pending save: a model's ``config.json`` says which model the
#: weights are, so it must not name the new model before the new weights are in place.
LAST_FILE = "config.json"


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's data and metadata to disk.

    Directories cannot be opened on some platforms (Windows); there it is a no-op.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):  # pragma: no cover - no directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str | Path, data: bytes) -> Path:
    """Atomically make ``path`` hold ``data``: a hidden temporary sibling is written with
    ``O_EXCL`` (never through a planted name), fsync'ed and renamed over ``path``, then the
    directory is fsync'ed. A link at ``path`` is replaced, never written through.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OSError: the directory cannot be written (the old file is then untouched).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:  # never written, or already renamed
            pass
        raise
    fsync_path(path.parent)
    return path


def _publish_order(p: Path) -> tuple[bool, str]:
    return p.name == LAST_FILE, p.name


def finish_pending_save(directory: str | Path) -> None:
    """Complete a save that was interrupted after its commit point (see :data:`PENDING_DIR`).

    Idempotent and safe to run twice at once (a file already moved is skipped).

    Raises:
        ValueError: naming the directory, when the files cannot be moved (a read-only copy
            of a directory whose save was interrupted).
    """
    d = Path(directory)
    pending = d / PENDING_DIR
    if not pending.is_dir():
        return
    try:
        for entry in sorted(pending.iterdir(), key=_publish_order):
            target = d / entry.name
            try:
                if entry.is_dir() and target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                os.replace(entry, target)
            except FileNotFoundError:  # another process finished this file meanwhile
                continue
        fsync_path(d)
        pending.rmdir()
    except FileNotFoundError:
        return
    except OSError as e:
        raise ValueError(
            f"{d} holds an interrupted save ({pending}) that cannot be completed ({e}); "
            f"its complete new files are in {pending}"
        ) from None


__all__ = ["LAST_FILE", "PENDING_DIR", "finish_pending_save", "fsync_path", "replace_file"]
