"""``qkv bench long --sections listops`` (:mod:`qkv.tasks.long_listops`): every kind builds
the attention it names, ListOps feeds approximate attention the padding only, and the
command line's rows (never their timings)."""

from __future__ import annotations

import json

import pytest
from torch import nn

from qkv.attn import FavorAttention, LinformerAttention, LSHSelfAttention, MultiHeadAttention
from qkv.bench import LongBenchConfig
from qkv.cli import main
from qkv.models import build
from qkv.tasks.base import TaskError, TaskOptions
from qkv.tasks.listops import ListOpsTask
from qkv.tasks.long_listops import LISTOPS_KINDS, listops_setup


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
    assert main(argv) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["section"], r["impl"]) for r in rows] == [("listops", "dense"), ("listops", "favor")]
    assert all(r["status"] == "ok" and 0 <= r["accuracy"] <= 100 for r in rows)
