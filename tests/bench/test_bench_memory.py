"""The peak-memory method of ``qkv bench``'s memory columns (:mod:`qkv.bench._memory`),
checked on allocations of known size, and the high-water mark a measurement subprocess
reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qkv.bench import _memory

MIB = 2**20


def test_peak_counts_the_work_and_what_warm_kept_not_warms_transients():
    if not _memory.reset_peak_rss():
        pytest.skip("the resident-set high-water mark cannot be reset here (not Linux)")
    kept: list[torch.Tensor] = []

    def warm() -> None:
        torch.ones(300 * MIB // 4).sum()  # 300 MiB, freed: a first call's one-off cost
        kept.append(torch.ones(16 * MIB // 4))  # 16 MiB the work starts from

    def work() -> None:
        torch.ones(64 * MIB // 4).sum()  # 64 MiB at the work's peak

    peak = _memory.peak_bytes(work, torch.device("cpu"), warm, lambda: 16 * MIB)
    assert 76 * MIB <= peak <= 84 * MIB  # 16 + 64 MiB (pages beside them: a few MiB)


def test_optimizer_state_bytes_are_adamws_two_moments():
    model = torch.nn.Linear(10, 20)
    opt = torch.optim.AdamW(model.parameters())
    assert _memory.optimizer_state_bytes(opt) == 0  # made by the first step
    model(torch.randn(3, 10)).sum().backward()
    opt.step()
    n = 10 * 20 + 20
    assert _memory.optimizer_state_bytes(opt) - 2 * 4 * n in (0, 2 * 4)  # + the step counts


def test_a_subprocess_reads_its_own_high_water_mark_not_its_parents():
    """Linux carries a parent's high-water mark over ``exec`` into ``ru_maxrss``: a
    measurement subprocess of a large parent would read the parent's mark and a growth
    of zero. ``maxrss_bytes`` reads the subprocess's own (``VmHWM``)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("not Linux")
    big = torch.ones(1024 * MIB // 4)  # this process: 1 GiB more, resident
    code = "from qkv.bench._memory import maxrss_bytes; print(maxrss_bytes())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) < 900 * MIB  # python and torch alone; the parent holds > 1 GiB
    assert _memory.maxrss_bytes() > int(out.stdout) and big.numel() > 0
