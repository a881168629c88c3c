"""Sizes that need more memory than a machine has are refused before anything is allocated.

A small machine is simulated (``available_memory`` monkeypatched) rather than anything big
allocated, and what would allocate (the model constructors, the generators, the BPE trainer)
is replaced by a function that fails the test if it is ever reached.
"""

from __future__ import annotations

import importlib
import os
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


# -- processes and threads: one line saying what could not start ----------------------------
#: What the ``tokenizers`` package's panic says when rayon cannot start its threads.
PANIC_TEXT = (
    "The global thread pool has not been initialized.: ThreadPoolBuildError { kind: "
    'IOError(Os { code: 11, kind: WouldBlock, message: "Resource temporarily unavailable" }) }'
)


class PanicException(BaseException):
    """Stands for ``pyo3_runtime.PanicException`` (a ``BaseException``), which only Rust
    code raises."""


class _PanickingHF:
    """A ``tokenizers.Tokenizer`` whose parallel calls panic as on a full process table."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.pre_tokenizer = self.decoder = None

    def train_from_iterator(self, *args: Any, **kwargs: Any) -> None:
        raise PanicException(PANIC_TEXT)

    def encode_batch(self, *args: Any, **kwargs: Any) -> None:
        raise PanicException(PANIC_TEXT)

    def token_to_id(self, token: str) -> int:
        return ["<pad>", "<bos>", "<eos>", "<unk>"].index(token)


@pytest.fixture
def nproc_64(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process limit of 64 and no address-space limit, whatever this machine has."""
    import resource

    limits = {resource.RLIMIT_NPROC: (64, 64), resource.RLIMIT_AS: (resource.RLIM_INFINITY,) * 2}
    real = resource.getrlimit
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits.get(which) or real(which))


