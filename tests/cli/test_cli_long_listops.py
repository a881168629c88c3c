"""``qkv bench long --sections listops`` (:mod:`qkv.cli._long_listops`): every kind builds
the attention it names, ListOps feeds approximate attention the padding only, and the
command line's rows (never their timings)."""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
from torch import nn

from qkv.attn import FavorAttention, LinformerAttention, LSHSelfAttention, MultiHeadAttention
from qkv.bench import LongBenchConfig
from qkv.bench._memory import MMAP_ENV
from qkv.bench._timing import num_threads
from qkv.cli import main
from qkv.cli._long_listops import (
    LISTOPS_KINDS,
    listops_setup,
    measure_listops,
    memory_setup,
    run_listops,
)
from qkv.models import build
from qkv.tasks.base import TaskError, TaskOptions
from qkv.tasks.synthetic.listops import ListOpsTask


@pytest.mark.parametrize("kind", list(LISTOPS_KINDS))
def test_listops_kinds_build_the_attention_they_name(kind):
    cfg = LongBenchConfig(listops_len=32, listops_train=8, listops_valid=4, bucket_size=8)
    options, overrides = listops_setup(kind, cfg)
    task = ListOpsTask(options)
    model = build(task.model_config(**overrides))
    attn = {"favor": FavorAttention, "linformer": LinformerAttention, "lsh": LSHSelfAttention}
    kinds = {type(m) for m in model.modules() if isinstance(m, nn.Module)}
    assert attn.get(kind, MultiHeadAttention) in kinds
    assert task.attention == {"local": "local", "bigbird": "bigbird"}.get(kind, "dense")
    batch = task.collate(task.examples("train")[:3])
    assert task.logits(model, batch).shape == (3, 10)


def test_listops_refuses_a_mask_for_approximate_attention():
    task = ListOpsTask(TaskOptions(max_len=32, n_train=4, n_valid=2, n_test=1,
                                   extra={"attention": "local"}))  # fmt: skip
    model = build(task.model_config(attn_kind="favor"))
    with pytest.raises(TaskError, match="attn_kind='favor' cannot take"):
        task.logits(model, task.collate(task.examples("train")[:2]))


def test_cli_listops_rows(tmp_path):
    out = tmp_path / "l.json"
    argv = ["bench", "long", "--sections", "listops", "--listops-impls", "dense,favor"]
    argv += ["--listops-len", "32", "--listops-train", "16", "--listops-valid", "8"]
    argv += ["--train-time", "0.2", "--train-batch-size", "4", "--threads", "1", "--json", str(out)]
    assert main([*argv, "--no-isolate"]) == 0  # memory: the test below
    rows = json.loads(out.read_text())["results"]
    assert [(r["section"], r["impl"]) for r in rows] == [("listops", "dense"), ("listops", "favor")]
    assert all(r["status"] == "ok" and 0 <= r["accuracy"] <= 100 for r in rows)


def test_listops_rows_get_their_peak_memory_from_a_subprocess_each(monkeypatch):
    """The rows' memory subprocesses, run here: each row has a peak and a ratio to dense."""
    calls = []

    def here(module, spec, timeout, env=None):
        calls.append((module, spec["kind"], env))
        with num_threads(None):  # the measurement sets its threads: keep this process's
            assert callable(importlib.import_module(module)._worker)
            return json.loads(json.dumps(measure_listops(spec)))

    monkeypatch.setattr("qkv.bench.long_memory.run_isolated", here)
    cfg = LongBenchConfig(
        sections=("listops",), listops_impls=("dense", "local"), listops_len=32,
        listops_train=16, listops_valid=4, train_time=0.2, train_batch_size=4, threads=1,
    )  # fmt: skip
    rows = run_listops(cfg)
    assert calls == [("qkv.cli._long_listops", k, MMAP_ENV) for k in ("dense", "local")]
    assert all(r.status == "ok" and isinstance(r.peak_bytes, int) for r in rows)
    assert rows[0].peak_bytes > 0 and rows[0].memory_ratio == 1.0
    assert rows[1].memory_ratio == pytest.approx(rows[1].peak_bytes / rows[0].peak_bytes)


def test_listops_memory_trains_on_the_longest_expressions():
    cfg = LongBenchConfig(listops_len=64, train_batch_size=2, threads=1)
    options, overrides = memory_setup("local", cfg)
    assert overrides == listops_setup("local", cfg)[1] and options.attention == "local"
    train = ListOpsTask(options).examples("train")
    assert len(train) == 2 * 2 and all(56 + 1 <= len(ids) <= 64 + 1 for ids, _ in train)  # <cls>
    with num_threads(None):
        r = measure_listops({"kind": "dense", "settings": dataclasses.asdict(cfg)})
    assert r["status"] == "ok" and r["peak_bytes"] > 0
