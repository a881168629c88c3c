"""Long-context benchmark (``qkv bench long``): efficient attention on the same work.

Sections:

* ``speed``: one self-attention layer of width ``d_model`` (projections included),
  forward + backward (or forward only) on ``(batch_size, length, d_model)`` random inputs, for
  dense SDPA (causal; the fused kernels keep ``O(s)`` memory), dense attention that keeps
  its ``(s, s)`` matrix (``math``), block-sparse (a causal sliding window on the ``blocksparse``
  backend), LSH (Reformer, causal), FAVOR+ (Performer, causal) and Linformer (which is
  bidirectional only, so it runs without the causal mask). Median wall time and peak
  memory, and their ratios to dense SDPA at the same length. Memory as in
  ``qkv bench attention``: on CUDA ``max_memory_allocated`` above what was held before;
  on CPU the growth of the peak resident set of a fresh subprocess per measurement.
* ``xl``: Transformer-XL evaluation of a long token stream: segments that reuse the cached
  memory, against the same model recomputing the context window for every segment
  (equal context: each new token sees ``xl_memory`` to ``xl_memory + xl_segment - 1``
  earlier tokens either way; :func:`qkv.models.stream_nll`). Both give the same tokens
  the same context; only the cost differs. Interleaved in one process. With the quality
  section and its ``xl`` kind, the trained Transformer-XL on the held-out text (bits per
  character of real text); otherwise an untrained model on random bytes.
* ``quality``: a character-level language model of each kind trained for the same wall
  time on the same text (``qkv bench long`` reads the King James Bible, as ``qkv train
  --task lm --corpus kjv``) at a long context, then bits per character on held-out chunks:
  quality against training time (:mod:`qkv.bench.long_quality`).
* ``listops``: encoders of every kind trained on ListOps for the same time, accuracy on
  the valid split. It trains a task, so it lives in the apps layer
  (:func:`qkv.cli._long_listops.run_listops`); :func:`run_long_bench` skips it and
  ``qkv bench long`` appends its rows.

Every row reports its peak memory (``peak_bytes``, and ``memory_ratio`` to the section's
reference), measured in a fresh subprocess of its own; ``memory_method`` of the result
says how. The speed section measures it in the subprocess that times it; the xl, quality
and listops rows run again, after their section, in a subprocess that repeats their work
in small (:mod:`qkv.bench.long_memory`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import Tensor, nn

from qkv.bench._timing import environment, fmt, format_rows, num_threads, paired_ratio, time_rows
from qkv.bench.long_config import (
    MODES,
    SECTIONS,
    SPEED_IMPLS,
    LongBenchConfig,
    LongBenchResult,
    LongRow,
)
from qkv.bench.long_memory import fill_ratios, measure_isolated, memory_method
from qkv.bench.long_quality import QualityRun, train_and_score
from qkv.bench.long_speed import run_speed
from qkv.models import LMConfig, build, stream_nll


# ---------------------------------------------------------------------------------------
# xl: evaluation with memory against recomputation
# ---------------------------------------------------------------------------------------
def run_xl(
    cfg: LongBenchConfig,
    progress: Callable[[LongRow], None] | None,
    trained: QualityRun | None = None,
) -> list[LongRow]:
    """The xl section: :func:`~qkv.models.stream_nll` with and without the memory, on
    the quality section's trained Transformer-XL and its held-out text (``trained``; mode
    ``"trained"``), else on an untrained model and random bytes (mode ``"eval"``); then,
    with ``cfg.isolate``, each row's peak memory in a fresh subprocess
    (:mod:`qkv.bench.long_memory`)."""
    dev = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    if trained is not None:
        model = trained.model.to(dev).eval()
        stream = trained.valid_ids[: cfg.xl_tokens + 1]
        ids = torch.tensor([stream], device=dev)  # (1, n + 1)
        mode = "trained"
    else:
        model, ids, mode = _untrained_xl(cfg, dev), _random_bytes(cfg, dev), "eval"
    rows = _time_xl(cfg, model, ids, mode)
    if cfg.isolate:
        for row in rows:
            spec = {
                "section": "xl",
                "model": model.config.to_dict(),
                "tokens": row.length,
                "segment_len": cfg.xl_segment,
                "context": cfg.xl_memory,
                "reuse": row.impl == "memory",
                "device": cfg.device,
                "threads": cfg.threads,
                "seed": cfg.seed,
            }
            measure_isolated("qkv.bench.long_memory", spec, row, cfg)
        fill_ratios(rows, "recompute")
    if progress is not None:
        for row in rows:
            progress(row)
    return rows


def _untrained_xl(cfg: LongBenchConfig, dev: torch.device) -> nn.Module:
    """An untrained Transformer-XL over bytes, of the section's sizes."""
    model_cfg = LMConfig(
        d_model=cfg.lm_d_model,
        n_heads=cfg.lm_n_heads,
        d_ff=4 * cfg.lm_d_model,
        n_layers=cfg.lm_n_layers,
        vocab_size=256,
        max_len=cfg.xl_memory + cfg.xl_segment,
        pos="xl",
        mem_len=cfg.xl_memory,
        dropout=0.0,
        attn_dropout=0.0,
    )
    return build(model_cfg).to(dev).eval()


