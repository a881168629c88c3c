"""Approximation error of FAVOR+ and Linformer against exact softmax attention
(``qkv bench approx``): :func:`qkv.attn.approximation_error` over a list of sizes, as a
table (the one in ``docs/efficient.md``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from qkv.attn.approx import METHODS, ApproxError, approximation_error, format_errors
from qkv.bench._timing import check_sizes, check_subset


@dataclass
class ApproxBenchConfig:
    """The arguments of :func:`qkv.attn.approximation_error` (see there).

    Attributes:
        method: ``"favor"`` or ``"linformer"``.
        sizes: random features (FAVOR+) or projected lengths (Linformer).
        length, head_dim, n_heads, causal, input_std, projection, trials, seed: as there.
    """

    method: str = "favor"
    sizes: tuple[int, ...] = (16, 64, 256, 1024)
    length: int = 512
    head_dim: int = 64
    n_heads: int = 4
    causal: bool = False
    input_std: float = 1.0
    projection: str = "pool"
    trials: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        check_subset("method", (self.method,), METHODS)
        check_subset("projection", (self.projection,), ("pool", "gaussian"))
        check_sizes("sizes", self.sizes)


@dataclass
class ApproxBenchResult:
    """The rows; :meth:`to_json` is what ``--json`` writes."""

    config: ApproxBenchConfig
    measurements: list[ApproxError] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "approx",
            "config": asdict(self.config),
            "results": [asdict(m) for m in self.measurements],
        }


def run_approx_bench(
    config: ApproxBenchConfig, progress: Callable[[ApproxError], None] | None = None
) -> ApproxBenchResult:
    """Measure the error at every size of ``config``.

    Raises:
        ValueError: settings :func:`~qkv.attn.approximation_error` refuses.
    """
    c = config
    rows = approximation_error(
        c.method,  # type: ignore[arg-type]
        c.sizes,
        length=c.length,
        head_dim=c.head_dim,
        n_heads=c.n_heads,
        causal=c.causal,
        input_std=c.input_std,
        projection=c.projection,  # type: ignore[arg-type]
        trials=c.trials,
        seed=c.seed,
    )
    result = ApproxBenchResult(config, rows)
    if progress is not None:
        for row in rows:
            progress(row)
    return result


def format_approx_table(result: ApproxBenchResult) -> str:
    """The settings and the table of :func:`qkv.attn.approx.format_errors`."""
    c = result.config
    kind = "causal" if c.causal else "bidirectional"
    head = (
        f"{c.method}: relative error of the output against exact softmax attention, "
        f"s={c.length}, d_h={c.head_dim}, {kind}, inputs N(0, {c.input_std}^2), "
        f"{c.trials} trials x {c.n_heads} heads"
    )
    if c.method == "linformer":
        head += f", projection {c.projection}"
    return head + "\n" + format_errors(result.measurements)


__all__ = ["ApproxBenchConfig", "ApproxBenchResult", "format_approx_table", "run_approx_bench"]
