"""The ``listops`` section of ``qkv bench long``: encoders of every attention kind trained
on ListOps (:class:`~qkv.tasks.listops.ListOpsTask`) for the same wall time, then their
accuracy on the valid split: quality against training time on classification.

The kinds: ``dense`` (exact), ``local`` and ``bigbird`` (block-sparse masks on the
``blocksparse`` backend), ``favor`` (FAVOR+), ``linformer`` and ``lsh`` (bidirectional LSH).
Every model is the task's default encoder; only its attention differs. It lives here, in
the apps layer, because it trains a task; :mod:`qkv.bench.long` holds the other sections.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

from qkv.bench.long_config import LongBenchConfig, LongRow
from qkv.tasks.base import TaskOptions
from qkv.tasks.run import build_trainer

#: kind -> (the task's attention pattern, model config overrides)
LISTOPS_KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "dense": ("dense", {"attn_backend": "sdpa"}),
    "local": ("local", {"attn_backend": "blocksparse"}),
    "bigbird": ("bigbird", {"attn_backend": "blocksparse"}),
    "favor": ("dense", {"attn_kind": "favor"}),
    "linformer": ("dense", {"attn_kind": "linformer"}),
    "lsh": ("dense", {"attn_kind": "lsh"}),
}


def listops_setup(kind: str, cfg: LongBenchConfig) -> tuple[TaskOptions, dict[str, Any]]:
    """The task options and model overrides of ``kind``.

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in LISTOPS_KINDS:
        raise ValueError(f"listops kind must be one of {list(LISTOPS_KINDS)}, got {kind!r}")
    pattern, overrides = LISTOPS_KINDS[kind]
    options = TaskOptions(
        max_len=cfg.listops_len,
        n_train=cfg.listops_train,
        n_valid=cfg.listops_valid,
        n_test=1,
        seed=cfg.seed,
        extra={"attention": pattern},
    )
    overrides = dict(overrides)
    if kind == "linformer":
        overrides["linformer_k"] = cfg.linformer_k
    if kind == "lsh":
        overrides.update(lsh_bucket_size=cfg.bucket_size, lsh_n_hashes=cfg.n_hashes)
    return options, overrides


def run_listops(
    cfg: LongBenchConfig, progress: Callable[[LongRow], None] | None = None
) -> list[LongRow]:
    """Train every kind of ``cfg.listops_impls`` for ``cfg.train_time`` seconds; rows with
    the valid accuracy (``accuracy``, percent) and the training tokens per second."""
    rows = []
    for kind in cfg.listops_impls:
        row = LongRow(section="listops", impl=kind, length=cfg.listops_len, mode="train")
        options, overrides = listops_setup(kind, cfg)
        settings = {
            "max_time": cfg.train_time,
            "steps": cfg.steps,
            "batch_size": cfg.train_batch_size,
            "eval_every": 0,
            "progress": False,
            "threads": cfg.threads,
            "device": cfg.device,
            "seed": cfg.seed,
        }
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
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


__all__ = ["LISTOPS_KINDS", "listops_setup", "run_listops"]