def test_tokenizer_training_threads_that_cannot_start(
    monkeypatch: pytest.MonkeyPatch,
    nproc_64: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import tokenizers

    from qkv.cli import main

    monkeypatch.setattr(tokenizers, "Tokenizer", _PanickingHF)
    argv = ["train", "--task", "synthetic", "--tokenizer", "bpe", "--vocab-size", "300",
            "--n-train", "8", "--n-valid", "2", "--n-test", "2", "--steps", "1",
            "--no-progress", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "qkv: error: could not start the tokenizer's training threads (Errno 11: resource "
        "temporarily unavailable): the process limit (ulimit -u) is 64; raise `ulimit -u`, or "
        "run the tokenizer on one thread: TOKENIZERS_PARALLELISM=false (or RAYON_NUM_THREADS=1)"
    )


def test_tokenizer_encoding_threads_and_other_panics() -> None:
    from qkv._resources import ResourceLimitError

    tok = BPETokenizer(_PanickingHF())
    with pytest.raises(ResourceLimitError, match=r"could not start the tokenizer's encoding"):
        tok.encode_batch(["a", "b"])
    other = _PanickingHF()

    def a_bug(*args: Any, **kwargs: Any) -> None:
        raise PanicException("index out of bounds: the len is 3 but the index is 7")

    other.encode_batch = a_bug  # type: ignore[method-assign]
    with pytest.raises(PanicException, match="index out of"):  # a bug stays a bug
        BPETokenizer(other).encode_batch(["a"])


def test_espeak_that_cannot_start(monkeypatch: pytest.MonkeyPatch, nproc_64: None) -> None:
    import errno
    import subprocess

    from qkv._resources import ResourceLimitError
    from qkv.data import audio

    def no_fork(*args: Any, **kwargs: Any) -> None:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(audio, "require_espeak", lambda: "espeak-ng")
    monkeypatch.setattr(subprocess, "run", no_fork)
    with pytest.raises(ResourceLimitError) as e:
        audio.synthesize("hello")
    assert str(e.value).startswith(
        "could not start espeak-ng (Errno 11: resource temporarily unavailable): the process "
        "limit (ulimit -u) is 64; raise `ulimit -u`, or let fewer processes run at once"
    )


def test_speech_corpus_threads_that_cannot_start(
    monkeypatch: pytest.MonkeyPatch, nproc_64: None, tmp_path: Path
) -> None:
    from qkv._resources import ResourceLimitError
    from qkv.data import audio

    class NoThreads:
        def __init__(self, max_workers: int) -> None:
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(audio, "require_espeak", lambda: "espeak-ng")
    monkeypatch.setattr(audio, "ThreadPoolExecutor", NoThreads)
    settings = audio.SpeechSettings(n_train=2, n_valid=1, n_test=1)
    sentences = [f"sentence number {i}" for i in range(4)]
    with pytest.raises(ResourceLimitError, match=r"could not start 3 threads to run espeak-ng "
                       r"\(can't start new thread\): .* fewer workers \(--workers 1\)"):  # fmt: skip
        audio.speech_corpus(sentences, settings, cache_dir=tmp_path, workers=3)


@pytest.mark.parametrize(
    "raised",
    [
        BlockingIOError(11, "Resource temporarily unavailable"),
        RuntimeError("can't start new thread"),
        PanicException(PANIC_TEXT),
    ],
    ids=["errno 11", "thread", "panic"],
)
def test_the_cli_says_what_could_not_start_wherever_it_happens(
    raised: BaseException,
    monkeypatch: pytest.MonkeyPatch,
    nproc_64: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A place qkv does not wrap (a torch pool, a library's own process) still gives one
    line naming the limit and exit 2, not a bare ``[Errno 11]`` or a Rust traceback."""
    import qkv.tasks
    from qkv.cli import main

    def fail(*args: Any, **kwargs: Any) -> None:
        raise raised

    monkeypatch.setattr(qkv.tasks, "load_trained", fail)
    assert main(["generate", "--checkpoint", "anywhere", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qkv: error: could not start a process or thread (")
    assert "the process limit (ulimit -u) is 64; raise `ulimit -u`, or run with fewer " in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_file_error_of_errno_11_is_not_a_process_limit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import qkv.tasks
    from qkv.cli import main

    def fail(*args: Any, **kwargs: Any) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable", "/some/fifo")

    monkeypatch.setattr(qkv.tasks, "load_trained", fail)
    assert main(["generate", "--checkpoint", "anywhere", "x"]) == 2
    assert capsys.readouterr().err == "qkv: error: /some/fifo: Resource temporarily unavailable\n"


def test_threads_bounds_the_tokenizers_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from qkv.cli._common import apply_threads

    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    before = torch.get_num_threads()
    try:
        apply_threads(argparse.Namespace(threads=1), "generate")
    finally:
        torch.set_num_threads(before)
    assert os.environ["RAYON_NUM_THREADS"] == "1"
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.setenv("RAYON_NUM_THREADS", "7")  # the user's own setting wins
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    try:
        apply_threads(argparse.Namespace(threads=2), "generate")
    finally:
        torch.set_num_threads(before)
    assert os.environ["RAYON_NUM_THREADS"] == "7" and "TOKENIZERS_PARALLELISM" not in os.environ


def test_torch_threads_without_room_are_refused_before_any_work(
    monkeypatch: pytest.MonkeyPatch, nproc_64: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """libgomp ends the process when torch's pool cannot start (nothing to catch): the CLI
    starts as many waiting threads first, and says so in one line when they cannot."""
    import threading

    import qkv.tasks
    from qkv.cli import main

    real_start = threading.Thread.start
    room = {"threads": 2}

    def start(self: threading.Thread) -> None:
        if room["threads"] == 0:
            raise RuntimeError("can't start new thread")
        room["threads"] -= 1
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    # the default chosen for the machine: 4 idle cores (torch's pool is started with 4)
    from qkv.cli import _common
    from qkv.cli._threads import ThreadChoice

    monkeypatch.setattr(
        _common, "choose_threads", lambda given=None: ThreadChoice(4, "measured", 4)
    )
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(qkv.tasks, "load_trained", _never)
    assert main(["generate", "--checkpoint", "anywhere", "x"]) == 2
    assert capsys.readouterr().err == (
        "qkv: error: could not start torch's 4 CPU threads (can't start new thread): the "
        "process limit (ulimit -u) is 64; raise `ulimit -u`, or run with fewer (--threads 1)\n"
    )
    room["threads"] = 3  # room for the 3 the calling thread does not stand for
    with pytest.raises(AssertionError, match="reached an allocation"):
        main(["generate", "--checkpoint", "anywhere", "x"])


#: A child that maps everything it needs, then limits its address space to 1 MiB more:
#: no thread can get its stack (Rust's 2 MiB, Python's and libgomp's 8 MiB), whoever runs
#: it (root ignores `ulimit -u`, not `ulimit -v`). It imports qkv.data and qkv._resources
#: only (torch, for the package), not the CLI: about 4 s on a quiet core.
_CHILD = """
import json, resource, sys
import tokenizers, tokenizers.decoders, tokenizers.models, tokenizers.pre_tokenizers
import tokenizers.trainers
from qkv._resources import check_thread_room
from qkv.data._bpe import BPETokenizer
def vm():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm() + 2**20, resource.RLIM_INFINITY))
out = []
for run in (lambda: BPETokenizer.train(["a b c d"] * 50, vocab_size=300),
            lambda: check_thread_room(1, "torch's 2 CPU threads", "use --threads 1")):
    try:
        run()
        out.append("ran")
    except Exception as e:
        out.append(f"{type(e).__name__}: {e}")
print(json.dumps(out))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_threads_that_cannot_start_in_a_real_process() -> None:
    """The real thing, in a child process whose threads cannot get a stack: the
    ``tokenizers`` package's panic and torch's pool each give one error naming what could
    not start, and Rust's own report of the panic is not printed."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS")}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    r = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                       env=env, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    tok, pool = json.loads(r.stdout)
    assert tok.startswith("ResourceLimitError: could not start the tokenizer's training threads")
    assert pool.startswith("ResourceLimitError: could not start torch's 2 CPU threads")
    for line in (tok, pool):
        assert "the address-space limit (ulimit -v) is" in line
    assert "panicked" not in r.stderr and "ThreadPoolBuildError" not in r.stderr, r.stderr
