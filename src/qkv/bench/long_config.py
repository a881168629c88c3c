"""Settings and rows of ``qkv bench long`` (:mod:`qkv.bench.long`): the configuration,
one row per measurement and the result with its JSON form."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from qkv.bench._timing import TimedRow, check_settings, check_sizes, check_subset
from qkv.bench.long_quality import KINDS as QUALITY_KINDS

SECTIONS: tuple[str, ...] = ("speed", "xl", "quality", "listops")
#: encoders of the listops section (run by :mod:`qkv.cli._long_listops`, above the apps layer)
LISTOPS_IMPLS: tuple[str, ...] = ("dense", "local", "bigbird", "favor", "linformer", "lsh")
#: attention layers of the speed section: name -> what it is
SPEED_IMPLS: dict[str, str] = {
    "sdpa": "MultiHeadAttention, backend sdpa, causal (dense; fused kernels keep O(s))",
    "math": "MultiHeadAttention, backend math, causal (dense, the (s, s) matrix kept)",
    "blocksparse": "MultiHeadAttention, backend blocksparse, causal sliding window",
    "lsh": "LSHSelfAttention (Reformer), causal",
    "favor": "FavorAttention (Performer FAVOR+), causal",
    "linformer": "LinformerAttention, bidirectional (no causal form)",
}
MODES: tuple[str, ...] = ("fwd", "fwdbwd")


@dataclass
class LongBenchConfig:
    """What ``qkv bench long`` measures (see the module docstring for the sections).

    Attributes:
        sections: from :data:`SECTIONS`.
        lengths: sequence lengths of the speed section.
        impls: attention layers of the speed section, from :data:`SPEED_IMPLS`; ratios
            are to ``sdpa`` (and ``math``'s row shows the materialized dense reference).
        modes: ``"fwd"`` and/or ``"fwdbwd"`` (speed section).
        d_model: width of the speed section's attention layer.
        n_heads: its heads.
        batch_size: its batch size.
        window: keys of the block-sparse sliding window (speed; the ``local`` LM of the
            quality section).
        bucket_size: LSH chunk length.
        n_hashes: LSH hash rounds.
        favor_features: FAVOR+ random features (None: ``d_h ln d_h``).
        linformer_k: Linformer's projected length.
        xl_segment: tokens per segment (xl section).
        xl_memory: cached states per layer, and the recomputed context (xl section).
        xl_tokens: length of the evaluated stream (xl section).
        lm_d_model, lm_n_heads, lm_n_layers: width, heads and layers of the language
            models of the xl and quality sections.
        context: training and evaluation context of the quality section.
        train_time: training seconds per model (quality): every kind trains for the same
            wall time, the cosine schedule stretched to fit.
        steps: most training steps per model (quality; an upper bound on ``train_time``).
        warmup_steps: learning-rate warmup steps (quality).
        train_batch_size: training batch size (quality, listops).
        lr: peak learning rate (quality; cosine schedule).
        valid_chunks: held-out chunks of ``context`` tokens evaluated (quality).
        quality_impls: kinds trained in the quality section (from ``sdpa``, ``local``,
            ``lsh``, ``favor``, ``xl``; Linformer cannot be causal).
        listops_impls: encoders of the listops section, from :data:`LISTOPS_IMPLS`.
        listops_len: longest ListOps expression (listops).
        listops_train: training expressions (listops).
        listops_valid: valid expressions whose accuracy is reported (listops).
        data: a text file to train the quality section on (None: the caller's text; the
            command line reads the King James Bible).
        repeats, min_repeats, warmup, time_budget: timing (``qkv bench`` peers').
        dtype: of the speed section (``float32``, ``bfloat16``, ``float16``).
        device: ``"cpu"`` or ``"cuda"``.
        threads: torch threads on the CPU (None: torch's).
        isolate: one subprocess per speed measurement, and one more per xl, quality and
            listops row for its peak memory (CPU peak memory needs them; False: the speed
            section measured in this process, no memory on the CPU).
        memory_limit: bytes a speed measurement may be estimated to need (None: 80% of the
            available memory).
        seed: of inputs, weights and data order.
    """

    sections: tuple[str, ...] = SECTIONS
    lengths: tuple[int, ...] = (4096, 16384)
    impls: tuple[str, ...] = tuple(SPEED_IMPLS)
    modes: tuple[str, ...] = ("fwdbwd",)
    d_model: int = 512
    n_heads: int = 8
    batch_size: int = 1
    window: int = 256
    bucket_size: int = 64
    n_hashes: int = 2
    favor_features: int | None = None
    linformer_k: int = 256
    xl_segment: int = 128
    xl_memory: int = 1024
    xl_tokens: int = 4096
    lm_d_model: int = 256
    lm_n_heads: int = 4
    lm_n_layers: int = 4
    context: int = 1024
    train_time: float = 90.0
    steps: int = 20000
    warmup_steps: int = 20
    train_batch_size: int = 8
    lr: float = 1e-3
    valid_chunks: int = 16
    quality_impls: tuple[str, ...] = ("sdpa", "local", "lsh", "favor", "xl")
    listops_impls: tuple[str, ...] = LISTOPS_IMPLS
    listops_len: int = 1024
    listops_train: int = 2000
    listops_valid: int = 200
    data: str | None = None
    repeats: int = 3
    min_repeats: int = 1
    warmup: int = 1
    time_budget: float = 60.0
    dtype: str = "float32"
    device: str = "cpu"
    threads: int | None = None
    isolate: bool = True
    memory_limit: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_subset("sections", self.sections, SECTIONS)
        check_subset("impls", self.impls, SPEED_IMPLS)
        check_subset("modes", self.modes, MODES)
        check_subset("quality_impls", self.quality_impls, QUALITY_KINDS)
        check_subset("listops_impls", self.listops_impls, LISTOPS_IMPLS)
        check_sizes("lengths", self.lengths)
        check_settings(
            self,
            (
                "d_model", "n_heads", "batch_size", "window", "bucket_size", "n_hashes",
                "linformer_k", "xl_segment", "xl_memory", "xl_tokens", "lm_d_model",
                "lm_n_heads", "lm_n_layers", "context", "steps", "warmup_steps",
                "train_batch_size", "listops_len", "listops_train", "listops_valid",
                "valid_chunks", "repeats", "min_repeats",
            ),
        )  # fmt: skip
        if self.d_model % self.n_heads or self.lm_d_model % self.lm_n_heads:
            raise ValueError(
                f"heads must divide the widths: d_model={self.d_model} n_heads={self.n_heads}, "
                f"lm_d_model={self.lm_d_model} lm_n_heads={self.lm_n_heads}"
            )
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        for name in ("lr", "train_time"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclass(kw_only=True)
class LongRow(TimedRow):
    """One measurement. ``section`` says which; ``speedup`` and ``memory_ratio`` compare
    with the section's reference (dense SDPA; recomputation for xl) on the same row key.

    Attributes:
        section: ``"speed"``, ``"xl"``, ``"quality"`` or ``"listops"``.
        impl: the attention kind / evaluation.
        length: sequence length (speed), stream length (xl) or context (quality).
        mode: ``"fwd"``/``"fwdbwd"`` (speed), ``"eval"`` (xl), ``"train"`` (quality).
        peak_bytes: peak memory of the measurement, in a subprocess of its own (the
            result's ``memory_method``; :mod:`qkv.bench.long_memory` for xl, quality and
            listops).
        speedup: reference time / this time (> 1: faster).
        memory_ratio: this peak / the reference's.
        bpc: bits per character on held-out text (quality, xl).
        accuracy: valid accuracy in percent (listops).
        train_s: training seconds (quality).
        tokens_per_s: tokens per second (xl: evaluated; quality: trained).
    """

    section: str
    impl: str
    length: int
    mode: str
    peak_bytes: int | None = None
    speedup: float | None = None
    memory_ratio: float | None = None
    bpc: float | None = None
    accuracy: float | None = None
    train_s: float | None = None
    tokens_per_s: float | None = None


@dataclass
class LongBenchResult:
    """Everything a run produced; :meth:`to_json` is what ``--json`` writes."""

    config: LongBenchConfig
    measurements: list[LongRow] = field(default_factory=list)
    memory_method: str = ""
    environment: dict[str, Any] = field(default_factory=dict)

    def add(self, rows: list[LongRow], progress: Callable[[LongRow], None] | None) -> None:
        for row in rows:
            self.measurements.append(row)
            if progress is not None:
                progress(row)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "long",
            "config": asdict(self.config),
            "memory_method": self.memory_method,
            "environment": self.environment,
            "results": [asdict(m) for m in self.measurements],
        }


__all__ = [
    "LISTOPS_IMPLS",
    "MODES",
    "SECTIONS",
    "SPEED_IMPLS",
    "LongBenchConfig",
    "LongBenchResult",
    "LongRow",
]
