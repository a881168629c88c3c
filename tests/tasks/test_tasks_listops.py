"""The listops task: labels, patterns reaching the model, sparse == dense backends."""

import pytest
import torch

from qkv import masks
from qkv.data import listops as lo
from qkv.models import build
from qkv.tasks import TaskError, TaskOptions, get_task


def _task(att, **kw):
    return get_task(
        "listops",
        TaskOptions(n_train=32, n_valid=8, n_test=8, max_len=96, extra={"attention": att, **kw}),
    )


def test_examples_start_with_cls_and_labels_are_values():
    t = _task("dense")
    for ids, y in t.examples("train"):
        assert ids[0] == lo.CLS_ID and 0 <= y <= 9
        tokens = lo.decode(ids[1:]).split()
        assert 24 <= len(tokens) <= 96


@pytest.mark.parametrize("att", ["local", "bigbird"])
def test_sparse_pattern_blocksparse_equals_math_in_the_model(att):
    t = _task(att, window=8, block=8)
    torch.manual_seed(0)
    model = build(t.model_config(dropout=0.0)).eval()
    batch = t.collate(t.examples("valid")[:4])
    pattern = t.pattern(batch["padding_mask"])
    s = batch["inputs"].shape[1]
    dense = pattern.to_dense(s, s)  # (b, 1, s, s)
    assert not dense.all()  # really sparse
    assert dense[:, 0, :, 0].all() if att == "local" else True  # <cls> is global
    model.set_backend("math")
    ref = t.logits(model, batch)
    model.set_backend("blocksparse")
    got = t.logits(model, batch)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_local_pattern_limits_the_receptive_field():
    t = _task("local", window=4)
    pad = torch.ones(1, 40, dtype=torch.bool)
    d = t.pattern(pad).to_dense(40, 40)[0, 0]
    ref = (masks.sliding_window(4) | masks.global_tokens([0])).to_dense(40, 40)
    assert torch.equal(d, ref)
    assert not d[20, 35] and d[0, 35] and d[35, 0]


def test_listops_bad_options():
    with pytest.raises(TaskError, match="attention must be one of .*'dilated'"):
        _task("dilated")
    with pytest.raises(TaskError, match=r"min_len \(200\) must be <= max_len \(96\)"):
        _task("dense", min_len=200)
