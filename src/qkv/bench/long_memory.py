"""Peak memory of the xl, quality and listops rows of ``qkv bench long``, each in a fresh
subprocess after the section's own runs (:mod:`qkv.bench._memory`; the speed section
measures its own, in the subprocess that times it).

* ``xl``: :func:`~qkv.models.stream_nll` over a stream of the same length, with and
  without the memory, on a model of the same configuration (fresh weights: the memory a
  pass needs does not depend on their values); the second pass measured after a first.
* ``quality``: the kind's language model trained by the same trainer
  (:func:`~qkv.bench.long_quality.quality_trainer`) on random windows of the same
  context and batch size for :data:`MEMORY_STEPS` steps; the last step measured, plus the
  AdamW state the first made.
* ``listops``: the same for the listops encoders, in the command line's layer
  (:mod:`qkv.cli._long_listops`, which trains a task), on expressions in the top eighth of
  the lengths (as long as the run's longest batches).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch

from qkv.bench._isolate import run_isolated, serve
from qkv.bench._memory import MMAP_ENV, PeakMeter, optimizer_state_bytes, peak_bytes
from qkv.bench.long_config import LongBenchConfig, LongRow
from qkv.bench.long_quality import Windows, lm_config, quality_trainer
from qkv.models import build, config_from_dict, stream_nll

#: training steps of a memory measurement: the first sets up the process and AdamW's
#: state; the peak is the last's
MEMORY_STEPS = 2


def memory_method(cfg: LongBenchConfig) -> str:
    """How ``cfg``'s rows measure peak memory (``memory_method`` of the result)."""
    if not cfg.isolate:
        if cfg.device == "cuda":
            return (
                "speed: torch.cuda.max_memory_allocated() in this process; xl, quality, "
                "listops: not measured (isolate=False)"
            )
        return "not measured (isolate=False on CPU)"
    rows = (
        "xl, a 2nd stream_nll pass of the same model configuration (fresh weights); "
        f"quality and listops, the last of {MEMORY_STEPS} training steps of the same model "
        "and batch shape (listops: the longest expressions), plus AdamW's state"
    )
    if cfg.device == "cuda":
        return (
            "torch.cuda.max_memory_allocated() above the memory allocated before, in a fresh "
            f"subprocess per row: speed, the timed calls; {rows}"
        )
    return (
        "growth of peak RSS (VmHWM) in a fresh subprocess per row, with "
        f"MALLOC_MMAP_THRESHOLD_={MMAP_ENV['MALLOC_MMAP_THRESHOLD_']} (freed large blocks "
        "return to the OS), above the RSS after a first call, pass or step: speed, a 2nd "
        f"call of the layer (a subprocess of its own, not the timed one); {rows}"
    )


def fill_ratios(rows: list[LongRow], reference: str) -> None:
    """``memory_ratio`` of each row: its peak over the ``reference`` row's."""
    ref = next((r.peak_bytes for r in rows if r.impl == reference), None)
    for row in rows:
        if ref and row.peak_bytes is not None:
            row.memory_ratio = row.peak_bytes / ref


def measure_isolated(module: str, spec: dict[str, Any], row: LongRow, cfg: LongBenchConfig) -> None:
    """Run ``module``'s memory subprocess on ``spec`` and keep its peak in ``row`` (or,
    when it fails, why in ``row.reason``; the row's own result stands)."""
    r = run_isolated(module, spec, 600 + 5 * cfg.train_time, env=MMAP_ENV)
    if r["status"] == "ok":
        row.peak_bytes = int(r["peak_bytes"])
    else:
        row.reason = f"memory not measured: {r['reason']}"


# ---------------------------------------------------------------------------------------
# the subprocesses
# ---------------------------------------------------------------------------------------
def measure_xl(spec: dict[str, Any]) -> dict[str, Any]:
    """One xl row: ``{"model": config dict, "tokens", "segment_len", "context", "reuse",
    "device", "threads", "seed"}``."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    dev = torch.device(spec["device"])
    torch.manual_seed(spec["seed"])
    model_cfg = config_from_dict(spec["model"])
    model = build(model_cfg).to(dev).eval()
    ids = torch.randint(0, model_cfg.vocab_size, (1, spec["tokens"] + 1)).to(dev)  # (1, n + 1)

    def run() -> None:
        stream_nll(
            model,
            ids,
            segment_len=spec["segment_len"],
            context=spec["context"],
            reuse_memory=spec["reuse"],
        )

    return {"status": "ok", "reason": "", "times": [], "peak_bytes": peak_bytes(run, dev, run)}


def measure_quality(spec: dict[str, Any]) -> dict[str, Any]:
    """One quality row: ``{"kind", "vocab", "settings": LongBenchConfig fields}``."""
    settings = LongBenchConfig(**spec["settings"])
    context, vocab = settings.context, spec["vocab"]
    torch.manual_seed(settings.seed)
    model = build(lm_config(spec["kind"], vocab=vocab, context=context, settings=settings))
    gen = torch.Generator().manual_seed(settings.seed)
    ids = torch.randint(0, vocab, (4 * (context + 1),), generator=gen).tolist()
    train = Windows(ids, MEMORY_STEPS * settings.train_batch_size, context + 1, gen)
    meter = PeakMeter(torch.device(settings.device))

    def after(step: int, logs: dict[str, float]) -> None:
        if step == 1:
            meter.warmed(optimizer_state_bytes(trainer.optimizer))

    trainer = quality_trainer(
        spec["kind"], model, train, settings, steps=MEMORY_STEPS, max_time=None, on_step=after
    )
    quiet = io.StringIO()  # the trainer's own report: this process's stdout is its result
    meter.start()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        trainer.fit()
    return {"status": "ok", "reason": "", "times": [], "peak_bytes": meter.peak()}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One row of ``spec["section"]`` (``"xl"`` or ``"quality"``), in this process."""
    return measure_xl(spec) if spec["section"] == "xl" else measure_quality(spec)


def _worker() -> None:
    """Subprocess entry point: one JSON spec on stdin, one JSON result on stdout."""
    serve(measure)


__all__ = [
    "MEMORY_STEPS",
    "fill_ratios",
    "measure",
    "measure_isolated",
    "measure_quality",
    "measure_xl",
    "memory_method",
]
