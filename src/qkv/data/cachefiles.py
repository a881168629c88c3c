"""Cache files that a crash or Ctrl-C never leaves half-written, and what a long job of
making them says on standard error.

:func:`write_atomically` writes a temporary sibling, flushes it to disk and renames it over
the target (one ``rename(2)``: a reader sees the old file or the whole new one), then
flushes the directory; the temporary file is removed when writing fails. (The training
layer's checkpoints have their own, :mod:`qkv.training._atomic`; the data layer cannot use
it.)

:class:`CountProgress` reports a count of finished items: a bar when standard error is a
terminal, else a plain line every tenth of the way, so a log file gets a few readable lines
and no carriage returns.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TextIO

from tqdm.auto import tqdm


def stderr_is_terminal() -> bool:
    """Whether standard error (where progress bars are drawn) is a terminal: redirected to a
    file, a bar's redraws would interleave the log."""
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):  # pragma: no cover - no directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Make ``path`` hold what ``write(file)`` writes, all at once or not at all.

    Args:
        path: the file to (re)place; its directory must exist.
        write: writes the content into the binary file object it is given.

    Returns:
        ``path``.

    Raises:
        Whatever ``write`` raises (the temporary file is removed, ``path`` is untouched),
        and ``OSError`` from the filesystem.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


class CountProgress:
    """Progress of ``total`` items: a bar on a terminal, else a plain line per tenth.

    Args:
        what: the line's prefix (``speech corpus: train``).
        total: items to do.
        unit: what an item is, for the lines (``utterances``).
        bar: draw a bar (default: when standard error is a terminal).
        stream: where to write (default standard error).
        enabled: False: say nothing at all.
    """

    def __init__(
        self,
        what: str,
        total: int,
        *,
        unit: str = "items",
        bar: bool | None = None,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self.what, self.total, self.unit, self.done = what, total, unit, 0
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()
        self._every = max(1, total // 10)
        use_bar = stderr_is_terminal() if bar is None else bar
        self._bar: Any = None
        if enabled and use_bar and total:
            one = unit[:-1] if unit.endswith("s") else unit
            self._bar = tqdm(total=total, desc=what, unit=one, file=self.stream, leave=False)

    def advance(self, n: int = 1) -> None:
        """``n`` more items are done."""
        before, self.done = self.done, self.done + n
        if self._bar is not None:
            self._bar.update(n)
        elif (
            self.enabled
            and self.done < self.total
            and self.done // self._every > before // self._every
        ):
            spent = time.monotonic() - self.start
            left = spent / self.done * (self.total - self.done)
            self.line(
                f"{self.done:,}/{self.total:,} {self.unit} ({format_clock(spent)} so far, "
                f"~{format_clock(left)} left)"
            )

    def line(self, text: str) -> None:
        """``<what> <text>`` on its own line (above the bar when there is one)."""
        full = f"{self.what} {text}"
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(full, file=self.stream)
        else:
            print(full, file=self.stream, flush=True)

    def close(self) -> float:
        """Remove the bar; returns the seconds since the start."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        return time.monotonic() - self.start


def format_clock(seconds: float) -> str:
    """``4:05`` (m:ss) or ``1:02:03`` (h:mm:ss)."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


__all__ = ["CountProgress", "format_clock", "stderr_is_terminal", "write_atomically"]
