"""Attention benchmark: time and peak memory against sequence length, per backend and mask.

Every measurement runs ``qkv.attention`` on random ``(b, h, s, d_h)`` inputs with one of
the masks below and one backend, either forward only (inference, under ``no_grad``) or
forward + backward (``out.backward(ones)``), and reports the median wall time over
``repeats`` runs after ``warmup`` runs.

Peak memory:

* CPU: each measurement runs in a fresh Python subprocess and reports the growth of the
  process's peak resident set size (Linux's ``VmHWM``, else ``ru_maxrss``:
  :func:`qkv.bench._memory.maxrss_bytes`) from just after the inputs are built to the end
  of the runs: everything the backend allocates, including its outputs and gradients, but
  neither the inputs nor the interpreter.
* CUDA: ``torch.cuda.max_memory_allocated()`` above the memory held before the runs.

Configurations whose estimated memory exceeds the limit (by default 80 % of the available
memory) are not run and reported as ``n/a`` with the reason, as are backends that cannot run
the problem (their ``why_not``).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from qkv import masks
from qkv._checks import check_int
from qkv.attn import attention, make_problem, pick_backend
from qkv.bench._isolate import run_isolated, serve
from qkv.bench._memory import maxrss_bytes

#: Mask names accepted by ``masks=``.
MASKS: dict[str, str] = {
    "none": "no mask",
    "causal": "causal()",
    "window": "sliding_window(window, causal=True) (Mistral)",
    "local": "sliding_window(window) (Longformer, symmetric)",
    "bigbird": "bigbird(block=64, window_blocks=3, global_blocks=1, random_blocks=3)",
}
#: Backends accepted by ``impls=`` (``math`` is the naive reference, ``sdpa`` dense masked).
IMPLS: tuple[str, ...] = ("math", "sdpa", "flex", "blocksparse")
MODES: tuple[str, ...] = ("fwd", "fwdbwd")
Mode = Literal["fwd", "fwdbwd"]


@dataclass
class AttentionBenchConfig:
    """What to measure.

    Attributes:
        lengths: sequence lengths ``s`` (self-attention, ``s_q = s_k = s``).
        masks: names from :data:`MASKS`.
        window: window size of the ``window`` and ``local`` masks.
        impls: backends from :data:`IMPLS`.
        n_heads: ``h``.
        head_dim: ``d_h``.
        batch_size: ``b``.
        modes: ``"fwd"`` and/or ``"fwdbwd"``.
        repeats: timed runs per measurement (fewer when one run takes more than
            ``time_budget / repeats`` seconds; at least 1).
        warmup: untimed runs first (compilation, allocator warm-up).
        time_budget: seconds of timed runs per measurement, roughly.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        device: ``"cpu"`` or ``"cuda"``.
        threads: ``torch.set_num_threads`` (CPU); ``None`` keeps the default.
        isolate: run each measurement in a fresh subprocess (needed for CPU peak memory;
            with ``False`` CPU memory is not measured).
        memory_limit: bytes a measurement may be estimated to need; ``None`` = 80 % of
            the available memory.
    """

    lengths: tuple[int, ...] = (1024, 4096, 16384)
    masks: tuple[str, ...] = ("causal", "window", "bigbird")
    window: int = 256
    impls: tuple[str, ...] = IMPLS
    n_heads: int = 8
    head_dim: int = 64
    batch_size: int = 1
    modes: tuple[str, ...] = MODES
    repeats: int = 3
    warmup: int = 1
    time_budget: float = 60.0
    dtype: str = "float32"
    device: str = "cpu"
    threads: int | None = None
    isolate: bool = True
    memory_limit: float | None = None

    def __post_init__(self) -> None:
        for name, values, known in (
            ("masks", self.masks, tuple(MASKS)),
            ("impls", self.impls, IMPLS),
            ("modes", self.modes, MODES),
        ):
            bad = [x for x in values if x not in known]
            if bad or not values:
                raise ValueError(
                    f"{name} must be a non-empty subset of {list(known)}, got {list(values)}"
                )
        for name in ("window", "n_heads", "head_dim", "batch_size", "repeats"):
            check_int(name, getattr(self, name))
        if not self.lengths or any(not isinstance(s, int) or s <= 0 for s in self.lengths):
            raise ValueError(f"lengths must be positive ints, got {list(self.lengths)}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.threads is not None:
            check_int("threads", self.threads)


@dataclass
class Measurement:
    """One row of the benchmark. Ratios compare with ``sdpa`` on the same row key."""

    length: int
    mask: str
    impl: str
    mode: str
    status: Literal["ok", "n/a", "error"]
    reason: str = ""
    time_s: float | None = None
    time_min_s: float | None = None
    repeats: int = 0
    peak_bytes: int | None = None
    speedup_vs_sdpa: float | None = None
    memory_vs_sdpa: float | None = None


@dataclass
class AttentionBenchResult:
    """Everything a run produced; :meth:`to_json` is what ``--json`` writes."""

    config: AttentionBenchConfig
    measurements: list[Measurement] = field(default_factory=list)
    memory_method: str = ""
    environment: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "memory_method": self.memory_method,
            "environment": self.environment,
            "results": [asdict(m) for m in self.measurements],
        }


# ---------------------------------------------------------------------------------------
# one measurement
# ---------------------------------------------------------------------------------------
def make_mask(name: str, window: int) -> Any:
    """The :mod:`qkv.masks` object for a mask name of :data:`MASKS`."""
    if name == "none":
        return None
    if name == "causal":
        return masks.causal()
    if name == "window":
        return masks.sliding_window(window, causal=True)
    if name == "local":
        return masks.sliding_window(window)
    if name == "bigbird":
        return masks.bigbird(64, 3, 1, 3, seed=0)
    raise ValueError(f"mask must be one of {list(MASKS)}, got {name!r}")


def estimate_bytes(impl: str, mode: str, b: int, h: int, s: int, d: int, itemsize: int) -> int:
    """Rough peak memory of one measurement, to skip what cannot fit (not a prediction).

    Dense backends hold ``(b, h, s, s)`` scores (``math``: scores, masked scores and weights;
    ``sdpa`` on CPU with a mask and gradients falls back to a composite that also holds
    them) plus ``(s, s)`` bool masks; the sparse ones hold a few ``(b, h, s, d)`` tensors.
    """
    io = 4 * b * h * s * d * itemsize * (2 if mode == "fwdbwd" else 1)  # out (+ grads), copies
    scores = b * h * s * s * itemsize
    if impl == "math":
        return io + (6 if mode == "fwdbwd" else 3) * scores + 2 * s * s
    if impl == "sdpa":
        return io + (scores if mode == "fwdbwd" else 0) + 6 * s * s
    return 2 * io + (64 << 20)


def _available_bytes(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this process (the body of a subprocess when isolated).

    Args:
        spec: ``{"length", "mask", "impl", "mode", "window", "n_heads", "head_dim", "batch_size",
            "repeats", "warmup", "time_budget", "dtype", "device", "threads",
            "measure_memory"}``.

    Returns:
        ``{"status", "reason", "times", "peak_bytes"}``.
    """
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    dev = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    b, h, s, d = spec["batch_size"], spec["n_heads"], spec["length"], spec["head_dim"]
    grad = spec["mode"] == "fwdbwd"
    mask = make_mask(spec["mask"], spec["window"])
    gen = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (
        torch.randn(b, h, s, d, generator=gen, dtype=dtype).to(dev).requires_grad_(grad)
        for _ in range(3)
    )
    with torch.set_grad_enabled(grad):
        reason = _why_not(make_problem, pick_backend, q, k, v, mask, spec["impl"])
    if reason is not None:
        return {"status": "n/a", "reason": reason, "times": [], "peak_bytes": None}

    def step() -> None:
        with torch.set_grad_enabled(grad):
            out = attention(q, k, v, mask, backend=spec["impl"])
            if grad:
                out.backward(torch.ones_like(out))
                q.grad = k.grad = v.grad = None
        if dev.type == "cuda":
            torch.cuda.synchronize()

    torch.ones(64, 64) @ torch.ones(64, 64)  # thread pools and BLAS buffers before the baseline
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = maxrss_bytes()
    t0 = time.perf_counter()
    for _ in range(spec["warmup"]):
        step()
    per_run = (time.perf_counter() - t0) / max(1, spec["warmup"])
    n = max(1, min(spec["repeats"], int(spec["time_budget"] / max(per_run, 1e-9))))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak: int | None = None
    if dev.type == "cuda":
        peak = int(torch.cuda.max_memory_allocated() - base)
    elif spec.get("measure_memory"):
        peak = maxrss_bytes() - base
    return {"status": "ok", "reason": "", "times": times, "peak_bytes": peak}


