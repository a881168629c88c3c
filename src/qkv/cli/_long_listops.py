"""The ``listops`` section of ``qkv bench long``: encoders of every attention kind trained
on ListOps (:class:`~qkv.tasks.synthetic.listops.ListOpsTask`) for the same wall time, then their
accuracy on the valid split: quality against training time on classification.

The kinds: ``dense`` (exact), ``local`` and ``bigbird`` (block-sparse masks on the
``blocksparse`` backend), ``favor`` (FAVOR+), ``linformer`` and ``lsh`` (bidirectional LSH).
Every model is the task's default encoder; only its attention differs. It lives here, in
the command line (the layer above both ``tasks`` and ``bench``), because it trains a task:
:mod:`qkv.bench` sits below the apps layer and may not import it; :mod:`qkv.bench.long`
holds the other sections. Each row's peak memory of a training step is measured after
its run in a fresh subprocess (:func:`measure_listops`, as :mod:`qkv.bench.long_memory`
measures the quality rows).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Callable
from typing import Any

import torch

from qkv.bench._isolate import serve
from qkv.bench._memory import PeakMeter, optimizer_state_bytes
from qkv.bench.long_config import LongBenchConfig, LongRow
from qkv.bench.long_memory import MEMORY_STEPS, fill_ratios, measure_isolated
from qkv.tasks.run import build_trainer
from qkv.tasks.synthetic.listops import ListOpsTask

#: kind -> (the task's attention pattern, model config overrides)
LISTOPS_KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "dense": ("dense", {"attn_backend": "sdpa"}),
    "local": ("local", {"attn_backend": "blocksparse"}),
    "bigbird": ("bigbird", {"attn_backend": "blocksparse"}),
    "favor": ("dense", {"attn_kind": "favor"}),
    "linformer": ("dense", {"attn_kind": "linformer"}),
    "lsh": ("dense", {"attn_kind": "lsh"}),
}


def listops_setup(kind: str, cfg: LongBenchConfig) -> tuple[ListOpsTask.Options, dict[str, Any]]:
    """The task options and model overrides of ``kind``.

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in LISTOPS_KINDS:
        raise ValueError(f"listops kind must be one of {list(LISTOPS_KINDS)}, got {kind!r}")
    pattern, overrides = LISTOPS_KINDS[kind]
    options = ListOpsTask.Options(
        max_len=cfg.listops_len,
        n_train=cfg.listops_train,
        n_valid=cfg.listops_valid,
        n_test=1,
        seed=cfg.seed,
        attention=pattern,
    )
    overrides = dict(overrides)
    if kind == "linformer":
        overrides["linformer_k"] = cfg.linformer_k
    if kind == "lsh":
        overrides.update(lsh_bucket_size=cfg.bucket_size, lsh_n_hashes=cfg.n_hashes)
    return options, overrides


def _settings(cfg: LongBenchConfig, steps: int, max_time: float | None) -> dict[str, Any]:
    """The training settings of a listops run (of its memory subprocess: a few steps)."""
    return {
        "max_time": max_time,
        "steps": steps,
        "batch_size": cfg.train_batch_size,
        "eval_every": 0,
        "progress": False,
        "threads": cfg.threads,
        "device": cfg.device,
        "seed": cfg.seed,
    }


def run_listops(
    cfg: LongBenchConfig, progress: Callable[[LongRow], None] | None = None
) -> list[LongRow]:
    """Train every kind of ``cfg.listops_impls`` for ``cfg.train_time`` seconds; rows with
    the valid accuracy (``accuracy``, percent), the training tokens per second and, with
    ``cfg.isolate``, the peak memory of a training step (:func:`measure_listops`)."""
    rows = []
    for kind in cfg.listops_impls:
        row = LongRow(section="listops", impl=kind, length=cfg.listops_len, mode="train")
        options, overrides = listops_setup(kind, cfg)
        settings = _settings(cfg, cfg.steps, cfg.train_time)
        quiet = io.StringIO()  # the trainer's own report
        try:
            trainer = build_trainer("listops", settings, options=options, model_overrides=overrides)
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                summary = trainer.fit()
        except (ValueError, RuntimeError) as e:  # one kind failing must not end the run
            row.status, row.reason = "error", f"{type(e).__name__}: {str(e)[:200]}"
        else:
            row.train_s = float(summary["train_seconds"])
            row.record_times([row.train_s])
            row.accuracy = float(summary.get("valid", {}).get("accuracy", float("nan")))
            train = trainer.train_examples
            mean_len = sum(len(ids) for ids, _ in train) / max(1, len(train))  # type: ignore[arg-type]
            seen = int(summary["step"]) * cfg.train_batch_size * mean_len
            row.tokens_per_s = seen / max(row.train_s, 1e-9)
            if cfg.isolate:
                spec = {"kind": kind, "settings": dataclasses.asdict(cfg)}
                measure_isolated("qkv.cli._long_listops", spec, row, cfg)
        rows.append(row)
        if progress is not None:
            progress(row)
    fill_ratios(rows, "dense")
    return rows


def memory_setup(kind: str, cfg: LongBenchConfig) -> tuple[ListOpsTask.Options, dict[str, Any]]:
    """:func:`listops_setup` for the memory subprocess: the training examples of
    :data:`MEMORY_STEPS <qkv.bench.long_memory.MEMORY_STEPS>` batches, all in the top
    eighth of the lengths (as long as the run's longest batches)."""
    options, overrides = listops_setup(kind, cfg)
    options = dataclasses.replace(
        options,
        min_len=cfg.listops_len - cfg.listops_len // 8,
        n_train=MEMORY_STEPS * cfg.train_batch_size,
        n_valid=1,  # the trainer evaluates once at the end (no gradients: a smaller peak)
    )
    return options, overrides


def measure_listops(spec: dict[str, Any]) -> dict[str, Any]:
    """One listops row's peak memory of a training step, in this process (the body of
    its subprocess): the same task, model and trainer for :data:`MEMORY_STEPS
    <qkv.bench.long_memory.MEMORY_STEPS>` steps, on expressions in the top eighth of the
    lengths (as long as the run's longest batches; every batch is padded to its longest);
    the last step measured, plus the AdamW state the first made
    (:class:`~qkv.bench._memory.PeakMeter`).

    Args:
        spec: ``{"kind", "settings": LongBenchConfig fields}``.

    Returns:
        ``{"status", "reason", "times", "peak_bytes"}``.
    """
    cfg = LongBenchConfig(**spec["settings"])
    options, overrides = memory_setup(spec["kind"], cfg)
    meter = PeakMeter(torch.device(cfg.device))

    def after(step: int, logs: dict[str, float]) -> None:
        if step == 1:
            meter.warmed(optimizer_state_bytes(trainer.optimizer))

    trainer = build_trainer(
        "listops",
        _settings(cfg, MEMORY_STEPS, None),
        options=options,
        model_overrides=overrides,
        on_step=after,
    )
    quiet = io.StringIO()  # the trainer's own report: this process's stdout is its result
    meter.start()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        trainer.fit()
    return {"status": "ok", "reason": "", "times": [], "peak_bytes": meter.peak()}


def _worker() -> None:
    """Subprocess entry point: one JSON spec on stdin, one JSON result on stdout."""
    serve(measure_listops)


__all__ = ["LISTOPS_KINDS", "listops_setup", "measure_listops", "memory_setup", "run_listops"]
