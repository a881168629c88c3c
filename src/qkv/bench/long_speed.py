"""The speed section of ``qkv bench long``: one self-attention layer of each kind,
forward (+ backward) time and peak memory against sequence length. On the CPU the layers
of one (length, mode) are timed together in interleaved rounds in a fresh subprocess
(:func:`qkv.bench._timing.time_interleaved`: load falls on all of them alike, and each
speed-up is the median of per-round ratios), and each layer's peak memory comes from a
fresh subprocess of its own (so the peak resident set is the measurement's own)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from qkv import masks
from qkv.attn import FavorAttention, LinformerAttention, LSHSelfAttention, MultiHeadAttention
from qkv.bench._isolate import run_isolated, serve
from qkv.bench._memory import MMAP_ENV, peak_bytes
from qkv.bench._timing import paired_ratio, time_interleaved
from qkv.bench.attention import _available_bytes
from qkv.bench.long_config import SPEED_IMPLS, LongBenchConfig, LongRow


def build_layer(impl: str, cfg: dict[str, Any], length: int) -> tuple[nn.Module, dict[str, Any]]:
    """The attention layer of ``impl`` and the keyword arguments of its call."""
    d, h = cfg["d_model"], cfg["n_heads"]
    if impl in ("sdpa", "math"):
        return MultiHeadAttention(d, h, backend=impl), {"is_causal": True}
    if impl == "blocksparse":
        mask = masks.sliding_window(cfg["window"], causal=True)
        return MultiHeadAttention(d, h, backend="blocksparse"), {"mask": mask}
    if impl == "lsh":
        return LSHSelfAttention(d, h, bucket_size=cfg["bucket_size"], n_hashes=cfg["n_hashes"]), {
            "is_causal": True
        }
    if impl == "favor":
        return FavorAttention(d, h, n_features=cfg["favor_features"], seed=0), {"is_causal": True}
    if impl == "linformer":
        return LinformerAttention(d, h, max_len=length, k=cfg["linformer_k"]), {}
    raise ValueError(f"impl must be one of {list(SPEED_IMPLS)}, got {impl!r}")


def estimate_bytes(impl: str, mode: str, b: int, s: int, cfg: dict[str, Any], item: int) -> int:
    """Rough peak memory of one speed measurement, to skip what cannot fit (not a
    prediction): activations kept for backward, a few times the attention's own state."""
    d, h = cfg["d_model"], cfg["n_heads"]
    io = 12 * b * s * d * item * (2 if mode == "fwdbwd" else 1)
    if impl == "sdpa":  # fused kernels keep O(s); the CPU's masked fallback would keep s^2
        return io + b * h * s * 4 * 8
    if impl == "math":  # scores, weights (and their gradients)
        return io + (6 if mode == "fwdbwd" else 3) * b * h * s * s * max(item, 4)
    if impl == "blocksparse":
        return io + 4 * b * h * s * cfg["window"] * item
    if impl == "lsh":
        return io + 8 * b * h * cfg["n_hashes"] * s * 2 * cfg["bucket_size"] * 4
    if impl == "favor":
        m = cfg["favor_features"] or round((d // h) * math.log(d // h))
        return io + 8 * b * h * s * (m + 128) * 4
    return io + 4 * b * h * s * cfg["linformer_k"] * item


def _setup(spec: dict[str, Any]) -> tuple[torch.device, Callable[[], None]]:
    """The layer, its input and one call of it (forward, and backward in ``fwdbwd``)."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    dev, dtype = torch.device(spec["device"]), getattr(torch, spec["dtype"])
    torch.manual_seed(spec["seed"])
    layer, kw = build_layer(spec["impl"], spec, spec["length"])
    layer = layer.to(device=dev, dtype=dtype)
    grad = spec["mode"] == "fwdbwd"
    x = torch.randn(spec["batch_size"], spec["length"], spec["d_model"], device=dev, dtype=dtype)
    x.requires_grad_(grad)

    def step() -> None:
        with torch.set_grad_enabled(grad):
            out = layer(x, **kw)
            if grad:
                out.backward(torch.ones_like(out))
                x.grad = None
                layer.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    torch.ones(64, 64) @ torch.ones(64, 64)  # thread pools before any baseline
    return dev, step


def measure_group(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the layers of ``spec["impls"]`` at one (length, mode) in interleaved rounds in
    this process (the body of a subprocess, :func:`qkv.bench._timing.time_interleaved`):
    each layer is warmed up alone first, and one that fails there is reported and left out.

    Returns:
        ``{"status", "reason", "times", "peak_bytes", "rows"}``, ``rows``: impl ->
        ``{"status", "reason", "times"}`` (seconds of each round it ran, in round order).
    """
    rows: dict[str, dict[str, Any]] = {}
    steps: dict[str, Callable[[], None]] = {}
    for impl in spec["impls"]:
        try:
            _, step = _setup({**spec, "impl": impl})
            for _ in range(spec["warmup"]):
                step()
        except Exception as e:  # e.g. out of memory: this row fails, the others go on
            rows[impl] = {"status": "error", "reason": f"{type(e).__name__}: {e}", "times": []}
        else:
            steps[impl] = step
    if steps:
        times = time_interleaved(  # at the threads _setup set
            steps,
            warmup=0,
            repeats=spec["repeats"],
            time_budget=spec["time_budget"] * len(steps),  # each layer's share
            min_repeats=spec["min_repeats"],
        )
        rows.update({impl: {"status": "ok", "reason": "", "times": times[impl]} for impl in steps})
    return {"status": "ok", "reason": "", "times": [], "peak_bytes": None, "rows": rows}


def measure_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of one call after a first one (:func:`qkv.bench._memory.peak_bytes`),
    the body of a subprocess started with :data:`~qkv.bench._memory.MMAP_ENV` on the CPU:
    the rise of the resident set's high-water mark above the resident set after the first
    call (its one-time costs, such as libraries' buffers, left out).

    Returns:
        ``{"status", "reason", "times", "peak_bytes"}`` (no times).
    """
    dev, step = _setup(spec)
    return {"status": "ok", "reason": "", "times": [], "peak_bytes": peak_bytes(step, dev, step)}


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    return measure_memory(spec) if spec.get("memory_pass") else measure_group(spec)


def _worker() -> None:
    """Subprocess entry point: one JSON spec on stdin, one JSON result on stdout."""
    serve(_measure)


def _memory(spec: dict[str, Any], row: LongRow, timeout: float, isolate: bool) -> None:
    """``row``'s peak from :func:`measure_memory`: in a subprocess of its own with
    :data:`MMAP_ENV` (so that freed blocks leave the resident set; the timed one keeps
    glibc's default allocator), or in this process on CUDA (the allocator's counters)."""
    spec = {**spec, "impl": row.impl, "memory_pass": True}
    if isolate:
        m = run_isolated("qkv.bench.long_speed", spec, timeout, env=MMAP_ENV)
    else:
        m = measure_memory(spec)
    if m["status"] == "ok":
        row.peak_bytes = m["peak_bytes"]
    else:
        row.reason = f"memory not measured: {m['reason']}"


def run_speed(cfg: LongBenchConfig, progress: Callable[[LongRow], None] | None) -> list[LongRow]:
    """The speed section: for every (length, mode), the layers timed together in
    interleaved rounds (one subprocess with ``isolate``), then each one's peak memory;
    speed-ups are medians of per-round ratios to ``sdpa``."""
    limit = cfg.memory_limit or 0.8 * _available_bytes(cfg.device)
    item = torch.empty((), dtype=getattr(torch, cfg.dtype)).element_size()
    base = asdict(cfg)
    timeout = 20 * cfg.time_budget * len(cfg.impls) + 600
    rows: list[LongRow] = []
    for s in cfg.lengths:
        for mode in cfg.modes:
            group = {
                impl: LongRow(section="speed", impl=impl, length=s, mode=mode) for impl in cfg.impls
            }
            for impl, row in group.items():
                need = estimate_bytes(impl, mode, cfg.batch_size, s, base, item)
                if need > limit:
                    row.skip(f"needs ~{need / 2**30:.1f} GiB > limit {limit / 2**30:.1f} GiB")
            spec = {**base, "length": s, "mode": mode}
            spec["impls"] = [impl for impl, row in group.items() if row.status == "ok"]
            if spec["impls"]:
                r = (
                    run_isolated("qkv.bench.long_speed", spec, timeout)
                    if cfg.isolate
                    else measure_group(spec)
                )
                for impl in spec["impls"]:
                    got = r.get("rows", {}).get(impl, r)  # a crashed group: its reason
                    row = group[impl]
                    row.status, row.reason = got["status"], got["reason"]
                    if got["times"]:
                        row.record_times(got["times"])
                    if row.status == "ok" and (cfg.isolate or cfg.device == "cuda"):
                        _memory(spec, row, timeout, cfg.isolate)
            ref = group.get("sdpa")
            for row in group.values():
                if ref is not None and ref.status == "ok" and row.status == "ok":
                    row.speedup = paired_ratio(ref.times_s, row.times_s)
                    if ref.peak_bytes and row.peak_bytes is not None:
                        row.memory_ratio = row.peak_bytes / ref.peak_bytes
                if progress is not None:
                    progress(row)
            rows += group.values()
    return rows


__all__ = ["build_layer", "estimate_bytes", "measure_group", "measure_memory", "run_speed"]
