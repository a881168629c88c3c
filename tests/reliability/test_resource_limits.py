"""Sizes that need more memory than a machine has are refused before anything is allocated.

A small machine is simulated (``available_memory`` monkeypatched) rather than anything big
allocated, and what would allocate (the model constructors, the generators, the BPE trainer)
is replaced by a function that fails the test if it is ever reached.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import qkv.models as M
from qkv.data import grammar
from qkv.data import listops as lo
from qkv.data.tokenizers import MAX_VOCAB_SIZE, BPETokenizer, WordTokenizer, train_tokenizer
from qkv.models import memory
from qkv.models.memory import MemoryLimitError, check_memory
from qkv.tasks.base import TaskError, TaskOptions
from qkv.tasks.synthetic import copy as copy_mod
from qkv.tasks.synthetic.copy import CopyTask
from qkv.tasks.synthetic.kalo import SyntheticTask
from qkv.tasks.synthetic.listops import ListOpsTask
from qkv.tasks.synthetic.reverse import ReverseTask

GIB = 2**30
HUGE = 10**400
# the module, not the function `qkv.models.build` that shadows it
build_mod = importlib.import_module("qkv.models.build")


def _never(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("reached an allocation that should have been refused")


@pytest.fixture
def free(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``free(n)``: pretend the machine has ``n`` bytes of free memory."""

    def set_free(n_bytes: int) -> None:
        monkeypatch.setattr(memory, "available_memory", lambda device="cpu": n_bytes)

    return set_free


# -- configs: the same refusal on every machine ------------------------------------------
@pytest.mark.parametrize(
    "field", ["d_model", "n_heads", "d_ff", "vocab_size", "max_len", "head_dim", "rel_buckets"]
)
def test_400_digit_sizes(field: str) -> None:
    match = rf"{field} must be at most 1,099,511,627,776, got an int of about 40[01] digits"
    with pytest.raises(ValueError, match=match):
        M.LMConfig(**{field: HUGE})


def test_ints_too_long_to_print_are_refused_by_their_length() -> None:
    with pytest.raises(
        ValueError, match=r"n_layers must be at most 8,192, got an int of about 5,00"
    ):
        M.LMConfig(n_layers=10**5000)
    with pytest.raises(ValueError, match=r"d_ff must be a positive int, got an int of about 5,00"):
        M.LMConfig(d_ff=-(10**5000))


@pytest.mark.parametrize(
    ("cls", "field"),
    [
        (M.LMConfig, "n_layers"),
        (M.EncoderConfig, "n_layers"),
        (M.ViTConfig, "n_layers"),
        (M.Seq2SeqConfig, "n_encoder_layers"),
        (M.Seq2SeqConfig, "n_decoder_layers"),
    ],
)
def test_layers_in_the_millions(cls: type[M.TransformerConfig], field: str) -> None:
    with pytest.raises(ValueError, match=rf"{field} must be at most 8,192, got 1000000"):
        cls(**{field: 10**6})


@pytest.mark.parametrize(
    ("field", "value"), [("d_ff", 1e10), ("n_layers", 12.0), ("vocab_size", "50257")]
)
def test_floats_and_strings_for_ints(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{field} must be a positive int, got {value!r}"):
        M.LMConfig(**{field: value})


def test_d_ff_of_1e10_is_refused_with_the_estimate() -> None:
    # gpt2-small (124,439,808) plus, in each of 12 layers, fc1 and fc2 widened 3,072 -> 1e10
    n = 124_439_808 + 12 * (2 * 768 + 1) * (10**10 - 3072)
    with pytest.raises(ValueError) as e:
        M.LMConfig(d_ff=10**10)
    msg = str(e.value)
    assert f"LMConfig describes a model of {n:,} parameters" in msg
    assert f"({memory.format_gib(4 * n)} in float32)" in msg
    assert "more than the 1,099,511,627,776 (2**40)" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (M.LMConfig, {"n_layers": 8000, "d_model": 8192, "n_heads": 64, "d_ff": 32768}),
        (M.LMConfig, {"vocab_size": 10**12}),
        (M.LMConfig, {"max_len": 10**12}),  # a learned table of 10**12 positions
        (M.EncoderConfig, {"type_vocab_size": 10**10}),
        (M.Seq2SeqConfig, {"vocab_size": 10**10}),
        (M.ViTConfig, {"image_size": 2**20, "patch_size": 1}),
    ],
)
def test_models_no_machine_holds(cls: type[M.TransformerConfig], kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"describes a model of [\d,]+ parameters \([\d,.]+ GiB"):
        cls(**kwargs)


