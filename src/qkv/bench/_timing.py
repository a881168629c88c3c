"""Timing, rows and results shared by the peer benchmarks (``qkv bench peers``, ``train``,
``generate``, ``record``).

Every peer benchmark times qkv and its peers **in one process, on the same inputs, with the
same thread settings**, and interleaves them: after ``warmup`` untimed calls of each, round
``r`` times every function once, starting at a different one each round. Load from other
processes then falls on all of them alike, and each round gives one paired ratio
``time(peer) / time(qkv)``; the reported ratio is the median of those per-round ratios
(:func:`paired_ratio`), which is steadier on a busy machine than a ratio of medians. A time
budget lets slow references (the eager math at long lengths) sit out later rounds while the
fast implementations, whose ratios matter most, go on. Garbage collection is off while a call
is timed, as in :mod:`timeit`, and runs once per round.

Each benchmark's measurements are :class:`TimedRow` records gathered in a :class:`BenchResult`;
:func:`time_rows` times one group of rows, and ``to_json`` is what ``--json`` writes.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

import torch

from qkv._checks import check_int


@contextmanager
def num_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(n)`` (``None``: keep torch's), restoring
    the previous setting afterwards.

    Yields:
        The number of threads in effect.
    """
    before = torch.get_num_threads()
    if n is not None:
        check_int("threads", n, optional=True)
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def time_once(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn`` with the garbage collector off (the caller
    collects between calls; :func:`time_interleaved` does once per round)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        if enabled:
            gc.enable()


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 1,
    repeats: int = 3,
    time_budget: float | None = None,
    min_repeats: int = 1,
    warmup_fns: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Time several functions in interleaved rounds.

    Args:
        fns: name -> zero-argument function doing one unit of work.
        warmup: untimed calls of each function first (thread pools, allocator, lazy init).
        repeats: the most timed rounds; in round ``r`` the functions run in their order
            rotated by ``r``, so none is always first.
        time_budget: seconds the timed calls may take, roughly, shared equally by the
            functions: once a function has ``min_repeats`` times and one more call would
            take it past its share, it sits out the remaining rounds while the faster ones
            go on. Its times then pair with the first rounds of the others.
            ``None``: every function runs ``repeats`` rounds.
        min_repeats: rounds every function runs whatever the budget.
        warmup_fns: cheaper stand-ins to warm up with (default: ``fns``).

    Returns:
        name -> wall seconds of its call in each round it ran, in round order.

    Raises:
        ValueError: no functions, or non-positive ``repeats``.
    """
    if not fns:
        raise ValueError("time_interleaved needs at least one function")
    if repeats < 1 or min_repeats < 1 or warmup < 0:
        raise ValueError(
            f"repeats and min_repeats must be >= 1 and warmup >= 0, got {repeats}, "
            f"{min_repeats}, {warmup}"
        )
    names = list(fns)
    warm = warmup_fns if warmup_fns is not None else fns
    for _ in range(warmup):
        for name in names:
            time_once(warm.get(name, fns[name]))
    share = None if time_budget is None else time_budget / len(names)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        active = [
            n
            for n in names
            if r < min_repeats
            or share is None
            or sum(times[n]) + statistics.median(times[n]) <= share
        ]
        if not active:
            break
        gc.collect()  # once per round: a full collection takes ~0.2 s with torch loaded
        for name in active[r % len(active) :] + active[: r % len(active)]:
            times[name].append(time_once(fns[name]))
    return times


def paired_ratio(
    numerator: Sequence[float] | None, denominator: Sequence[float] | None
) -> float | None:
    """Median over rounds of ``numerator[i] / denominator[i]`` (``None`` without data,
    e.g. ``times.get(name)`` of a function that did not run).

    With times, ``paired_ratio(peer, qkv)`` is qkv's speed-up over the peer: > 1 means
    qkv is faster.
    """
    if not numerator or not denominator:
        return None
    pairs = [a / b for a, b in zip(numerator, denominator) if b > 0 and a > 0]
    return statistics.median(pairs) if pairs else None


def median(xs: Sequence[float]) -> float | None:
    """The median, or ``None`` for no data."""
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------------------
# rows and results
# ---------------------------------------------------------------------------------------
# keyword-only: a benchmark's row subclass still takes what it measured as its leading
# positional arguments, although these fields come first (in asdict and the JSON too)
@dataclass(kw_only=True)
class TimedRow:
    """What every peer-benchmark row records, whatever it measures: whether it ran and its
    times. Each benchmark's row subclasses it with what was measured and its ratios.

    Attributes:
        status: ``"ok"`` (runs, or ran); ``"n/a"`` (not run) or ``"error"`` with ``reason``.
        reason: why the row did not run or failed.
        time_s: median wall seconds of one call.
        time_min_s: the fastest call.
        repeats: rounds it ran.
        times_s: seconds of each round it ran, in round order (pairs with the other rows of
            its group, :func:`paired_ratio`).
    """

    status: Literal["ok", "n/a", "error"] = "ok"
    reason: str = ""
    time_s: float | None = None
    time_min_s: float | None = None
    repeats: int = 0
    times_s: list[float] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        """Mark the row as not run (``"n/a"``) because of ``reason``."""
        self.status, self.reason = "n/a", reason

    def record_times(self, times: Sequence[float]) -> None:
        """Keep the per-round ``times`` (seconds) and their median, minimum and count."""
        self.time_s, self.time_min_s, self.repeats = median(times), min(times), len(times)
        self.times_s = list(times)


class TimingSettings(Protocol):
    """The settings of a benchmark config that :func:`time_rows` passes on to
    :func:`time_interleaved`."""

    warmup: int
    repeats: int
    min_repeats: int
    time_budget: float


RowT = TypeVar("RowT", bound=TimedRow)


def time_rows(
    rows: Mapping[str, TimedRow],
    calls: Mapping[str, Callable[[], object]],
    settings: TimingSettings,
    *,
    warmup_fns: Mapping[str, Callable[[], object]] | None = None,
    catch: tuple[type[Exception], ...] = (),
) -> dict[str, list[float]]:
    """Time one group of rows in interleaved rounds and record each one's times.

    Args:
        rows: name -> row, for every name of ``calls``; rows without a call (not run) are
            left as they are.
        calls: name -> one unit of work of each row to run; none: nothing is timed.
        settings: ``warmup``, ``repeats``, ``min_repeats`` and ``time_budget`` of
            :func:`time_interleaved`.
        warmup_fns: cheaper stand-ins to warm up with (default: ``calls``).
        catch: exceptions of the timed calls (e.g. running out of memory) that mark every
            timed row ``"error"`` instead of propagating.

    Returns:
        name -> seconds of each round, for the rows that ran (empty when none did), to
        pair with :func:`paired_ratio`.
    """
    if not calls:
        return {}
    try:
        times = time_interleaved(
            calls,
            warmup=settings.warmup,
            repeats=settings.repeats,
            time_budget=settings.time_budget,
            min_repeats=settings.min_repeats,
            warmup_fns=warmup_fns,
        )
    except catch as e:
        for name in calls:
            rows[name].status = "error"
            rows[name].reason = f"{type(e).__name__}: {str(e)[:200]}"
        return {}
    for name, ts in times.items():
        rows[name].record_times(ts)
    return times


ConfigT = TypeVar("ConfigT")


@dataclass
class BenchResult(Generic[ConfigT, RowT]):
    """Everything a run produced; :meth:`to_json` is what ``--json`` writes.

    Subclasses name their benchmark in :attr:`benchmark` and may add run-wide fields,
    written by :meth:`extra_json`.

    Attributes:
        config: what was measured.
        measurements: the rows, in the order they finished.
        environment: versions, processor and threads (:func:`environment`).
    """

    benchmark: ClassVar[str]
    config: ConfigT
    measurements: list[RowT] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    def add(self, rows: Iterable[RowT], progress: Callable[[RowT], None] | None = None) -> None:
        """Append finished ``rows``, passing each to ``progress`` (e.g. to print it)."""
        for row in rows:
            self.measurements.append(row)
            if progress is not None:
                progress(row)

    def extra_json(self) -> dict[str, Any]:
        """Run-wide results of the subclass, written between the environment and the rows."""
        return {}

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready data: benchmark name, config, environment, the
        :meth:`extra_json` fields and one dict per row."""
        return {
            "benchmark": self.benchmark,
            "config": asdict(self.config),
            "environment": self.environment,
            **self.extra_json(),
            "results": [asdict(m) for m in self.measurements],
        }


def available_memory_bytes() -> int:
    """Memory the OS could still give this process (``MemAvailable`` on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 1 << 62


def cpu_model() -> str:
    """The processor's name (``model name`` of ``/proc/cpuinfo``, else ``platform``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return platform.processor() or platform.machine()


def environment(threads: int) -> dict[str, Any]:
    """What a result depends on besides its config: versions, processor, threads, load."""
    try:
        import transformers

        hf_version: str | None = transformers.__version__
    except ImportError:
        hf_version = None
    return {
        "torch": torch.__version__,
        "transformers": hf_version,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def transformers_missing() -> str | None:
    """Why the ``transformers`` peers cannot run, or ``None`` when they can."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "transformers is not installed (pip install 'qkv[hf]')"
    return None


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence ``transformers``' config warnings (e.g. token ids of a small vocabulary)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


ResultT = TypeVar("ResultT", bound=BenchResult[Any, Any])


@contextmanager
def peer_run(config: Any, result_type: Callable[..., ResultT]) -> Iterator[ResultT]:
    """The set-up every peer benchmark runs in: ``config.threads`` torch threads (restored
    afterwards), ``transformers``' config warnings silenced, and an empty result of
    ``result_type`` for ``config`` with its :func:`environment` recorded.

    >>> with peer_run(config, TrainBenchResult) as result:  # doctest: +SKIP
    ...     result.add(rows, progress)

    Yields:
        The result to fill.

    Raises:
        ValueError: ``config.threads`` is not None or a positive int.
    """
    with num_threads(config.threads) as threads, quiet_transformers():
        yield result_type(config, environment=environment(threads))


# ---------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------
def fmt(x: float | None, spec: str, suffix: str = "") -> str:
    """``x`` formatted with ``spec``, or ``-`` for ``None``/NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:{spec}}{suffix}"


def format_rows(head: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int]) -> str:
    """A plain-text table: columns ``left`` left-aligned, the others right-aligned."""
    table = [list(head), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        ).rstrip()
        for r in table
    )


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def check_subset(name: str, values: Sequence[str], known: Iterable[str]) -> None:
    """Check that ``values`` (the setting ``name``) are some of the ``known`` names.

    Raises:
        ValueError: ``values`` is empty or has an unknown name.
    """
    known = list(known)
    if not values or any(x not in known for x in values):
        raise ValueError(f"{name} must be a non-empty subset of {known}, got {list(values)}")


def check_sizes(name: str, values: Sequence[int]) -> None:
    """Check that ``values`` (the setting ``name``, e.g. lengths) are positive ints.

    Raises:
        ValueError: ``values`` is empty or one is not a positive int.
    """
    if not values or any(not isinstance(x, int) or x <= 0 for x in values):
        raise ValueError(f"{name} must be positive ints, got {list(values)}")


def check_settings(cfg: object, positive: tuple[str, ...]) -> None:
    """Validate the settings every benchmark shares: the named positive ints, ``warmup``
    (an int >= 0) and ``threads`` (None or a positive int).

    Raises:
        ValueError: naming the setting and its value.
    """
    for name in positive:
        check_int(name, getattr(cfg, name))
    check_int("warmup", cfg.warmup, 0)
    if cfg.threads is not None:  # "a positive int", not "... or None": the CLI's wording
        check_int("threads", cfg.threads)
