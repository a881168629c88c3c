"""What ``torch.compile`` gains on a training step, by what it covers: nothing (``eager``),
the model's forward (``model``), or the forward and the cross-entropy as one function
(``whole``, what ``qkv train --compile`` and ``qkv bench train --compile`` compile).

    python scripts/compile_scope.py eager,model,whole 5

Same GPT-2-shaped model as ``qkv bench train`` (d=256, 4 heads, 6 layers, vocabulary
8192), batch 8 x 256, AdamW, 2 threads; interleaved rounds (``qkv.bench._timing``); prints
the first step (the compiler's time included) and, per variant, the median step and the
median of per-round ratios ``time(first variant) / time(variant)``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from qkv.bench._timing import paired_ratio, time_interleaved
from qkv.bench._twins import ModelShape, qkv_lm


def make_step(variant: str, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One AdamW training step of a fresh model, compiled as ``variant`` says."""
    torch.manual_seed(0)
    shape = ModelShape(d_model=256, n_heads=4, n_layers=6, vocab_size=8192, max_len=256)
    model = qkv_lm(shape).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    call = torch.compile(model) if variant == "model" else model

    def loss() -> torch.Tensor:
        return F.cross_entropy(call(x).flatten(0, 1), y.flatten())

    loss_of = torch.compile(loss) if variant == "whole" else loss

    def step() -> None:
        loss_of().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()
    print(f"{variant}: first step {time.perf_counter() - t0:.1f} s", flush=True)
    return step


def main() -> None:
    variants = sys.argv[1].split(",") if len(sys.argv) > 1 else ["eager", "model", "whole"]
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    torch.set_num_threads(2)
    ids = torch.randint(1, 8192, (8, 257), generator=torch.Generator().manual_seed(0))
    x, y = ids[:, :-1], ids[:, 1:]
    fns = {v: make_step(v, x, y) for v in variants}
    times = time_interleaved(fns, warmup=1, repeats=repeats, min_repeats=3, time_budget=100)
    for v in variants:
        ratio = paired_ratio(times[variants[0]], times[v])
        print(f"{v}: median {statistics.median(times[v]):.3f} s, {ratio:.2f}x vs {variants[0]}")


if __name__ == "__main__":
    main()
