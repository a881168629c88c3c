"""``listops``: Long Range Arena ListOps (Tay et al. 2020) with a dense, local or BigBird
attention pattern, so the same task compares dense and sparse attention on long inputs.

An encoder (BERT-style, pre-norm) reads ``<cls> tokens...`` and classifies the pooled
``<cls>`` state into the expression's value 0-9. ``--attention`` chooses the pattern of
every layer, passed down as a lazy :mod:`qkv.masks` object combined with the padding, so
the block-sparse backend computes only the blocks it needs:

* ``dense``: full attention (padding only);
* ``local``: a sliding window of ``window`` tokens (default 64) plus ``<cls>`` as a
  global token (it must see the whole expression to classify it);
* ``bigbird``: BigBird's window, global and random blocks (Zaheer et al. 2020) with blocks
  of ``block`` tokens (default 16), global block 0 holding ``<cls>``.

Options: ``max_len`` (longest expression, default 512; LRA uses 2,000), ``n_train``/
``n_valid``/``n_test`` (defaults 5,000/500/500), ``seed``, ``min_len`` (default
``max_len // 4``), ``attention``, ``window``, ``block``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from qkv import masks
from qkv.data import listops as lo
from qkv.models import TransformerConfig
from qkv.tasks._classify import ClassifyTask
from qkv.tasks._common import (
    check_choice,
    check_positive,
    pad_ids,
    sized_config,
    write_task_file,
)
from qkv.tasks._limits import POINTER, check_generated, list_bytes, tuple_bytes
from qkv.tasks.base import Split, TaskError
from qkv.tasks.options import LengthOption, OptionsLike, SeedOption, SizeOptions, option
from qkv.training.objective import Batch

PATTERNS = ("dense", "local", "bigbird")


class ListOpsTask(ClassifyTask):
    """ListOps classification with a chosen attention pattern (see the module docstring)."""

    @dataclass
    class Options(LengthOption, SizeOptions, SeedOption):
        """listops's options."""

        attention: str = option("dense", "the attention pattern", choices=PATTERNS)
        min_len: int | None = option(None, "shortest expression in tokens", shown="max_len // 4")
        window: int = option(64, "local: tokens in the sliding window")
        block: int = option(16, "bigbird: tokens per block")

    options: Options
    name = "listops"
    prediction = "the value of each expression"
    class_names: ClassVar[tuple[str, ...]] = tuple(str(i) for i in range(10))
    default_sizes: ClassVar[dict[str, int]] = {"train": 5000, "valid": 500, "test": 500}
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 64,
        "n_heads": 4,
        "d_ff": 128,
        "n_layers": 2,
        "dropout": 0.1,
        "attn_dropout": 0.0,
        "norm_placement": "pre",
        "pos": "learned",
        "type_vocab_size": 0,
        "mlm_head": False,
        "pooler": True,
        "embed_norm": False,
    }

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        o = self.options
        self.attention = o.attention
        check_choice(self.name, "attention", self.attention, PATTERNS)
        self.max_len = o.max_len if o.max_len is not None else 512
        check_positive(self.name, "max_len", self.max_len, minimum=8)
        self.min_len = o.min_len if o.min_len is not None else self.max_len // 4
        check_positive(self.name, "min_len", self.min_len)
        if self.min_len > self.max_len:
            raise TaskError(
                f"task 'listops': min_len ({self.min_len}) must be <= max_len ({self.max_len})"
            )
        self.window = o.window
        self.block = o.block
        check_positive(self.name, "window", self.window)
        check_positive(self.name, "block", self.block)
        for opt in ("n_train", "n_valid", "n_test"):
            if getattr(o, opt) is not None:
                check_positive(self.name, opt, getattr(o, opt), minimum=0)
        self._splits: dict[str, list[tuple[list[int], int]]] | None = None

    # -- data ----------------------------------------------------------------------------
    def example_bytes(self) -> int:
        """Estimated bytes of one example while the splits are generated: its ids, the
        tuple of them that keeps expressions unique, the copy with ``<cls>``, and the
        ``(ids, label)`` tuples, at the mean length of ``[min_len, max_len]``."""
        t = (self.min_len + self.max_len + 1) // 2
        return 2 * list_bytes(t + 1) + tuple_bytes(t) + 2 * tuple_bytes(2) + 4 * POINTER

    def examples(self, split: Split) -> list[tuple[list[int], int]]:
        """``(token ids with a leading <cls>, label)`` examples of a split.

        Raises:
            TaskError: an unknown split, or more examples than the free memory holds
                (refused before any is generated).
        """
        check_choice(self.name, "split", split, ("train", "valid", "test"))
        if self._splits is None:
            o = self.options
            sizes = {
                s: getattr(o, f"n_{s}") if getattr(o, f"n_{s}") is not None else n
                for s, n in self.default_sizes.items()
            }
            check_generated(self.name, sizes, self.example_bytes())
            data = lo.listops_dataset(sum(sizes.values()), self.min_len, self.max_len, seed=o.seed)
            out, start = {}, 0
            for s in ("test", "valid", "train"):  # held-out splits first: stable under n_train
                out[s] = [([lo.CLS_ID, *ids], y) for ids, y in data[start : start + sizes[s]]]
                start += sizes[s]
            self._splits = out
        return self._splits[split]

    def collate(self, examples: Sequence[tuple[list[int], int]]) -> dict[str, Tensor]:
        """``inputs`` ``(b, s)`` ids, ``padding_mask`` ``(b, s)`` (True = real), ``labels``."""
        ids, mask = pad_ids([x for x, _ in examples], pad=lo.PAD_ID)
        labels = torch.tensor([y for _, y in examples], dtype=torch.long)
        return {"inputs": ids, "padding_mask": mask, "labels": labels}

    def n_tokens(self, batch: Batch) -> int:
        return int(batch["padding_mask"].sum())

    # -- model ---------------------------------------------------------------------------
    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """An :class:`~qkv.models.EncoderConfig` classifier (``n_classes=10``)."""
        sizes = {
            "vocab_size": len(lo.VOCAB),
            "max_len": self.max_len + 1,
            "pad_token_id": lo.PAD_ID,
            "n_classes": lo.NUM_CLASSES,
        }
        return sized_config(self, "encoder", preset, self.default_model, sizes, overrides, base)

    def pattern(self, padding_mask: Tensor) -> masks.Mask:
        """The attention pattern of a batch, padding included, as a lazy mask."""
        pad = masks.padding(padding_mask)
        if self.attention == "dense":
            return pad
        if self.attention == "local":
            return (masks.sliding_window(self.window) | masks.global_tokens([0])) & pad
        return masks.bigbird(self.block, 3, 1, 2, seed=self.options.seed) & pad

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        """``(b, 10)`` logits, every layer attending with the task's pattern; a model whose
        attention is an approximation (``attn_kind`` FAVOR+, Linformer, LSH: they take no
        mask) sees the padding only, and only with the dense pattern.

        Raises:
            TaskError: a sparse pattern asked of an approximate attention.
        """
        kind = getattr(getattr(model, "config", None), "attn_kind", "softmax")
        if kind != "softmax":
            if self.attention != "dense":
                raise TaskError(
                    f"task 'listops': attention {self.attention!r} is a mask, which "
                    f"attn_kind={kind!r} cannot take: use attention 'dense'"
                )
            return model(batch["inputs"], padding_mask=batch["padding_mask"]).logits  # (b, 10)
        out = model(batch["inputs"], mask=self.pattern(batch["padding_mask"]))
        return out.logits  # (b, 10)

    def predict(self, model: nn.Module, inputs: Sequence[str], **_: Any) -> list[str]:
        """The predicted value of each expression (``"[MAX 2 9 ]"`` -> ``"9"``)."""
        try:
            data = [([lo.CLS_ID, *lo.encode(text)], 0) for text in inputs]
        except ValueError as e:
            raise TaskError(str(e)) from None
        return [top[0][0] for top in self.top_classes(model, data, k=1)]

    def save(self, directory: Path) -> None:
        write_task_file(self, Path(directory), {"vocab": list(lo.VOCAB)})

    def load(self, directory: Path) -> None:
        return None


__all__ = ["PATTERNS", "ListOpsTask"]