def _random_bytes(cfg: LongBenchConfig, dev: torch.device) -> Tensor:
    """``(1, xl_tokens + 1)`` random byte ids."""
    gen = torch.Generator().manual_seed(cfg.seed)
    return torch.randint(0, 256, (1, cfg.xl_tokens + 1), generator=gen).to(dev)


def _time_xl(cfg: LongBenchConfig, model: nn.Module, ids: Tensor, mode: str) -> list[LongRow]:
    """Time :func:`~qkv.models.stream_nll` over ``ids`` ``(1, n + 1)``, memory against
    recomputation, interleaved."""
    dev = ids.device
    out: dict[str, tuple[float, int]] = {}

    def call(reuse: bool) -> Callable[[], None]:
        def run() -> None:
            out[str(reuse)] = stream_nll(
                model, ids, segment_len=cfg.xl_segment, context=cfg.xl_memory, reuse_memory=reuse
            )
            if dev.type == "cuda":
                torch.cuda.synchronize()

        return run

    rows = {
        name: LongRow(section="xl", impl=name, length=ids.shape[1] - 1, mode=mode)
        for name in ("recompute", "memory")
    }
    calls = {"recompute": call(False), "memory": call(True)}
    with num_threads(cfg.threads):
        times = time_rows(rows, calls, cfg)  # type: ignore[arg-type]
    for name, reuse in (("recompute", False), ("memory", True)):
        row = rows[name]
        nll, n = out[str(reuse)]
        row.bpc = nll / n / math.log(2)
        if row.time_s:
            row.tokens_per_s = n / row.time_s
        row.speedup = paired_ratio(times.get("recompute"), times.get(name))
    return [rows["recompute"], rows["memory"]]


# ---------------------------------------------------------------------------------------
# quality: trained models, bits per character against training time
# ---------------------------------------------------------------------------------------
def run_quality(
    cfg: LongBenchConfig, text: str, progress: Callable[[LongRow], None] | None
) -> tuple[list[LongRow], dict[str, QualityRun]]:
    """The quality section (:func:`qkv.bench.long_quality.train_and_score` per kind), every
    kind trained for ``cfg.train_time`` seconds; ``tokens_per_s`` says how much text each
    saw in that time. With ``cfg.isolate``, each kind's peak memory of a training step is
    then measured in a fresh subprocess (:mod:`qkv.bench.long_memory`).

    Returns:
        The rows, and the trained runs by kind.
    """
    rows, runs = [], {}
    with num_threads(cfg.threads):
        for kind in cfg.quality_impls:
            row = LongRow(section="quality", impl=kind, length=cfg.context, mode="train")
            try:
                run = train_and_score(kind, text, cfg)
            except (ValueError, RuntimeError) as e:  # e.g. out of memory: the others go on
                row.status, row.reason = "error", f"{type(e).__name__}: {str(e)[:200]}"
            else:
                row.record_times([run.train_s])
                row.bpc, row.train_s = run.bpc, run.train_s
                row.tokens_per_s = run.tokens / max(run.train_s, 1e-9)
                runs[kind] = run
                if cfg.isolate:
                    spec = {
                        "section": "quality",
                        "kind": kind,
                        "vocab": run.model.config.vocab_size,
                        "settings": asdict(cfg),
                    }
                    measure_isolated("qkv.bench.long_memory", spec, row, cfg)
            rows.append(row)
            if progress is not None:
                progress(row)
    fill_ratios(rows, "sdpa")
    return rows, runs


