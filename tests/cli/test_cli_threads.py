"""The default ``--threads`` of train, eval, generate, viz and bench: the cores this process
may use less those busy now (measured on them, the load average where that cannot be read),
at least 1; ``OMP_NUM_THREADS`` when set; ``--threads N`` always wins. The header (train) or
a line on standard error (the others) says what was chosen and why."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

from qkv.cli import _threads, main
from qkv.cli._bench_common import _config
from qkv.cli._threads import ThreadChoice, busy_cores, choose_threads, cpu_ticks


@pytest.fixture
def machine(monkeypatch):
    """A machine of ``cores`` cores with ``busy`` of them busy (``busy=None``: /proc/stat
    unreadable, ``load`` is the load average then), no quota, no OMP_NUM_THREADS."""

    def make(cores: int, busy: float | None, load: float = 0.0, quota: int | None = None):
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(_threads, "busy_cores", lambda cpus, seconds=0.2: busy)
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load), raising=False)
        monkeypatch.setattr(_threads, "quota_cores", lambda: quota)

    return make


@pytest.mark.parametrize(
    ("cores", "busy", "threads"),
    [(2, 0.0, 2), (2, 0.4, 2), (2, 0.5, 1), (2, 1.9, 1), (2, 4.0, 1), (8, 2.6, 5), (1, 0.0, 1)],
)
def test_the_default_is_the_idle_cores(machine, cores, busy, threads):
    machine(cores, busy)
    choice = choose_threads()
    assert (choice.threads, choice.how, choice.cores, choice.busy) == (
        threads, "measured", cores, busy)  # fmt: skip


def test_the_load_average_stands_in_where_proc_stat_cannot_be_read(machine):
    machine(2, None, load=1.9)
    assert choose_threads().threads == 1
    machine(2, None, load=0.3)
    assert choose_threads() == ThreadChoice(2, "measured", cores=2, busy=0.3)


def test_given_threads_and_omp_num_threads_win(machine, monkeypatch):
    machine(2, 1.9)
    assert choose_threads(2) == ThreadChoice(2, "given")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads() == ThreadChoice(2, "env")
    assert choose_threads(1) == ThreadChoice(1, "given")


def test_a_cgroup_quota_bounds_the_count(machine):
    machine(8, 0.0, quota=3)
    choice = choose_threads()
    assert choice.threads == 3 and ", a quota of 3;" in choice.note()
    machine(8, 6.0, quota=3)  # the busy cores bound it more: no quota in the note
    assert choose_threads() == ThreadChoice(2, "measured", cores=8, busy=6.0)


def test_notes_say_why():
    assert ThreadChoice(1, "given").note() == "1 thread"
    assert ThreadChoice(1, "env").note() == "1 thread: OMP_NUM_THREADS"
    assert ThreadChoice(1, "measured", cores=2, busy=1.94).note() == (
        "1 thread: 2 cores, 1.9 busy now; --threads N to set")  # fmt: skip


STAT_A = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0\nintr 1 2\n"
STAT_B = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 25 0 5 40 0 0 0 0\ncpu1 5 0 10 55 0 0 0 0\nintr 1 2\n"


def test_busy_cores_count_only_the_cpus_this_process_may_use(monkeypatch):
    assert cpu_ticks(STAT_A, [0, 1]) == {0: (10, 50), 1: (10, 50)}
    assert cpu_ticks(STAT_A, [1]) == {1: (10, 50)}
    texts = iter([STAT_A, STAT_B, STAT_A, STAT_B])
    monkeypatch.setattr(_threads, "_read_stat", lambda: next(texts))
    # cpu0: 20 busy ticks of 20; cpu1: 5 of 20 (idle and iowait are not busy)
    assert busy_cores([0, 1], seconds=0.0) == pytest.approx(1.25)
    assert busy_cores([0], seconds=0.0) == pytest.approx(1.0)
    monkeypatch.setattr(_threads, "_read_stat", lambda: None)
    assert busy_cores([0, 1], seconds=0.0) is None


def test_train_uses_and_says_the_chosen_threads(machine, tmp_path, capsys):
    machine(2, 1.9)
    before = torch.get_num_threads()
    try:
        run = tmp_path / "run"
        assert main(["train", "--task", "copy", "--n-train", "64", "--max-len", "4",
                     "--steps", "1", "--batch-size", "8", "--model", "d_model=16",
                     "--model", "n_heads=2", "--model", "d_ff=32",
                     "--model", "n_encoder_layers=1", "--model", "n_decoder_layers=1",
                     "--eval-limit", "4", "--no-progress", "--out", str(run)]) == 0  # fmt: skip
        assert torch.get_num_threads() == 1
        cap = capsys.readouterr()
        device = next(x for x in cap.err.splitlines() if x.strip().startswith("device:"))
        assert "cpu (1 thread: 2 cores, 1.9 busy now; --threads N to set)" in device
        machine(2, 0.0)
        assert main(["eval", "--checkpoint", str(run), "--limit", "2", "--json"]) == 0
        cap = capsys.readouterr()
        assert "qkv eval: 2 threads: 2 cores, 0.0 busy now; --threads N to set" in cap.err
        assert torch.get_num_threads() == 2 and json.loads(cap.out)
        assert main(["eval", "--checkpoint", str(run), "--limit", "2", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1 and "qkv eval: " not in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_bench_configs_take_the_chosen_threads(machine):
    from qkv.bench.attention import AttentionBenchConfig

    machine(2, 1.9)
    args = argparse.Namespace(threads=None, lengths=(64,))
    assert _config(AttentionBenchConfig, args).threads == 1
    # said by qkv.cli.main once the benchmark has run (a refusal stays one line)
    assert args.threads_note == "qkv bench: 1 thread: 2 cores, 1.9 busy now; --threads N to set"
    args = argparse.Namespace(threads=2, lengths=(64,))
    assert _config(AttentionBenchConfig, args).threads == 2
    assert not hasattr(args, "threads_note")


def test_a_refusal_after_the_choice_stays_one_line(machine, capsys):
    machine(2, 1.9)
    assert main(["generate", "--checkpoint", "no-such-run", "a"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qkv: error:") and "\n" not in err
