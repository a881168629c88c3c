"""Dense attention against the peers users would pick (``qkv bench peers``).

Two groups, each timed in interleaved rounds in one process (:mod:`qkv.bench._timing`):

* **functional**, on the same ``(b, h, s, d_h)`` queries, keys and values:
  ``qkv_auto`` (:func:`qkv.attn.attention`, ``backend="auto"``), ``qkv_math`` (the
  eager reference), ``sdpa`` (raw ``F.scaled_dot_product_attention``, the reference of the
  ratios) and ``naive`` (``softmax(Q K^T / sqrt(d_h) + M) V`` in three lines of torch);
* **module**, on the same ``(b, s, h d_h)`` input and the same weights:
  ``qkv_mha`` (:class:`qkv.attn.MultiHeadAttention`, copied from the torch module with
  :meth:`~qkv.attn.MultiHeadAttention.from_torch`) and ``torch_mha``
  (``torch.nn.MultiheadAttention(batch_first=True)`` with ``need_weights=False``, the
  reference of the ratios).

``fwd`` is inference (eval mode, ``no_grad``); ``fwdbwd`` is forward + ``backward``.

Achieved GFLOP/s count the *useful* matrix-multiply FLOPs (Dao et al. 2022's convention):
``4 b h s^2 d_h`` per attention forward, halved for a causal mask, plus ``8 b s d^2`` for the
four projections of the module group; forward + backward counts three times the forward.
Implementations that compute the masked half anyway (``naive``, ``qkv_math``) therefore
show a lower rate. The share of peak divides by the rate of a large fp32 matmul timed in
the same run (the better of one bout before and one after the attention runs).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.attn import MultiHeadAttention, attention
from qkv.bench._timing import (
    BenchResult,
    TimedRow,
    available_memory_bytes,
    check_settings,
    check_sizes,
    check_subset,
    fmt,
    format_rows,
    paired_ratio,
    peer_run,
    time_interleaved,
    time_rows,
)

#: implementation -> (group, description)
PEER_IMPLS: dict[str, tuple[str, str]] = {
    "qkv_auto": ("functional", "qkv.attention(backend='auto')"),
    "qkv_math": ("functional", "qkv.attention(backend='math'), the eager reference"),
    "sdpa": ("functional", "F.scaled_dot_product_attention"),
    "naive": ("functional", "softmax(q k^T * scale + mask) v, plain torch"),
    "qkv_mha": ("module", "qkv.attn.MultiHeadAttention"),
    "torch_mha": ("module", "torch.nn.MultiheadAttention(batch_first=True), need_weights=False"),
}
#: the reference implementation of each group (ratios are ``time(ref) / time(impl)``)
REFERENCE: dict[str, str] = {"functional": "sdpa", "module": "torch_mha"}
PEER_MASKS: tuple[str, ...] = ("causal", "none")
MODES: tuple[str, ...] = ("fwd", "fwdbwd")


@dataclass
class PeerAttentionConfig:
    """What to measure.

    Attributes:
        lengths: sequence lengths ``s`` (self-attention).
        impls: names from :data:`PEER_IMPLS`.
        mask: ``"causal"`` or ``"none"``.
        n_heads: ``h``.
        head_dim: ``d_h`` (the module group has ``d = h d_h``).
        batch_size: ``b``.
        modes: ``"fwd"`` and/or ``"fwdbwd"``.
        repeats: the most timed rounds per (length, mode).
        min_repeats: rounds every implementation runs whatever ``time_budget``.
        warmup: untimed calls of each implementation first.
        time_budget: seconds of timed calls per (length, mode), roughly, shared by the
            implementations (:func:`~qkv.bench._timing.time_interleaved`).
        matmul_size: ``n`` of the ``(n, n) @ (n, n)`` fp32 matmul that measures the peak.
        threads: ``torch.set_num_threads``; ``None`` keeps torch's.
        memory_limit: bytes one implementation may be estimated to need; ``None`` = 70 %
            of the memory available at the start.
        seed: of the random inputs and weights.
    """

    lengths: tuple[int, ...] = (512, 1024, 2048, 4096, 8192)
    impls: tuple[str, ...] = tuple(PEER_IMPLS)
    mask: str = "causal"
    n_heads: int = 8
    head_dim: int = 64
    batch_size: int = 1
    modes: tuple[str, ...] = MODES
    repeats: int = 10
    min_repeats: int = 2
    warmup: int = 1
    time_budget: float = 120.0
    matmul_size: int = 2048
    threads: int | None = None
    memory_limit: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_subset("impls", self.impls, PEER_IMPLS)
        check_subset("modes", self.modes, MODES)
        if self.mask not in PEER_MASKS:
            raise ValueError(f"mask must be one of {list(PEER_MASKS)}, got {self.mask!r}")
        check_settings(
            self, ("n_heads", "head_dim", "batch_size", "repeats", "min_repeats", "matmul_size")
        )
        check_sizes("lengths", self.lengths)


@dataclass
class PeerMeasurement(TimedRow):
    """One row: an implementation at one length and mode (status and times:
    :class:`~qkv.bench._timing.TimedRow`).

    Attributes:
        reference: the group's reference implementation.
        flops: useful FLOPs of one call (:func:`impl_flops`).
        gflops: useful GFLOP/s at the median time.
        peak_share: ``gflops`` over the run's matmul GFLOP/s.
        speedup_vs_ref: ``time(ref) / time(impl)``, the median over interleaved rounds of
            the per-round ratio (> 1: faster than the group's reference).
    """

    length: int
    mode: str
    impl: str
    group: str
    reference: str
    flops: float = 0.0
    gflops: float | None = None
    peak_share: float | None = None
    speedup_vs_ref: float | None = None


@dataclass
class PeerAttentionResult(BenchResult[PeerAttentionConfig, PeerMeasurement]):
    """What :func:`run_peer_attention_bench` measured (``--json`` writes :meth:`to_json`).

    Attributes:
        matmul_gflops: GFLOP/s of the peak matmul ``"before"`` and ``"after"`` the runs.
    """

    benchmark: ClassVar[str] = "attention-peers"
    matmul_gflops: dict[str, float] = field(default_factory=dict)

    @property
    def peak_gflops(self) -> float | None:
        """The matmul rate that shares of peak divide by (the better bout)."""
        vals = [v for v in self.matmul_gflops.values() if v]
        return max(vals) if vals else None

    def summary(self) -> dict[str, dict[str, float]]:
        """Per implementation and mode, the geometric mean over lengths of
        ``speedup_vs_ref`` (one number per goal, steadier than any single length)."""
        out: dict[str, dict[str, float]] = {}
        for impl in self.config.impls:
            for mode in self.config.modes:
                xs = [
                    m.speedup_vs_ref
                    for m in self.measurements
                    if m.impl == impl and m.mode == mode and m.speedup_vs_ref
                ]
                if xs:
                    geo = math.exp(sum(math.log(x) for x in xs) / len(xs))
                    out.setdefault(impl, {})[mode] = geo
        return out

    def extra_json(self) -> dict[str, Any]:
        """The matmul rates, the peak and the :meth:`summary`."""
        return {
            "matmul_gflops": self.matmul_gflops,
            "peak_gflops": self.peak_gflops,
            "summary_geomean_speedup": self.summary(),
        }


# ---------------------------------------------------------------------------------------
# the implementations
# ---------------------------------------------------------------------------------------
def naive_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """``softmax(q k^T / sqrt(d_h) + mask) v`` as users write it by hand (``mask``: bool,
    True = may attend)."""
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (b, h, s_q, s_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (b, h, s_q, d_h)


def attention_flops(b: int, h: int, s: int, d_h: int, *, causal: bool) -> float:
    """Useful FLOPs of one attention forward: ``Q K^T`` and ``P V``, halved when causal."""
    return 4.0 * b * h * s * s * d_h * (0.5 if causal else 1.0)


def impl_flops(impl: str, mode: str, b: int, h: int, s: int, d_h: int, *, causal: bool) -> float:
    """Useful FLOPs of one call (forward + backward = 3x forward)."""
    f = attention_flops(b, h, s, d_h, causal=causal)
    if PEER_IMPLS[impl][0] == "module":
        d = h * d_h
        f += 4 * 2.0 * b * s * d * d  # q, k, v and output projections
    return f * (3.0 if mode == "fwdbwd" else 1.0)


def estimate_bytes(impl: str, mode: str, b: int, h: int, s: int, d_h: int) -> int:
    """Rough peak memory of one call, to skip what cannot fit (not a prediction).

    ``naive`` and ``qkv_math`` hold a few ``(b, h, s, s)`` fp32 score-sized tensors (more
    with gradients); the fused paths hold ``(b, h, s, d_h)`` tensors and, for
    ``torch_mha``'s inference fast path with a mask, one score-sized tensor.
    """
    scores = 4 * b * h * s * s
    io = 4 * 4 * b * h * s * d_h * (3 if mode == "fwdbwd" else 1)
    if impl in ("naive", "qkv_math"):
        return io + (6 if mode == "fwdbwd" else 3) * scores + s * s
    if impl == "torch_mha":
        return io + scores + 4 * s * s
    return io + 2 * s * s


def matmul_gflops(n: int, repeats: int = 3) -> float:
    """GFLOP/s of an ``(n, n) @ (n, n)`` fp32 matmul: ``2 n^3`` over the median time."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    times = time_interleaved({"mm": lambda: a @ b}, warmup=1, repeats=repeats)["mm"]
    return 2.0 * n**3 / statistics.median(times) / 1e9


def _why_not_fit(
    impl: str, mode: str, cfg: PeerAttentionConfig, s: int, limit: float
) -> str | None:
    need = estimate_bytes(impl, mode, cfg.batch_size, cfg.n_heads, s, cfg.head_dim)
    if need > limit:
        return f"needs ~{need / 2**30:.1f} GiB > limit {limit / 2**30:.1f} GiB"
    return None


def _make_calls(
    impls: list[str],
    mode: str,
    s: int,
    cfg: PeerAttentionConfig,
    qkv_mha: nn.Module,
    torch_mha: nn.MultiheadAttention,
) -> dict[str, Callable[[], object]]:
    b, h, d_h = cfg.batch_size, cfg.n_heads, cfg.head_dim
    grad = mode == "fwdbwd"
    causal = cfg.mask == "causal"
    gen = torch.Generator().manual_seed(cfg.seed + s)
    q, k, v = (torch.randn(b, h, s, d_h, generator=gen).requires_grad_(grad) for _ in range(3))
    x = torch.randn(b, s, h * d_h, generator=gen).requires_grad_(grad)
    allowed = torch.ones(s, s, dtype=torch.bool).tril_() if causal else None  # True = attend
    blocked = None if allowed is None else ~allowed  # nn.MultiheadAttention: True = blocked
    for m in (qkv_mha, torch_mha):
        m.train(grad)

    def functional(impl: str) -> Tensor:
        if impl == "qkv_auto":
            return attention(q, k, v, is_causal=causal)  # type: ignore[return-value]
        if impl == "qkv_math":
            return attention(q, k, v, is_causal=causal, backend="math")  # type: ignore[return-value]
        if impl == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return naive_attention(q, k, v, allowed)

    def module(impl: str) -> Tensor:
        if impl == "qkv_mha":
            return qkv_mha(x, is_causal=causal)  # type: ignore[no-any-return]
        out, _ = torch_mha(x, x, x, attn_mask=blocked, is_causal=causal, need_weights=False)
        return out

    def call(impl: str) -> Callable[[], object]:
        run = module if PEER_IMPLS[impl][0] == "module" else functional

        def step() -> None:
            with torch.set_grad_enabled(grad):
                out = run(impl)
                if grad:
                    out.backward(torch.ones_like(out))
            if grad:
                for t in (q, k, v, x):
                    t.grad = None
                for m in (qkv_mha, torch_mha):
                    m.zero_grad(set_to_none=True)

        return step

    return {impl: call(impl) for impl in impls}


# ---------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------
def run_peer_attention_bench(
    config: PeerAttentionConfig,
    progress: Callable[[PeerMeasurement], None] | None = None,
) -> PeerAttentionResult:
    """Measure every (length, mode) of ``config`` over its implementations.

    Args:
        config: what to measure.
        progress: called with each finished :class:`PeerMeasurement`.

    Returns:
        The measurements with GFLOP/s, shares of the matmul peak and ratios to each
        group's reference filled in where it ran.
    """
    with peer_run(config, PeerAttentionResult) as result:
        result.matmul_gflops["before"] = matmul_gflops(config.matmul_size)
        limit = config.memory_limit or 0.7 * available_memory_bytes()
        gen = torch.Generator().manual_seed(config.seed)
        d = config.n_heads * config.head_dim
        with torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
            torch_mha = nn.MultiheadAttention(d, config.n_heads, batch_first=True)
        qkv_mha = MultiHeadAttention.from_torch(torch_mha)
        causal = config.mask == "causal"
        for s in config.lengths:
            for mode in config.modes:
                rows: dict[str, PeerMeasurement] = {}
                runnable: list[str] = []
                for impl in config.impls:
                    group = PEER_IMPLS[impl][0]
                    rows[impl] = PeerMeasurement(
                        s,
                        mode,
                        impl,
                        group,
                        REFERENCE[group],
                        flops=impl_flops(
                            impl,
                            mode,
                            config.batch_size,
                            config.n_heads,
                            s,
                            config.head_dim,
                            causal=causal,
                        ),
                    )
                    reason = _why_not_fit(impl, mode, config, s, limit)
                    if reason is not None:
                        rows[impl].skip(reason)
                    else:
                        runnable.append(impl)
                times: dict[str, list[float]] = {}
                if runnable:  # else not even the inputs are made
                    times = time_rows(
                        rows,
                        _make_calls(runnable, mode, s, config, qkv_mha, torch_mha),
                        config,
                        catch=(RuntimeError, MemoryError),  # e.g. out of memory
                    )
                for impl, m in rows.items():
                    if m.time_s:
                        m.gflops = m.flops / m.time_s / 1e9
                    m.speedup_vs_ref = paired_ratio(times.get(m.reference), times.get(impl))
                result.add(rows.values(), progress)
        result.matmul_gflops["after"] = matmul_gflops(config.matmul_size)
        peak = result.peak_gflops
        for m in result.measurements:
            if m.gflops is not None and peak:
                m.peak_share = m.gflops / peak
    return result


def format_peer_table(result: PeerAttentionResult) -> str:
    """A plain-text table of the measurements, with the run's settings and peak above."""
    cfg, env = result.config, result.environment
    rows = []
    for m in result.measurements:
        rows.append(
            (
                str(m.length),
                m.mode,
                m.impl,
                fmt(None if m.time_s is None else m.time_s * 1e3, ".1f"),
                fmt(m.gflops, ".1f"),
                fmt(None if m.peak_share is None else 100 * m.peak_share, ".0f", "%"),
                fmt(m.speedup_vs_ref, ".2f", "x"),
                m.reference,
                m.reason if m.status != "ok" else "",
            )
        )
    head = ("length", "mode", "impl", "time ms", "GFLOP/s", "% peak", "speed", "vs", "note")
    peak = result.peak_gflops
    info = [
        f"dense attention vs peers: b={cfg.batch_size} h={cfg.n_heads} d_h={cfg.head_dim} "
        f"mask={cfg.mask} fp32 on CPU ({env.get('threads')} threads, torch {env.get('torch')})",
        f"matmul peak ({cfg.matmul_size}^3 fp32): {fmt(peak, '.1f')} GFLOP/s "
        f"(before {fmt(result.matmul_gflops.get('before'), '.1f')}, "
        f"after {fmt(result.matmul_gflops.get('after'), '.1f')})",
        "speed = time(vs) / time(impl), median of per-round ratios; GFLOP/s count useful "
        "FLOPs (causal = half); fwd = inference, fwdbwd = forward + backward",
        "",
    ]
    summary = result.summary()
    lines = [
        f"  {impl:<10} "
        + "  ".join(f"{mode} {x:.2f}x" for mode, x in by_mode.items())
        + f"  vs {REFERENCE[PEER_IMPLS[impl][0]]}"
        for impl, by_mode in summary.items()
    ]
    tail = ["", "geometric mean of speed over lengths:", *lines] if lines else []
    return "\n".join(info) + format_rows(head, rows, left=(1, 2, 7, 8)) + "\n".join(["", *tail])