# ---------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------
def run_long_bench(
    config: LongBenchConfig,
    progress: Callable[[LongRow], None] | None = None,
    *,
    text: str | None = None,
) -> LongBenchResult:
    """Run the sections of ``config``.

    Args:
        config: what to measure.
        progress: called with each finished row.
        text: the training text of the quality section (``qkv bench long`` passes the King
            James Bible, or ``--data``).

    Returns:
        The rows, with their ratios.

    Raises:
        ValueError: CUDA asked for but absent, or a quality section without ``text``.
    """
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False")
    if "quality" in config.sections and not text:
        raise ValueError("the quality section needs a training text (text=...)")
    threads = config.threads or torch.get_num_threads()
    result = LongBenchResult(
        config, memory_method=memory_method(config), environment=environment(threads)
    )
    if "speed" in config.sections:
        result.measurements += run_speed(config, progress)
    runs: dict[str, QualityRun] = {}
    if "quality" in config.sections:  # before xl, which evaluates the trained XL model
        assert text is not None
        rows, runs = run_quality(config, text, progress)
        result.measurements += rows
    if "xl" in config.sections:
        result.measurements += run_xl(config, progress, runs.get("xl"))
    return result


def describe_row(m: LongRow) -> str:
    """One progress line."""
    what = f"  {m.section:<8} {m.impl:<12} {m.length:>6} {m.mode:<7} {m.status}"
    if m.time_s is not None:
        what += f"  {m.time_s * 1e3:.1f} ms"
    if m.bpc is not None:
        what += f"  {m.bpc:.3f} bpc"
    if m.accuracy is not None:
        what += f"  {m.accuracy:.1f}% accuracy"
    if m.peak_bytes is not None:
        what += f"  peak {m.peak_bytes / 2**20:.1f} MiB"
    return what + (f"  ({m.reason})" if m.reason else "")


def format_long_table(result: LongBenchResult) -> str:
    """The rows as a plain-text table, section by section."""
    cfg = result.config
    lines = [
        f"{cfg.device}, {cfg.dtype} (speed), {result.environment.get('threads')} threads, "
        f"torch {result.environment.get('torch')}; peak memory: {result.memory_method}"
    ]
    head = ("section", "impl", "length", "mode", "time ms", "x ref", "peak MiB", "mem/ref",
            "bpc", "acc %", "tok/s", "note")  # fmt: skip
    rows = [
        (
            m.section,
            m.impl,
            str(m.length),
            m.mode,
            fmt(None if m.time_s is None else m.time_s * 1e3, ".1f"),
            fmt(m.speedup, ".2f", "x"),
            fmt(None if m.peak_bytes is None else m.peak_bytes / 2**20, ".1f"),
            fmt(m.memory_ratio, ".3f"),
            fmt(m.bpc, ".3f"),
            fmt(m.accuracy, ".1f"),
            fmt(m.tokens_per_s, ".0f"),
            m.reason.split(";")[0][:60],  # ok rows: why their memory was not measured
        )
        for m in result.measurements
    ]
    lines += ["", format_rows(head, rows, left=(0, 1, 3, 11))]
    lines.append(
        "\nx ref: speed against dense sdpa at the same length and mode; xl against "
        "recomputation. quality: every kind trained for the same time; tok/s = training "
        "tokens per second. mem/ref: peak memory / the reference's (speed, quality: sdpa; "
        "xl: recompute; listops: dense)."
    )
    return "\n".join(lines)


__all__ = [
    "MODES",
    "SECTIONS",
    "SPEED_IMPLS",
    "LongBenchConfig",
    "LongBenchResult",
    "LongRow",
    "format_long_table",
    "run_long_bench",
]
