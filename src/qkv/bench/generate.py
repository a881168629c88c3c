"""Greedy decoding throughput against ``transformers`` (``qkv bench generate``).

For each batch size, in interleaved rounds in one process on the same prompts
(:mod:`qkv.bench._timing`):

* ``qkv_cache``: :func:`qkv.generation.generate` with the KV cache (the reference);
* ``qkv_nocache``: the same without the cache (re-running the prefix every step), at the
  batch sizes of ``nocache_batch_sizes`` only, since it is slow;
* ``hf_cache``: ``GPT2LMHeadModel.generate(use_cache=True, do_sample=False)`` of the same
  shape.

Both decode exactly ``new_tokens`` tokens per row (no EOS), which the benchmark checks, so
they do the same work; the weights differ (random), so the tokens do too. Throughput is
``batch_size * new_tokens`` over the wall time of the whole call (prefill included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from qkv.bench._timing import (
    BenchResult,
    TimedRow,
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
from qkv.bench._twins import ModelShape, count_parameters, hf_gpt2, qkv_lm
from qkv.generation import generate

#: implementation -> description
GENERATE_IMPLS: dict[str, str] = {
    "qkv_cache": "qkv.generation.generate(use_cache=True)",
    "qkv_nocache": "qkv.generation.generate(use_cache=False)",
    "hf_cache": "transformers GPT2LMHeadModel.generate(use_cache=True)",
}
REFERENCE = "qkv_cache"


@dataclass
class GenerateBenchConfig:
    """What to measure.

    Attributes:
        d_model, n_heads, n_layers, vocab_size, d_ff: the GPT-2-shaped model (``d_ff``
            None = ``4 d``).
        prompt_len: prompt tokens per row.
        new_tokens: tokens generated per row.
        batch_sizes: batch sizes.
        impls: names from :data:`GENERATE_IMPLS`.
        nocache_batch_sizes: the batch sizes at which ``qkv_nocache`` runs.
        repeats: the most timed rounds per batch size.
        min_repeats: rounds every implementation runs whatever ``time_budget`` (default
            all 7: the reported ratios are medians of 7 paired rounds, which a loaded
            machine needs; fewer gave 0.8x-1.7x spreads).
        warmup: untimed calls of each implementation first (each a short generation of
            ``warmup_tokens``).
        warmup_tokens: tokens per warm-up call.
        time_budget: seconds of timed calls per batch size, roughly, shared by the
            implementations (:func:`~qkv.bench._timing.time_interleaved`).
        threads: ``torch.set_num_threads``; ``None`` keeps torch's.
        seed: of the prompts and the weights.
    """

    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 6
    vocab_size: int = 8192
    d_ff: int | None = None
    prompt_len: int = 32
    new_tokens: int = 256
    batch_sizes: tuple[int, ...] = (1, 8)
    impls: tuple[str, ...] = tuple(GENERATE_IMPLS)
    nocache_batch_sizes: tuple[int, ...] = (1,)
    repeats: int = 7
    min_repeats: int = 7
    warmup: int = 1
    warmup_tokens: int = 32
    time_budget: float = 300.0
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_subset("impls", self.impls, GENERATE_IMPLS)
        check_settings(
            self, ("prompt_len", "new_tokens", "repeats", "min_repeats", "warmup_tokens")
        )
        check_sizes("batch_sizes", self.batch_sizes)
        _ = self.shape  # validates the sizes

    @property
    def shape(self) -> ModelShape:
        return ModelShape(
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            vocab_size=self.vocab_size,
            max_len=self.prompt_len + self.new_tokens,
            d_ff=self.d_ff,
        )


@dataclass
class GenerateMeasurement(TimedRow):
    """One implementation at one batch size (status and times:
    :class:`~qkv.bench._timing.TimedRow`).

    Attributes:
        batch: the batch size (``batch``, the JSON key of ``qkv bench`` results, is kept).
        tokens_per_s: ``batch * new_tokens`` over the median time.
        ms_per_step: the median time per new token.
        qkv_speedup: ``time(this) / time(qkv_cache)``, the median of per-round ratios: how
            many times faster qkv's cached decoding is (1.0 on its own row).
    """

    batch: int
    impl: str
    description: str
    tokens_per_s: float | None = None
    ms_per_step: float | None = None
    qkv_speedup: float | None = None


@dataclass
class GenerateBenchResult(BenchResult[GenerateBenchConfig, GenerateMeasurement]):
    """What :func:`run_generate_bench` measured (``--json`` writes :meth:`to_json`).

    Attributes:
        parameters: parameter counts of the qkv and (when built) transformers models.
    """

    benchmark: ClassVar[str] = "generate"
    parameters: dict[str, int] = field(default_factory=dict)

    def extra_json(self) -> dict[str, Any]:
        """The parameter counts."""
        return {"parameters": self.parameters}


def _qkv_call(model: nn.Module, prompts: Tensor, n: int, use_cache: bool) -> Callable[[], None]:
    def call() -> None:
        out = generate(model, prompts, max_new_tokens=n, eos_id=None, use_cache=use_cache)
        if any(len(row) != n for row in out.tokens):
            raise RuntimeError(f"qkv generated {[len(r) for r in out.tokens]} tokens, not {n}")

    return call


def _hf_call(model: nn.Module, prompts: Tensor, n: int) -> Callable[[], None]:
    mask = torch.ones_like(prompts)

    def call() -> None:
        with torch.no_grad():
            out = model.generate(  # type: ignore[operator]
                prompts,
                attention_mask=mask,
                max_new_tokens=n,
                do_sample=False,
                num_beams=1,
                use_cache=True,
                eos_token_id=None,
                pad_token_id=0,
            )
        if out.shape[1] != prompts.shape[1] + n:
            raise RuntimeError(f"transformers generated {out.shape[1] - prompts.shape[1]}, not {n}")

    return call


def run_generate_bench(
    config: GenerateBenchConfig, progress: Callable[[GenerateMeasurement], None] | None = None
) -> GenerateBenchResult:
    """Time greedy decoding of every implementation at every batch size of ``config``.

    Args:
        config: what to measure.
        progress: called with each finished :class:`GenerateMeasurement`.

    Returns:
        The measurements with tokens/s and qkv's speed-up over each.
    """
    hf_missing = transformers_missing()
    with peer_run(config, GenerateBenchResult) as result:
        torch.manual_seed(config.seed)
        qkv_model = qkv_lm(config.shape).eval()
        result.parameters["qkv"] = count_parameters(qkv_model)
        hf_model = None
        if "hf_cache" in config.impls and not hf_missing:
            torch.manual_seed(config.seed)
            hf_model = hf_gpt2(config.shape).eval()
            result.parameters["hf"] = count_parameters(hf_model)
        gen = torch.Generator().manual_seed(config.seed)
        n_warm = min(config.warmup_tokens, config.new_tokens)
        for b in config.batch_sizes:
            prompts = torch.randint(1, config.vocab_size, (b, config.prompt_len), generator=gen)
            rows: dict[str, GenerateMeasurement] = {}
            calls: dict[str, Callable[[], object]] = {}
            warm: dict[str, Callable[[], object]] = {}
            for impl in config.impls:
                row = rows[impl] = GenerateMeasurement(b, impl, GENERATE_IMPLS[impl])
                if impl == "qkv_nocache" and b not in config.nocache_batch_sizes:
                    row.skip("not at this batch size (--nocache-batch-sizes)")
                elif impl == "hf_cache" and hf_model is None:
                    row.skip(hf_missing or "not built")
                elif impl == "hf_cache":
                    calls[impl] = _hf_call(hf_model, prompts, config.new_tokens)  # type: ignore[arg-type]
                    warm[impl] = _hf_call(hf_model, prompts, n_warm)  # type: ignore[arg-type]
                else:
                    cache = impl == "qkv_cache"
                    calls[impl] = _qkv_call(qkv_model, prompts, config.new_tokens, cache)
                    warm[impl] = _qkv_call(qkv_model, prompts, n_warm, cache)
            times = time_rows(rows, calls, config, warmup_fns=warm)
            tokens = b * config.new_tokens
            for impl, row in rows.items():
                if row.time_s:
                    row.tokens_per_s = tokens / row.time_s
                    row.ms_per_step = 1e3 * row.time_s / config.new_tokens
                row.qkv_speedup = paired_ratio(times.get(impl), times.get(REFERENCE))
            result.add(rows.values(), progress)
    return result


def format_generate_table(result: GenerateBenchResult) -> str:
    """A plain-text table of the measurements, with the run's settings above."""
    cfg, env = result.config, result.environment
    head = ("batch", "impl", "time s", "tokens/s", "ms/step", "qkv_cache speed-up", "note")
    rows = [
        (
            str(m.batch),
            m.impl,
            fmt(m.time_s, ".2f"),
            fmt(m.tokens_per_s, ".1f"),
            fmt(m.ms_per_step, ".1f"),
            fmt(m.qkv_speedup, ".2f", "x"),
            m.reason if m.status != "ok" else m.description,
        )
        for m in result.measurements
    ]
    params = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in result.parameters.items())
    info = [
        f"greedy decoding, {cfg.new_tokens} new tokens after a {cfg.prompt_len}-token prompt: "
        f"GPT-2-shaped d={cfg.d_model} h={cfg.n_heads} layers={cfg.n_layers} "
        f"vocab={cfg.vocab_size} ({params}); fp32, {env.get('threads')} threads, torch "
        f"{env.get('torch')}, transformers {env.get('transformers')}",
        "qkv_cache speed-up = time(impl) / time(qkv_cache), median of per-round ratios",
        "",
    ]
    return "\n".join(info) + format_rows(head, rows, left=(1, 6))
