"""The quality section of ``qkv bench long``: character-level language models of each
attention kind, trained the same way on the same text at a long context, then scored on
held-out text: bits per character against training time.

Every model has the same width, depth, heads, learned absolute positions (Transformer-XL:
its relative ones), no dropout, and is trained by :class:`qkv.training.Trainer` with the
same batches (AdamW, cosine schedule) for the same wall time (``train_time`` seconds, the
schedule stretched to fit; ``steps`` is only an upper bound). The kinds:

* ``sdpa``: exact attention (the reference);
* ``local``: block-sparse causal sliding-window attention of ``window`` keys
  (``sliding_window``, Mistral's; the ``blocksparse`` backend);
* ``lsh``: Reformer's LSH attention (:class:`~qkv.attn.LSHSelfAttention`);
* ``favor``: Performer's FAVOR+ (:class:`~qkv.attn.FavorAttention`);
* ``xl``: Transformer-XL, each training chunk run in segments with a memory
  (``segment_len = xl_segment``, ``mem_len = xl_memory``).

Linformer has no causal form and is left out.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import torch
import torch.nn.functional as F
from torch import nn

from qkv.data.tokenizers import CharTokenizer
from qkv.models import LMConfig, build
from qkv.training import TrainConfig, Trainer
from qkv.training.objectives import LMObjective
from qkv.training.trainer import StepCallback

KINDS: tuple[str, ...] = ("sdpa", "local", "lsh", "favor", "xl")
#: share of the text held out for evaluation (its end)
VALID_FRACTION = 0.05


@dataclass
class QualityRun:
    """One trained model.

    Attributes:
        kind: from :data:`KINDS`.
        bpc: bits per character on the held-out chunks.
        train_s: training seconds (the trainer's clock).
        tokens: training tokens seen.
        steps: optimizer steps taken in ``train_time``.
        model: the trained model (in eval mode).
        valid_ids: the held-out token ids (the text's end).
        eval_s: evaluation seconds.
    """

    kind: str
    bpc: float
    train_s: float
    tokens: int
    eval_s: float
    steps: int
    model: nn.Module = field(repr=False)
    valid_ids: list[int] = field(repr=False)


def lm_config(kind: str, *, vocab: int, context: int, settings: Any) -> LMConfig:
    """The language model of ``kind`` (``settings``: a :class:`~qkv.bench.long.LongBenchConfig`)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    base: dict[str, Any] = {
        "d_model": settings.lm_d_model,
        "n_heads": settings.lm_n_heads,
        "d_ff": 4 * settings.lm_d_model,
        "n_layers": settings.lm_n_layers,
        "vocab_size": vocab,
        "max_len": context,
        "pos": "learned",
        "dropout": 0.0,
        "attn_dropout": 0.0,
    }
    if kind == "local":
        base.update(sliding_window=settings.window, attn_backend="blocksparse")
    elif kind == "lsh":
        base.update(
            attn_kind="lsh", lsh_bucket_size=settings.bucket_size, lsh_n_hashes=settings.n_hashes
        )
    elif kind == "favor":
        base.update(attn_kind="favor", favor_features=settings.favor_features)
    elif kind == "xl":
        seg = min(settings.xl_segment, context)
        base.update(pos="xl", mem_len=settings.xl_memory, segment_len=seg)
    return LMConfig(**base)


class Windows(Sequence[list[int]]):
    """``n`` random windows of ``length`` tokens of ``ids``, cut when asked for (a long
    run's windows would not fit in memory as lists)."""

    def __init__(self, ids: list[int], n: int, length: int, gen: torch.Generator) -> None:
        self.ids, self.length = ids, length
        self.starts = torch.randint(0, len(ids) - length, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, i: int) -> list[int]: ...
    @overload
    def __getitem__(self, i: slice) -> list[list[int]]: ...
    def __getitem__(self, i: int | slice) -> list[int] | list[list[int]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        s = int(self.starts[i])
        return self.ids[s : s + self.length]


def quality_trainer(
    kind: str,
    model: nn.Module,
    train: Sequence[list[int]],
    settings: Any,
    *,
    steps: int,
    max_time: float | None,
    on_step: StepCallback | None = None,
) -> Trainer:
    """The trainer of a quality run: AdamW, cosine schedule, ``settings``' batch size,
    learning rate, warmup, device, threads and seed, no evaluation, no files (the memory
    subprocess of :mod:`qkv.bench.long_memory` builds the same one for a few steps)."""
    train_cfg = TrainConfig(
        steps=steps,
        max_time=max_time,
        batch_size=settings.train_batch_size,
        optimizer="adamw",
        lr=settings.lr,
        schedule="cosine",
        warmup=settings.warmup_steps,
        log_every=max(1, steps),
        eval_every=0,
        device=settings.device,
        progress=False,
        threads=settings.threads,
        seed=settings.seed,
    )
    return Trainer(
        model, train, None, config=train_cfg, objective=LMObjective(), name=kind, on_step=on_step
    )


def train_and_score(kind: str, text: str, settings: Any) -> QualityRun:
    """Train one model of ``kind`` on ``text`` and score it (see the module docstring).

    Raises:
        ValueError: a text too short for the context.
    """
    tok = CharTokenizer.train([text])
    ids = tok.encode(text)
    cut = int(len(ids) * (1 - VALID_FRACTION))
    train_ids, valid_ids = ids[:cut], ids[cut:]
    need = settings.context + 2
    if len(train_ids) < need or len(valid_ids) < need:
        raise ValueError(
            f"the text ({len(ids):,} characters) is too short for context {settings.context}"
        )
    gen = torch.Generator().manual_seed(settings.seed)
    train = Windows(
        train_ids, settings.steps * settings.train_batch_size, settings.context + 1, gen
    )
    stride = max(1, (len(valid_ids) - need) // settings.valid_chunks)
    valid = [
        valid_ids[s : s + settings.context + 1] for s in range(0, len(valid_ids) - need, stride)
    ]
    valid = valid[: settings.valid_chunks]

    torch.manual_seed(settings.seed)
    model = build(
        lm_config(kind, vocab=tok.vocab_size, context=settings.context, settings=settings)
    )
    trainer = quality_trainer(
        kind, model, train, settings, steps=settings.steps, max_time=settings.train_time
    )
    quiet = io.StringIO()  # the trainer's own report
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        summary = trainer.fit()
    model.eval()
    dev = next(model.parameters()).device
    t0 = time.perf_counter()
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(valid), settings.train_batch_size):
            batch = torch.tensor(valid[i : i + settings.train_batch_size], device=dev)  # (b, s + 1)
            logits = model(batch[:, :-1])
            nll += F.cross_entropy(
                logits.float().flatten(0, 1), batch[:, 1:].flatten(), reduction="sum"
            ).item()
            count += batch[:, 1:].numel()
    return QualityRun(
        kind=kind,
        bpc=nll / count / math.log(2),
        train_s=float(summary["train_seconds"]),
        tokens=int(summary["step"]) * settings.train_batch_size * settings.context,
        eval_s=time.perf_counter() - t0,
        steps=int(summary["step"]),
        model=model,
        valid_ids=valid_ids,
    )


__all__ = ["KINDS", "QualityRun", "Windows", "lm_config", "quality_trainer", "train_and_score"]
