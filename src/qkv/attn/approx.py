"""How far approximate attention lands from exact softmax attention, as a function of its
size: FAVOR+'s number of random features, Linformer's projected length.

:func:`approximation_error` draws random problems, runs the approximation and the exact
reference (the ``"math"`` backend) on each, and reports the relative Frobenius error
``|A - A*|_F / |A*|_F`` of the outputs, averaged over trials (new inputs and, for FAVOR+,
new features each trial). ``docs/efficient.md`` tabulates it; the test suite checks that
it shrinks as the size grows.

>>> rows = approximation_error("favor", (16, 256), length=64, head_dim=16, trials=2)
>>> rows[0].error > rows[1].error
True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from qkv._checks import check_int
from qkv.attn.favor import favor_attention, orthogonal_gaussian
from qkv.attn.functional import attention
from qkv.attn.linformer import linformer_attention, pooling_projection

Method = Literal["favor", "linformer"]
Projection = Literal["pool", "gaussian"]
METHODS: tuple[str, ...] = ("favor", "linformer")


@dataclass(frozen=True)
class ApproxError:
    """The error of one method at one size.

    Attributes:
        method: ``"favor"`` or ``"linformer"``.
        size: random features ``m`` (FAVOR+) or projected length ``k`` (Linformer).
        error: mean relative Frobenius error of the attention output over the trials.
        std: its standard deviation over the trials (0 for one trial).
        trials: number of random problems.
    """

    method: str
    size: int
    error: float
    std: float
    trials: int


def relative_error(approx: Tensor, exact: Tensor) -> float:
    """``|approx - exact|_F / |exact|_F`` (0 when both are zero)."""
    num = (approx.double() - exact.double()).norm().item()
    den = exact.double().norm().item()
    return num / den if den > 0 else num


def _linformer_projection(kind: str, k: int, n: int, gen: torch.Generator) -> Tensor:
    if kind == "pool":
        return pooling_projection(k, n)
    # Johnson-Lindenstrauss: N(0, 1/k) entries (Wang et al. 2020, theorem 1)
    return torch.randn(k, n, generator=gen, dtype=torch.float64) / math.sqrt(k)


def approximation_error(
    method: Method,
    sizes: Sequence[int],
    *,
    length: int = 512,
    head_dim: int = 64,
    n_heads: int = 4,
    causal: bool = False,
    input_std: float = 1.0,
    projection: Projection = "pool",
    trials: int = 3,
    seed: int = 0,
) -> list[ApproxError]:
    """Relative error of an attention approximation against exact softmax attention.

    Each trial draws ``q, k, v ~ N(0, input_std^2)`` of shape ``(1, n_heads, length,
    head_dim)`` in float64 (so only the approximation errs, not the arithmetic), computes
    exact attention with the ``"math"`` backend and the approximation at every size.

    Args:
        method: ``"favor"`` (FAVOR+, sizes = random features ``m``) or ``"linformer"``
            (sizes = projected length ``k <= length``; non-causal only).
        sizes: the sizes to measure.
        length: sequence length ``s``.
        head_dim: ``d_h``.
        n_heads: heads per problem (each gives an independent sample).
        causal: causal attention (FAVOR+ only).
        input_std: standard deviation of the inputs: the larger, the peakier the softmax
            and the harder for FAVOR+ (its variance grows like ``exp(|q|^2 + |k|^2)``).
        projection: Linformer's ``E = F``: ``"pool"`` (mean pooling of ``length / k``
            positions; exact at ``k = length``) or ``"gaussian"`` (untrained random
            ``N(0, 1/k)`` entries, which does not converge to softmax attention: Linformer
            learns its projections).
        trials: random problems per size.
        seed: seed of the inputs and features.

    Returns:
        One :class:`ApproxError` per size, in the order given.

    Raises:
        ValueError: an unknown method or projection, a size out of range, causal
            Linformer, or non-positive settings.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if projection not in ("pool", "gaussian"):
        raise ValueError(f"projection must be 'pool' or 'gaussian', got {projection!r}")
    for name, val in (
        ("length", length),
        ("head_dim", head_dim),
        ("n_heads", n_heads),
        ("trials", trials),
    ):
        check_int(name, val)
    if not (isinstance(input_std, (int, float)) and input_std > 0):
        raise ValueError(f"input_std must be > 0, got {input_std!r}")
    hi = length if method == "linformer" else 1 << 20
    bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= hi]
    if bad or not sizes:
        raise ValueError(f"sizes must be ints in [1, {hi}], got {list(sizes)}")
    if method == "linformer" and causal:
        raise ValueError("Linformer is bidirectional: causal=True is not defined for it")

    errors: dict[int, list[float]] = {s: [] for s in sizes}
    for t in range(trials):
        gen = torch.Generator().manual_seed(seed * 1000 + t)
        shape = (1, n_heads, length, head_dim)
        q, k, v = (
            torch.randn(shape, generator=gen, dtype=torch.float64) * input_std for _ in "qkv"
        )
        exact = attention(q, k, v, is_causal=causal, backend="math")
        assert isinstance(exact, Tensor)
        for size in sizes:
            if method == "favor":
                w = orthogonal_gaussian(size, head_dim, generator=gen, dtype=torch.float64)
                approx = favor_attention(q, k, v, w, causal=causal)
            else:
                e = _linformer_projection(projection, size, length, gen)
                approx = linformer_attention(q, k, v, e, e, backend="math")
            errors[size].append(relative_error(approx, exact))
    return [
        ApproxError(
            method,
            s,
            statistics.fmean(errors[s]),
            statistics.stdev(errors[s]) if trials > 1 else 0.0,
            trials,
        )
        for s in sizes
    ]


def format_errors(rows: Sequence[ApproxError]) -> str:
    """A plain-text table: method, size, mean error +- std."""
    lines = [f"{'method':<10} {'size':>6}  {'rel. error':>10}  {'std':>8}"]
    for r in rows:
        lines.append(f"{r.method:<10} {r.size:>6}  {r.error:>10.4f}  {r.std:>8.4f}")
    return "\n".join(lines)


__all__ = ["METHODS", "ApproxError", "approximation_error", "format_errors", "relative_error"]
