"""The cost of recording attention weights (``qkv bench record``).

For each sequence length, in interleaved rounds in one process on the same tokens
(:mod:`qkv.bench._timing`), inference forwards (eval, ``no_grad``) of GPT-2-shaped models:

* ``qkv_plain``: qkv's :class:`~qkv.models.DecoderLM`, fast backend (the reference);
* ``qkv_record``: the same model inside :func:`qkv.interp.record_attention` with its
  defaults (every layer, every head, every row, stored in bfloat16), which computes each
  layer's attention once, with the math reference: the weights a few rows at a time and
  the output from them, instead of the fast backend;
* the options of :func:`~qkv.interp.record_attention` for long inputs, each still every
  layer: ``qkv_record_fp32`` (weights kept in float32, ``dtype=None``),
  ``qkv_record_bf16`` (the default dtype given explicitly), ``qkv_record_stream`` (each
  layer handed to ``on_entry`` and dropped, one buffer reused across layers), the two together
  (``qkv_record_stream_bf16``), and selections: ``qkv_record_last_row`` (``rows=[-1]``, every
  head) and ``qkv_record_one_head`` (``heads=[0]``, every row), which compute only the
  selected weights beside the fast backend;
* ``hf_sdpa``: ``transformers``' ``GPT2LMHeadModel`` with ``attn_implementation="sdpa"``;
* ``hf_attentions``: the same model with ``attn_implementation="eager"`` and
  ``output_attentions=True``, the way ``transformers`` returns attention weights.

Each recording row reports its overhead over its own plain forward
(``time(qkv_record) / time(qkv_plain)``, ``time(hf_attentions) / time(hf_sdpa)``), and every
``transformers`` row qkv's speed-up over it (``time(hf_*) / time(qkv_*)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

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
    time_rows,
    transformers_missing,
)
from qkv.bench._twins import ModelShape, hf_gpt2, qkv_lm
from qkv.interp import record_attention

#: the keyword arguments of record_attention of each qkv recording row (on_entry added)
RECORD_OPTIONS: dict[str, dict[str, Any]] = {
    "qkv_record": {},
    "qkv_record_fp32": {"dtype": None},
    "qkv_record_bf16": {"dtype": torch.bfloat16},
    "qkv_record_stream": {"stream": True},
    "qkv_record_stream_bf16": {"stream": True, "dtype": torch.bfloat16},
    "qkv_record_last_row": {"rows": [-1]},
    "qkv_record_one_head": {"heads": [0]},
}

#: implementation -> (its plain forward, the qkv row it is compared with, description)
RECORD_IMPLS: dict[str, tuple[str, str, str]] = {
    "qkv_plain": ("qkv_plain", "qkv_plain", "DecoderLM forward"),
    "qkv_record": ("qkv_plain", "qkv_record", "DecoderLM forward in record_attention (bf16)"),
    "qkv_record_fp32": ("qkv_plain", "qkv_record_fp32", "record_attention(dtype=None): float32"),
    "qkv_record_bf16": ("qkv_plain", "qkv_record_bf16", "record_attention(dtype=torch.bfloat16)"),
    "qkv_record_stream": ("qkv_plain", "qkv_record_stream", "record_attention(on_entry=...)"),
    "qkv_record_stream_bf16": (
        "qkv_plain",
        "qkv_record_stream_bf16",
        "record_attention(on_entry=..., dtype=torch.bfloat16)",
    ),
    "qkv_record_last_row": ("qkv_plain", "qkv_record_last_row", "record_attention(rows=[-1])"),
    "qkv_record_one_head": ("qkv_plain", "qkv_record_one_head", "record_attention(heads=[0])"),
    "hf_sdpa": ("hf_sdpa", "qkv_plain", "GPT2LMHeadModel (sdpa) forward"),
    "hf_attentions": (
        "hf_sdpa",
        "qkv_record",
        "GPT2LMHeadModel (eager), output_attentions=True (float32)",
    ),
}


@dataclass
class RecordBenchConfig:
    """What to measure.

    Attributes:
        d_model, n_heads, n_layers, vocab_size, d_ff: the GPT-2-shaped model (``d_ff``
            None = ``4 d``).
        lengths: sequence lengths.
        batch_size: sequences per forward.
        impls: names from :data:`RECORD_IMPLS`.
        repeats: the most timed rounds per length.
        min_repeats: rounds every implementation runs whatever ``time_budget``.
        warmup: untimed calls of each implementation first.
        time_budget: seconds of timed calls per length, roughly, shared by the
            implementations (:func:`~qkv.bench._timing.time_interleaved`).
        threads: ``torch.set_num_threads``; ``None`` keeps torch's.
        memory_limit: bytes the recorded weights may be estimated to need; ``None`` = 50 %
            of the memory available at the start.
        seed: of the tokens and the weights.
    """

    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 6
    vocab_size: int = 8192
    d_ff: int | None = None
    lengths: tuple[int, ...] = (512, 1024, 2048, 4096)
    batch_size: int = 1
    impls: tuple[str, ...] = tuple(RECORD_IMPLS)
    repeats: int = 7
    min_repeats: int = 3
    warmup: int = 1
    time_budget: float = 120.0
    threads: int | None = None
    memory_limit: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_subset("impls", self.impls, RECORD_IMPLS)
        check_settings(self, ("batch_size", "repeats", "min_repeats"))
        check_sizes("lengths", self.lengths)
        _ = self.shape  # validates the sizes

    @property
    def shape(self) -> ModelShape:
        return ModelShape(
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            vocab_size=self.vocab_size,
            max_len=max(self.lengths),
            d_ff=self.d_ff,
        )


@dataclass
class RecordMeasurement(TimedRow):
    """One implementation at one length (status and times:
    :class:`~qkv.bench._timing.TimedRow`).

    Attributes:
        plain: the plain forward of the same framework.
        qkv: the qkv row doing the same job (itself on qkv rows).
        tokens_per_s: ``batch_size * length`` over the median time.
        overhead: ``time(this) / time(plain)``, median of per-round ratios (1.0 on plain rows).
        qkv_speedup: ``time(this) / time(qkv)``, median of per-round ratios.
        weights_mib: MiB of attention weights the call holds at its peak (0 for plain
            forwards; one layer's buffer when streaming).
    """

    length: int
    impl: str
    description: str
    plain: str
    qkv: str
    tokens_per_s: float | None = None
    overhead: float | None = None
    qkv_speedup: float | None = None
    weights_mib: float = 0.0


@dataclass
class RecordBenchResult(BenchResult[RecordBenchConfig, RecordMeasurement]):
    """What :func:`run_record_bench` measured (``--json`` writes :meth:`to_json`)."""

    benchmark: ClassVar[str] = "record"


def _calls(
    models: dict[str, nn.Module], ids: Tensor, impls: list[str], n_layers: int
) -> dict[str, Callable[[], object]]:
    def qkv_plain() -> None:
        with torch.no_grad():
            models["qkv"](ids)

    def qkv_record(impl: str) -> Callable[[], None]:
        opts = dict(RECORD_OPTIONS[impl])
        stream = opts.pop("stream", False)

        def call() -> None:
            seen: list[str] = []
            keep = {"on_entry": lambda e: seen.append(e.name)} if stream else {}
            with torch.no_grad(), record_attention(models["qkv"], **opts, **keep) as rec:
                models["qkv"](ids)
            if len(rec) + len(seen) != n_layers:
                raise RuntimeError(f"recorded {len(rec) + len(seen)} layers, expected {n_layers}")

        return call

    def hf_sdpa() -> None:
        with torch.no_grad():
            models["hf_sdpa"](input_ids=ids)

    def hf_attentions() -> None:
        with torch.no_grad():
            out = models["hf_eager"](input_ids=ids, output_attentions=True)
        if len(out.attentions) != n_layers:
            raise RuntimeError(f"got {len(out.attentions)} attentions, expected {n_layers}")

    table = {
        "qkv_plain": qkv_plain,
        **{name: qkv_record(name) for name in RECORD_OPTIONS},
        "hf_sdpa": hf_sdpa,
        "hf_attentions": hf_attentions,
    }
    return {impl: table[impl] for impl in impls}


def _held_fraction(impl: str, n_heads: int, length: int, n_layers: int) -> float:
    """The part of every layer's fp32 weights an implementation holds at its peak."""
    if impl not in RECORD_OPTIONS:
        return 1.0  # transformers' output_attentions: float32, every layer kept
    opts = RECORD_OPTIONS[impl]
    dtype = opts.get("dtype", torch.bfloat16)  # record_attention's default
    f = 1.0 if dtype is None else dtype.itemsize / 4
    if opts.get("stream"):
        f /= n_layers  # one layer's buffer
    if "rows" in opts:
        f *= len(opts["rows"]) / length
    if "heads" in opts:
        f *= len(opts["heads"]) / n_heads
    return f


def run_record_bench(
    config: RecordBenchConfig, progress: Callable[[RecordMeasurement], None] | None = None
) -> RecordBenchResult:
    """Time plain and recording forwards at every length of ``config``.

    Args:
        config: what to measure.
        progress: called with each finished :class:`RecordMeasurement`.

    Returns:
        The measurements with overheads over plain forwards and qkv's speed-ups.
    """
    hf_missing = transformers_missing()
    with peer_run(config, RecordBenchResult) as result:
        limit = config.memory_limit or 0.5 * available_memory_bytes()
        models: dict[str, nn.Module] = {}
        torch.manual_seed(config.seed)
        models["qkv"] = qkv_lm(config.shape).eval()
        if not hf_missing and any(i.startswith("hf") for i in config.impls):
            torch.manual_seed(config.seed)
            models["hf_sdpa"] = hf_gpt2(config.shape, "sdpa").eval()
            models["hf_eager"] = hf_gpt2(config.shape, "eager").eval()
            models["hf_eager"].load_state_dict(models["hf_sdpa"].state_dict())
        gen = torch.Generator().manual_seed(config.seed)
        c = config
        for s in config.lengths:
            ids = torch.randint(1, c.vocab_size, (c.batch_size, s), generator=gen)
            weights = 4.0 * c.batch_size * c.n_heads * s * s * c.n_layers  # fp32 bytes, all kept
            rows: dict[str, RecordMeasurement] = {}
            runnable: list[str] = []
            for impl in config.impls:
                plain, qkv, desc = RECORD_IMPLS[impl]
                records = impl in RECORD_OPTIONS or impl == "hf_attentions"
                held = weights * _held_fraction(impl, c.n_heads, s, c.n_layers)
                row = rows[impl] = RecordMeasurement(
                    s, impl, desc, plain, qkv, weights_mib=held / 2**20 if records else 0
                )
                if impl.startswith("hf") and hf_missing:
                    row.skip(hf_missing)
                elif records and 1.5 * held > limit:
                    row.skip(f"weights need ~{held / 2**30:.1f} GiB > limit")
                else:
                    runnable.append(impl)
            times = time_rows(rows, _calls(models, ids, runnable, c.n_layers), c)
            for impl, row in rows.items():
                if row.time_s:
                    row.tokens_per_s = c.batch_size * s / row.time_s
                row.overhead = paired_ratio(times.get(impl), times.get(row.plain))
                row.qkv_speedup = paired_ratio(times.get(impl), times.get(row.qkv))
            result.add(rows.values(), progress)
    return result


def format_record_table(result: RecordBenchResult) -> str:
    """A plain-text table of the measurements, with the run's settings above."""
    cfg, env = result.config, result.environment
    head = ("length", "impl", "time ms", "weights MiB", "x plain", "qkv speed-up", "note")
    # weights MiB: what the call holds at its peak (streaming: one layer's buffer)
    rows = [
        (
            str(m.length),
            m.impl,
            fmt(None if m.time_s is None else m.time_s * 1e3, ".0f"),
            fmt(m.weights_mib, ".0f"),
            fmt(m.overhead, ".2f", "x"),
            fmt(m.qkv_speedup, ".2f", "x"),
            m.reason if m.status != "ok" else m.description,
        )
        for m in result.measurements
    ]
    info = [
        f"inference forward with and without attention weights: GPT-2-shaped d={cfg.d_model} "
        f"h={cfg.n_heads} layers={cfg.n_layers} vocab={cfg.vocab_size}, batch {cfg.batch_size}; "
        f"fp32, {env.get('threads')} threads, torch {env.get('torch')}, transformers "
        f"{env.get('transformers')}",
        "x plain = time(impl) / time(plain forward of the same library); qkv speed-up = "
        "time(impl) / time(qkv doing the same); both medians of per-round ratios",
        "",
    ]
    return "\n".join(info) + format_rows(head, rows, left=(1, 6))
