"""The default ``--threads`` of ``qkv train|eval|generate|viz|bench``: the cores this process
may use less the cores other work keeps busy now, at least 1.

Why not torch's default (one thread per core): torch's intra-op pool spins its threads at
every parallel region's end, so beside other busy processes an oversubscribed pool collapses.
On a shared 2-core machine beside 4 busy loops, ``digits --max-time 30s`` made 47-51 steps
with both cores' threads and 223-227 with ``--threads 1``.

How the busy cores are counted: on Linux, from ``/proc/stat`` over :data:`SAMPLE_SECONDS`,
on the CPUs of this process's affinity set only (what runs there now competes with us; what
runs on the host's other CPUs does not). The load average (``os.getloadavg()``), the
fallback elsewhere, is a one-minute damped mean: it still counts a command that ended a
minute ago (so a quiet machine would get one thread) and hardly counts loops started seconds
ago (so a busy one would get every core), and in a container it counts the whole host.

``OMP_NUM_THREADS``, when set, wins (``torchrun`` sets it to 1 per process; the test suite
to 1 per worker): torch reads it too, and whoever set it chose. ``--threads N`` wins over
everything.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

#: Seconds over which the busy cores are measured (/proc/stat counts in 1/100 s ticks).
SAMPLE_SECONDS = 0.2


@dataclass(frozen=True)
class ThreadChoice:
    """How many torch threads a command uses, and why.

    Attributes:
        threads: the count.
        how: ``"given"`` (``--threads``), ``"env"`` (``OMP_NUM_THREADS``) or ``"measured"``.
        cores: the cores this process may use (measured choices).
        busy: the cores other work kept busy (measured choices).
        quota: the cgroup's CPU quota in cores, when one bounds the count.
    """

    threads: int
    how: str
    cores: int = 0
    busy: float = 0.0
    quota: int | None = None

    def note(self) -> str:
        """``1 thread: 2 cores, 1.9 busy now`` (what the header says after the device)."""
        plural = "" if self.threads == 1 else "s"
        if self.how == "given":
            return f"{self.threads} thread{plural}"
        if self.how == "env":
            return f"{self.threads} thread{plural}: OMP_NUM_THREADS"
        quota = f", a quota of {self.quota}" if self.quota is not None else ""
        return (
            f"{self.threads} thread{plural}: {self.cores} core{'' if self.cores == 1 else 's'}, "
            f"{self.busy:.1f} busy now{quota}; --threads N to set"
        )


def affinity_cpus() -> list[int] | None:
    """The CPUs this process may run on (None: no affinity call here)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return None


def quota_cores() -> int | None:
    """The cgroup's CPU quota in whole cores, rounded up (None: no quota, or unreadable)."""
    for path, split in (
        (Path("/sys/fs/cgroup/cpu.max"), None),  # cgroup v2: "quota period" or "max period"
        (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), "cpu.cfs_period_us"),  # cgroup v1
    ):
        try:
            text = path.read_text().split()
            if split is None:
                quota, period = text[0], text[1]
            else:
                quota, period = text[0], (path.parent / split).read_text().strip()
            if quota in ("max", "-1"):
                return None
            return max(1, math.ceil(int(quota) / int(period)))
        except (OSError, ValueError, IndexError, ZeroDivisionError):
            continue
    return None


def cpu_ticks(stat: str, cpus: list[int]) -> dict[int, tuple[int, int]]:
    """``cpu -> (busy ticks, all ticks)`` of ``cpus`` in the text of ``/proc/stat`` (busy:
    user, nice, system, irq, softirq and steal; idle and iowait are not)."""
    wanted, out = set(cpus), {}
    for line in stat.splitlines():
        name, *fields = line.split() or [""]
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in wanted:
            continue
        if len(fields) >= 5:
            ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
            out[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


def _read_stat() -> str | None:
    try:
        return Path("/proc/stat").read_text()
    except OSError:
        return None


def busy_cores(cpus: list[int] | None, seconds: float = SAMPLE_SECONDS) -> float | None:
    """The cores of ``cpus`` that other work kept busy over ``seconds`` (this process sleeps
    meanwhile), from ``/proc/stat``; None where it cannot be read."""
    if not cpus:
        return None
    first = _read_stat()
    if first is None or not cpu_ticks(first, cpus):
        return None
    time.sleep(seconds)
    second = _read_stat()
    if second is None:
        return None
    before, after = cpu_ticks(first, cpus), cpu_ticks(second, cpus)
    busy = 0.0
    for cpu, (b0, t0) in before.items():
        b1, t1 = after.get(cpu, (b0, t0))
        if t1 > t0:
            busy += (b1 - b0) / (t1 - t0)
    return busy


def load_average() -> float:
    """The one-minute load average (0 where there is none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def choose_threads(given: int | None = None) -> ThreadChoice:
    """The torch threads of a command (see the module docstring for the rule).

    Args:
        given: ``--threads``, when given.

    Returns:
        The count and why.
    """
    if given:
        return ThreadChoice(given, "given")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return ThreadChoice(int(env), "env")
    cpus = affinity_cpus()
    cores = len(cpus) if cpus is not None else (os.cpu_count() or 1)
    busy = busy_cores(cpus)
    if busy is None:
        busy = load_average()
    free = cores - math.floor(busy + 0.5)  # half a core busy counts as one
    quota = quota_cores()
    if quota is not None and quota < free:
        free = quota
    else:
        quota = None  # no quota, or one that does not bound the count
    return ThreadChoice(max(1, free), "measured", cores=cores, busy=busy, quota=quota)


__all__ = [
    "SAMPLE_SECONDS",
    "ThreadChoice",
    "affinity_cpus",
    "busy_cores",
    "choose_threads",
    "cpu_ticks",
    "load_average",
    "quota_cores",
]