def test_the_ceiling_is_the_analytic_count() -> None:
    ok = M.LMConfig(n_layers=8000, d_model=2048, n_heads=16, d_ff=8192)  # 4e11 parameters
    assert memory.parameter_count(ok) < memory.MAX_PARAMETERS
    # positions without a table cost nothing, however long
    rope = M.LMConfig(pos="rope", max_len=10**12)
    assert memory.parameter_count(rope) == 124_439_808 - 1024 * 768


# -- build: refused on a machine too small for the model ---------------------------------
def test_build_refuses_a_model_larger_than_memory(
    free: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    free(GIB)
    monkeypatch.setitem(build_mod.MODEL_CLASSES, "lm", _never)
    with pytest.raises(MemoryLimitError) as e:
        M.from_preset("gpt2-medium")  # 354,823,168 parameters, 1.3 GiB in float32
    msg = str(e.value)
    assert msg.startswith(
        "model of 354,823,168 parameters in float32 (1.3 GiB) does not fit in the 0.9 GiB of "
        "memory available on cpu (90% of 1.0 GiB free); build it under"
    )
    assert "\n" not in msg and isinstance(e.value, ValueError)


def test_build_counts_the_dtype(
    free: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    free(GIB)
    built = []
    monkeypatch.setitem(build_mod.MODEL_CLASSES, "lm", built.append)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        M.build(M.preset_config("gpt2-medium"))  # 0.7 GiB in float16: fits
    finally:
        torch.set_default_dtype(default)
    assert len(built) == 1


def test_build_counts_buffers(free: Callable[[int], None], monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 sinusoidal tables of 10**9 x 32 floats: a tiny model with 238 GiB of buffers
    cfg = M.preset_config("transformer-tiny", max_len=10**9)
    assert memory.parameter_bytes(cfg) < 2**20
    free(16 * GIB)
    monkeypatch.setitem(build_mod.MODEL_CLASSES, "seq2seq", _never)
    with pytest.raises(MemoryLimitError, match=r"\(238.4 GiB\) does not fit in the 14.4 GiB"):
        M.build(cfg)


def test_build_on_meta_checks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_memory", _never)
    with torch.device("meta"):
        model = M.from_preset("vit-l16")
    assert M.count_parameters(model) == 304_326_632


def test_build_refuses_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = M.LMConfig(n_layers=4000, d_model=4096, n_heads=32, d_ff=16384)  # 8e11 parameters
    if memory.model_bytes(cfg) < memory.available_memory():
        pytest.skip("this machine holds 3 TiB")
    monkeypatch.setitem(build_mod.MODEL_CLASSES, "lm", _never)
    with pytest.raises(MemoryLimitError, match="model of 805,"):
        M.build(cfg)


# -- check_memory and available_memory --------------------------------------------------
def test_check_memory_message(free: Callable[[int], None]) -> None:
    free(4 * GIB)
    check_memory(3 * GIB, "fits")
    with pytest.raises(MemoryLimitError) as e:
        check_memory(5 * GIB, "a thing")
    assert str(e.value) == (
        "a thing (5.0 GiB) does not fit in the 3.6 GiB of memory available on cpu "
        "(90% of 4.0 GiB free)"
    )
    with pytest.raises(MemoryLimitError, match=r"^a thing \(5.0 GiB\) .* the 4.0 GiB .* cpu; go$"):
        check_memory(5 * GIB, "a thing", fraction=1, hint="go")
    with pytest.raises(MemoryLimitError, match=r"the 0.4 GiB"):
        check_memory(GIB, "a thing", fraction=0.1)


def test_kv_cache_of_a_million_sequences(free: Callable[[int], None]) -> None:
    free(64 * GIB)
    cfg = M.preset_config("gpt2-small")
    need = memory.kv_cache_bytes(cfg, 10**6, 1024)  # 12 layers x 2 x 768 floats per token
    assert need == 10**6 * 1024 * 12 * 2 * 768 * 4
    with pytest.raises(MemoryLimitError, match=r"KV cache \(70,312.5 GiB\)"):
        check_memory(need, "KV cache")


def test_check_memory_skips_what_it_cannot_measure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_memory", _never)
    check_memory(2**80, "anything", device="meta")
    monkeypatch.undo()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_memory(2**80, "anything", device="cuda")  # torch itself will say there is no CUDA
    check_memory(2**80, "anything", device=torch.device("xpu"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"need_bytes": -1}, "need_bytes must be an int >= 0, got -1"),
        ({"need_bytes": 1.5}, "need_bytes must be an int >= 0, got 1.5"),
        ({"fraction": 0}, r"fraction must be a number in \(0, 1\], got 0"),
        ({"fraction": 1.5}, r"fraction must be a number in \(0, 1\], got 1.5"),
        ({"fraction": True}, r"fraction must be a number in \(0, 1\], got True"),
    ],
)
def test_check_memory_arguments(kwargs: dict[str, Any], match: str) -> None:
    args = {"need_bytes": 1, "what": "x"} | kwargs
    with pytest.raises(ValueError, match=match):
        check_memory(**args)


def test_available_memory_reads_meminfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       2048 kB\nMemFree:  10 kB\nMemAvailable:   1024 kB\n")
    monkeypatch.setattr(memory, "_MEMINFO", info)
    monkeypatch.setattr(memory, "_CGROUP_FILES", ())
    assert memory.available_memory() == 1024 * 1024
    assert memory.available_memory("mps") == 1024 * 1024  # unified memory


def test_available_memory_falls_back_to_sysconf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "_MEMINFO", tmp_path / "missing")
    monkeypatch.setattr(memory, "_CGROUP_FILES", ())
    pages = {"SC_AVPHYS_PAGES": 10, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(memory.os, "sysconf", pages.__getitem__)
    assert memory.available_memory() == 40960
    monkeypatch.setattr(memory.os, "sysconf", _never_value_error)
    with pytest.raises(ValueError, match="cannot measure the free memory of this host"):
        memory.available_memory()


def _never_value_error(name: str) -> int:
    raise ValueError(f"unknown {name}")


def test_available_memory_within_a_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "meminfo"
    info.write_text("MemAvailable:   1024 kB\n")
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    monkeypatch.setattr(memory, "_MEMINFO", info)
    monkeypatch.setattr(memory, "_CGROUP_FILES", ((limit, usage),))
    limit.write_text("700000\n")
    usage.write_text("200000\n")
    assert memory.available_memory() == 500000
    limit.write_text("max\n")
    assert memory.available_memory() == 1024 * 1024


def test_available_memory_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (123 * GIB, 140 * GIB))
    assert memory.available_memory("cuda:0") == 123 * GIB
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cannot measure the memory of cuda: CUDA is not"):
        memory.available_memory("cuda")


