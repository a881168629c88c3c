"""Peak memory of one piece of work, for the memory columns of ``qkv bench train`` and
``qkv bench long``, measured in a fresh subprocess (:func:`qkv.bench._isolate.run_isolated`
with :data:`MMAP_ENV`) so that the process's high-water mark is the work's own.

What is counted is what the work allocates above what was there before it: the same
quantity on both devices, the way each can see it.

* CUDA: ``torch.cuda.max_memory_allocated()`` during the work, less the memory allocated
  before its ``warm`` call (what that call leaves allocated, such as AdamW's state, counts).
* CPU: the rise of the resident-set high-water mark (:func:`maxrss_bytes`: Linux's
  ``VmHWM``, else ``ru_maxrss``) during the work above the resident set after its ``warm``
  call, plus the bytes of the tensors the ``warm`` call left for the work (``kept``, e.g.
  AdamW's state). The first call
  of a process also sets up libraries, maps code and, under ``torch.compile``, runs the
  compiler; none of that is the work's memory, and the allocator on CUDA does not see it
  either. The high-water mark is lowered to the current resident set after ``warm``
  (Linux: ``/proc/self/clear_refs``); where that cannot be done the figure is the rise of
  the mark over ``warm`` and the work together, the first call's costs included. With
  :data:`MMAP_ENV`, glibc's ``malloc`` serves every block of 128 KiB or more with its own
  ``mmap`` and unmaps it when freed, so the resident set follows the memory in use instead
  of keeping the heap's largest size.
"""

from __future__ import annotations

import gc
import resource
import sys
from collections.abc import Callable

import torch

#: The subprocess's environment for a memory measurement: a fixed ``mmap`` threshold
#: (glibc's default one rises after the first large block is freed, and later blocks of
#: that size stay in the heap, resident, after they are freed).
MMAP_ENV: dict[str, str] = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def maxrss_bytes() -> int:
    """This process's resident-set high-water mark, in bytes: Linux's ``VmHWM`` (of this
    process's own memory map), else ``getrusage``'s ``ru_maxrss``.

    On Linux ``ru_maxrss`` is never below the mark its parent's memory map had when this
    process was started (the kernel carries it over ``exec``): a child of a large parent
    reads the parent's mark and its own growth as zero; ``VmHWM`` is its own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # not Linux
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Lower the resident-set high-water mark to the current resident set (Linux: ``5``
    written to ``/proc/self/clear_refs``).

    Returns:
        Whether the mark was reset.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def optimizer_state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of the tensors an optimizer keeps between steps (AdamW: its two moments)."""
    return sum(
        t.numel() * t.element_size()
        for state in opt.state.values()
        for t in state.values()
        if isinstance(t, torch.Tensor)
    )


class PeakMeter:
    """Measures one piece of work (see the module docstring): :meth:`start` before the
    ``warm`` call, :meth:`warmed` after it, :meth:`peak` after the work.

    Args:
        device: where the work runs (``cuda``: the allocator's counters; else the
            resident set).
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.base = 0

    def start(self) -> None:
        """Take the baseline: before the ``warm`` call."""
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            reset_peak_rss()
            self.base = maxrss_bytes()

    def warmed(self, kept: int = 0) -> None:
        """Between the ``warm`` call and the work; ``kept``: bytes of the tensors the
        ``warm`` call left for the work (counted on the CPU, where its other costs are
        left out; CUDA's allocator counts them itself)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif reset_peak_rss():
            self.base = maxrss_bytes() - kept

    def peak(self) -> int:
        """Bytes the work needed above the baseline (0 when it needed nothing new)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return max(0, int(torch.cuda.max_memory_allocated(self.device)) - self.base)
        return max(0, maxrss_bytes() - self.base)


def peak_bytes(
    work: Callable[[], object],
    device: torch.device,
    warm: Callable[[], object],
    kept: Callable[[], int] | None = None,
) -> int:
    """Peak memory of ``work()`` after ``warm()`` (:class:`PeakMeter`).

    Args:
        work: the work measured.
        device: where it runs.
        warm: called first, e.g. the same work once.
        kept: after ``warm``, the bytes of the tensors it left for the work (None: 0).

    Returns:
        Bytes.
    """
    meter = PeakMeter(device)
    meter.start()
    warm()
    meter.warmed(kept() if kept is not None else 0)
    work()
    return meter.peak()


__all__ = [
    "MMAP_ENV",
    "PeakMeter",
    "maxrss_bytes",
    "optimizer_state_bytes",
    "peak_bytes",
    "reset_peak_rss",
]
