"""The memory a training step's activations need is checked before the first step, with
the estimate in GiB and how it was made (``copy --n-train 60000 --batch-size 60000 --max-len
64 --model d_model=256`` reached the allocator). The free memory is set small here, so the
refused runs stay tiny."""

from __future__ import annotations

import pytest
import torch
from _surface import TINY_RUN, assert_refused

import qkv.models.memory as memory
from qkv.models import MemoryLimitError, Seq2SeqConfig
from qkv.tasks import get_task
from qkv.tasks._activations import activation_bytes, check_activations, layer_count
from qkv.training import TrainConfig

GIB = 2**30


@pytest.fixture
def one_gib_free(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_memory", lambda device: GIB)


def _big_batch(n: int) -> list[str]:
    args = ["d_model=256" if a == "d_model=16" else a for a in TINY_RUN]
    args[args.index("--n-train") + 1] = str(n)
    args[args.index("--batch-size") + 1] = str(n)
    args[args.index("--max-len") + 1] = "64"
    return args


def test_a_batch_whose_activations_do_not_fit_is_refused(one_gib_free, tmp_path, capsys):
    # 600 x 65 tokens x 2 layers x (34 x 256 + 5 x 2 heads x 65) bytes x 2 (float32) = 1.4 GiB
    line = assert_refused(["train", *_big_batch(600), "--out", str(tmp_path / "r")], capsys,
                          "activations of a step", "micro-batch 600", "d_model 256",
                          "GiB", "--batch-size")  # fmt: skip
    assert "(1.4 GiB) does not fit in the 0.9 GiB" in line
    assert not (tmp_path / "r").exists()


def test_grad_accum_and_recompute_shrink_the_step(one_gib_free):
    task = get_task("copy", {"n_train": 600, "max_len": 64})
    model = Seq2SeqConfig(vocab_size=32, d_model=256, n_heads=2, d_ff=32, n_encoder_layers=1,
                          n_decoder_layers=1, max_len=128)  # fmt: skip
    cpu = torch.device("cpu")
    with pytest.raises(MemoryLimitError, match=r"micro-batch 600 .*\(1\.4 GiB\)"):
        check_activations(task, model, TrainConfig(batch_size=600), cpu)
    # a quarter of the batch per micro-step: 0.34 GiB fits in 0.9
    check_activations(task, model, TrainConfig(batch_size=600, grad_accum=4), cpu)
    # recomputed, one layer is whole and the other keeps its input: 0.72 GiB
    check_activations(task, model, TrainConfig(batch_size=600, activation_checkpointing=True), cpu)
    # two processes of torchrun each take half
    check_activations(task, model, TrainConfig(batch_size=600), cpu, world=2)
    with pytest.raises(MemoryLimitError, match="micro-batch 600"):
        check_activations(task, model, TrainConfig(batch_size=1200), cpu, world=2)


def test_the_estimate():
    # Korthikanti et al. 2022: s b (34 d + 5 h s) bytes per layer at 16 bits
    assert activation_bytes(2, 3, 4, 1, 1, bits16=True, recompute=False) == 3 * 2 * (34 * 4 + 5 * 3)
    assert activation_bytes(2, 3, 4, 1, 5, bits16=False, recompute=False) == 2 * 5 * 906
    # recomputing keeps each layer's input (2 s b d) and one layer whole
    assert activation_bytes(2, 3, 4, 1, 5, bits16=True, recompute=True) == 906 + 4 * 2 * 3 * 2 * 4
    cfg = Seq2SeqConfig(
        vocab_size=10, d_model=16, n_heads=2, n_encoder_layers=3, n_decoder_layers=2
    )
    assert layer_count(cfg) == 5