def test_available_memory_of_this_host_and_meta() -> None:
    assert memory.available_memory() > 0
    with pytest.raises(ValueError, match="cannot measure the memory of device type 'meta'"):
        memory.available_memory("meta")


# -- tokenizers ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "match"),
    [
        (1e9, "BPE vocab_size must be an int, got 1000000000.0"),
        (True, "BPE vocab_size must be an int, got True"),
        (100, r"BPE vocab_size \(100\) must be at least 260 \(4 specials \+ 256 bytes\)"),
        (10**9, r"BPE vocab_size must be at most 16,777,216 \(2\*\*24.*got 1,000,000,000"),
        (HUGE, r"BPE vocab_size must be at most 16,777,216 .*got an int of 1329 bits"),
    ],
)
def test_bpe_vocab_size(value: object, match: str, monkeypatch: pytest.MonkeyPatch) -> None:
    trainers = pytest.importorskip("tokenizers.trainers")
    monkeypatch.setattr(trainers, "BpeTrainer", _never)
    with pytest.raises(ValueError, match=match):
        BPETokenizer.train(["some text"], vocab_size=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        train_tokenizer("bpe", ["some text"], vocab_size=value)  # type: ignore[arg-type]


def test_word_vocab_size() -> None:
    assert MAX_VOCAB_SIZE == 2**24
    with pytest.raises(ValueError, match="max_size must be an int, got 1000000000.0"):
        WordTokenizer.train(["a b"], max_size=1e9)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_size \(4\) must be at least 5"):
        WordTokenizer.train(["a b"], max_size=4)
    with pytest.raises(ValueError, match="word vocab_size must be at most 16,777,216"):
        train_tokenizer("word", ["a b"], vocab_size=2**24 + 1)
    assert train_tokenizer("word", ["a b"], vocab_size=2**24).vocab_size == 6


def test_task_with_an_absurd_bpe_vocabulary() -> None:
    opts = TaskOptions(n_train=8, n_valid=2, n_test=2, tokenizer="bpe", vocab_size=10**9)
    task = SyntheticTask(opts)
    with pytest.raises(TaskError, match="task 'synthetic': BPE vocab_size must be at most"):
        task.src_tokenizer  # noqa: B018


# -- generated tasks ----------------------------------------------------------------------
@pytest.mark.parametrize("cls", [CopyTask, ReverseTask])
def test_copy_refuses_a_billion_examples(
    cls: type[CopyTask], free: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    free(16 * GIB)
    monkeypatch.setattr(copy_mod, "random", types.SimpleNamespace(Random=_never))
    task = cls(TaskOptions(n_train=10**9))
    with pytest.raises(TaskError) as e:
        task.examples("train")
    msg = str(e.value)
    assert msg.startswith(
        f"task {cls.name!r}: 1,000,001,000 examples (n_test=500, n_valid=500, "
        f"n_train=1,000,000,000) of ~"
    )
    assert "does not fit in the 14.4 GiB of memory available" in msg
    assert msg.endswith(
        "ask for fewer examples (n_train, n_valid, n_test) or shorter ones (max_len)"
    )
    assert isinstance(e.value.__cause__, MemoryLimitError)


def test_copy_refuses_strings_longer_than_memory(
    free: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    free(16 * GIB)
    monkeypatch.setattr(copy_mod, "random", types.SimpleNamespace(Random=_never))
    task = CopyTask(TaskOptions(n_train=10, n_valid=1, n_test=1, max_len=10**12))
    with pytest.raises(TaskError, match=r"task 'copy': 12 examples .* of ~[\d,]+ bytes each"):
        task.examples("train")


def test_copy_with_fewer_strings_than_examples_ends() -> None:
    # max_len 1 over 16 symbols: 16 strings for 50 examples, so they repeat (documented)
    task = CopyTask(TaskOptions(n_train=40, n_valid=5, n_test=5, max_len=1))
    train = task.examples("train")
    assert len(train) == 40 and {p.src for p in train} <= set("0123456789abcdef")
    # 2 symbols, lengths 1..3: 8 examples; strings of 3 symbols (8 of them) stay distinct
    task = CopyTask(TaskOptions(n_train=6, n_valid=1, n_test=1, max_len=3, extra={"symbols": "ab"}))
    held_out = {p.src for s in ("valid", "test") for p in task.examples(s) if len(p.src) == 3}
    assert not held_out & {p.src for p in task.examples("train")}


def test_synthetic_refuses_a_billion_examples(
    free: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    free(16 * GIB)
    monkeypatch.setattr(grammar, "make_splits", _never)
    task = SyntheticTask(TaskOptions(n_train=10**9))
    with pytest.raises(TaskError, match=r"task 'synthetic': 1,000,001,000 examples .* GiB\)"):
        task.examples("train")


@pytest.mark.parametrize(
    "options",
    [
        TaskOptions(n_train=10**9),
        TaskOptions(n_train=10, n_valid=1, n_test=1, max_len=10**10),
    ],
    ids=["n_train", "max_len"],
)
def test_listops_refuses_what_memory_does_not_hold(
    options: TaskOptions, free: Callable[[int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    free(16 * GIB)
    monkeypatch.setattr(lo, "listops_dataset", _never)
    with pytest.raises(TaskError, match=r"task 'listops': [\d,]+ examples .* does not fit"):
        ListOpsTask(options).examples("train")


def test_listops_checks_split_sizes() -> None:
    with pytest.raises(TaskError, match=r"task 'listops': n_train must be an int >= 0, got -1"):
        ListOpsTask(TaskOptions(n_train=-1))
    with pytest.raises(TaskError, match=r"n_valid must be an int >= 0, got 1e\+20"):
        ListOpsTask(TaskOptions(n_valid=1e20))  # type: ignore[arg-type]


def test_small_requests_are_generated(free: Callable[[int], None]) -> None:
    free(GIB)
    assert len(CopyTask(TaskOptions(n_train=20, n_valid=2, n_test=2)).examples("train")) == 20
    listops = ListOpsTask(TaskOptions(n_train=4, n_valid=1, n_test=1, max_len=32))
    assert len(listops.examples("train")) == 4