def _why_not(
    make_problem: Callable, pick_backend: Callable, q, k, v, mask, impl: str
) -> str | None:
    try:
        pick_backend(make_problem(q, k, v, mask), impl)
    except ValueError as e:
        return str(e).split(": ", 1)[-1]
    return None


def _worker() -> None:
    """Subprocess entry point: one JSON spec on stdin, one JSON result on stdout."""
    serve(measure)


def _measure_isolated(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    return run_isolated("qkv.bench.attention", spec, timeout)


# ---------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------
def run_attention_bench(
    config: AttentionBenchConfig, progress: Callable[[Measurement], None] | None = None
) -> AttentionBenchResult:
    """Measure every (length, mask, mode, impl) of ``config``.

    Args:
        config: what to measure.
        progress: called with each finished :class:`Measurement` (e.g. to print it).

    Returns:
        The measurements, with ratios to ``sdpa`` filled in where both ran.

    Raises:
        ValueError: CUDA asked for but not available.
    """
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False")
    limit = config.memory_limit or 0.8 * _available_bytes(config.device)
    itemsize = torch.empty((), dtype=getattr(torch, config.dtype)).element_size()
    on_cpu = config.device == "cpu"
    if not on_cpu:
        method = "torch.cuda.max_memory_allocated() above the memory held before the runs"
    elif config.isolate:
        method = (
            "growth of peak RSS (VmHWM) in a fresh subprocess per measurement, after inputs "
            "are built"
        )
    else:
        method = "not measured (isolate=False on CPU)"
    result = AttentionBenchResult(
        config,
        memory_method=method,
        environment={
            "torch": torch.__version__,
            "device": config.device,
            "threads": config.threads or torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
    )
    for s in config.lengths:
        for mask in config.masks:
            for mode in config.modes:
                for impl in config.impls:
                    need = estimate_bytes(
                        impl, mode, config.batch_size, config.n_heads, s, config.head_dim, itemsize
                    )
                    if need > limit:
                        m = Measurement(
                            s,
                            mask,
                            impl,
                            mode,
                            "n/a",
                            f"needs ~{need / 2**30:.1f} GiB > limit {limit / 2**30:.1f} GiB",
                        )
                    else:
                        spec = {
                            **{
                                k: getattr(config, k)
                                for k in (
                                    "window",
                                    "n_heads",
                                    "head_dim",
                                    "batch_size",
                                    "repeats",
                                    "warmup",
                                    "time_budget",
                                    "dtype",
                                    "device",
                                    "threads",
                                )
                            },
                            "length": s,
                            "mask": mask,
                            "impl": impl,
                            "mode": mode,
                            "measure_memory": on_cpu and config.isolate,
                        }
                        timeout = 20 * config.time_budget + 600
                        r = _measure_isolated(spec, timeout) if config.isolate else measure(spec)
                        times = r["times"]
                        m = Measurement(
                            s,
                            mask,
                            impl,
                            mode,
                            r["status"],
                            r["reason"],
                            statistics.median(times) if times else None,
                            min(times) if times else None,
                            len(times),
                            r["peak_bytes"],
                        )
                    result.measurements.append(m)
                    if progress is not None:
                        progress(m)
    _fill_ratios(result.measurements)
    return result


def _fill_ratios(rows: Sequence[Measurement]) -> None:
    ref = {(m.length, m.mask, m.mode): m for m in rows if m.impl == "sdpa" and m.status == "ok"}
    for m in rows:
        r = ref.get((m.length, m.mask, m.mode))
        if r is None or m.status != "ok":
            continue
        if r.time_s and m.time_s:
            m.speedup_vs_sdpa = r.time_s / m.time_s
        if r.peak_bytes and m.peak_bytes is not None:
            m.memory_vs_sdpa = m.peak_bytes / r.peak_bytes


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{spec}}{suffix}"


def format_table(result: AttentionBenchResult) -> str:
    """A plain-text table of the measurements (one row each) and the memory method."""
    head = ("length", "mask", "mode", "impl", "time ms", "x sdpa", "peak MiB", "mem/sdpa", "note")
    rows = [head]
    for m in result.measurements:
        rows.append(
            (
                str(m.length),
                m.mask,
                m.mode,
                m.impl,
                _fmt(None if m.time_s is None else m.time_s * 1e3, ".1f"),
                _fmt(m.speedup_vs_sdpa, ".2f", "x"),
                _fmt(None if m.peak_bytes is None else m.peak_bytes / 2**20, ".1f"),
                _fmt(m.memory_vs_sdpa, ".3f"),
                m.reason.split(";")[0] if m.status != "ok" else "",  # full reason in the JSON
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = [
        "  ".join(
            c.rjust(w) if i in (0, 4, 5, 6, 7) else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths))
        )
        + "  "
        + r[-1]
        for r in rows
    ]
    cfg = result.config
    env = result.environment
    info = (
        f"b={cfg.batch_size} h={cfg.n_heads} d_h={cfg.head_dim} {cfg.dtype} on {cfg.device} "
        f"({env.get('threads')} threads, torch {env.get('torch')}); window={cfg.window}; "
        f"fwd = inference under no_grad, fwdbwd = forward + backward"
    )
    return "\n".join([info, f"peak memory: {result.memory_method}", "", *lines])
