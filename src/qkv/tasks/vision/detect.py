"""``detect``: DETR (Carion et al. 2020) finds the clothes on Fashion-MNIST canvases.

Each canvas is a 64x64 grey image holding 1 to 5 real Fashion-MNIST items at random
positions and scales (0.6x to 1.2x), with their boxes and classes known
(:mod:`qkv.data.canvases`; seeded, drawn on demand). Train canvases use the training items
but a held-out sample of 5,000 of them, valid canvases those 5,000, test canvases the
``t10k`` items: no item is on canvases of two splits. ``--items digits`` draws 32x32
canvases of scikit-learn's 8x8 digits instead (small and always there: the tests use it).

Metrics: COCO mAP@[.5:.95] (``map``) and mAP@.5 (``map_50``, the headline), 0-100, from
torchmetrics' ``MeanAveragePrecision`` or pycocotools (:func:`qkv.data.metrics.detection_map`);
without either package installed, evaluation reports the set loss only (``loss`` first) and
says so once.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from qkv.data.boxes import cxcywh_to_xyxy
from qkv.data.canvases import CanvasExamples, CanvasSpec
from qkv.data.metrics import detection_map, map_backend
from qkv.layers.mode import evaluating
from qkv.models import DETR, TransformerConfig
from qkv.tasks._common import (
    check_choice,
    check_positive,
    sized_config,
    write_task_file,
)
from qkv.tasks.base import SPLITS, Split, Task, TaskError
from qkv.tasks.options import OptionsLike
from qkv.tasks.vision._boxes import SHOW_SCORE, detections
from qkv.tasks.vision._image import read_task_image
from qkv.tasks.vision._items import ITEMS, ItemOptions, ItemPool, item_pools
from qkv.tasks.vision.fashion_mnist import FashionMNISTTask
from qkv.tasks.vision.viz import report_for_detection
from qkv.training.evaluate import model_device, to_device
from qkv.training.objective import Batch, LossOutput
from qkv.training.set_loss import set_loss

#: per item source: canvas drawing rules and default canvas counts (train, valid, test)
SOURCES: dict[str, tuple[CanvasSpec, dict[str, int]]] = {
    # a million training canvases: drawn on demand, so a 30-minute run (~400,000 canvases)
    # never sees one twice (with 20,000 the valid class loss rose after 12 epochs)
    "fashion-mnist": (
        CanvasSpec(size=64, scale=(0.6, 1.2)),
        {"train": 1_000_000, "valid": 500, "test": 1000},
    ),
    "digits": (CanvasSpec(size=32, scale=(1.0, 2.0)), {"train": 2000, "valid": 200, "test": 200}),
}


class DetectTask(Task):
    """Object detection on canvases of real items with DETR.

    Options: ``data`` (the Fashion-MNIST directory; default the Debian package's), ``seed``,
    ``n_train`` / ``n_valid`` / ``n_test`` (canvases; default 1,000,000 / 500 / 1,000 for
    Fashion-MNIST), ``items`` (``"fashion-mnist"`` or ``"digits"``).
    """

    Options = ItemOptions
    options: ItemOptions
    name = "detect"
    kind = "detect"
    names_inputs = True
    unit = "img"  # the throughput counts canvases
    #: DETR on a CNN with batch norm that halves the canvas until a 4x4 feature map is left
    #: (:meth:`model_config` keeps the first stages of ``backbone_channels``: all 4 for the
    #: 64x64 Fashion-MNIST canvases, 3 for the 32x32 digits), 3 + 3 layers of width 128,
    #: 10 queries (at most 5 objects per canvas), no dropout. Chosen by measurement
    #: (docs/vision.md: 10-minute pilots on one thread).
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 128,
        "n_heads": 8,
        "d_ff": 512,
        "n_encoder_layers": 3,
        "n_decoder_layers": 3,
        "n_queries": 10,
        "dropout": 0.0,
        "backbone": "cnn",
        "backbone_channels": [32, 64, 128, 256],
        "backbone_norm": True,
    }
    #: AdamW with DETR's gradient clipping (0.1) and weight decay (1e-4); lr 1e-3, ten times
    #: the paper's 1e-4, for a short run (3e-4: valid mAP@.5 27.7 after 10 min, 1e-3: 51.3,
    #: 2e-3: 45.8); cosine decay.
    recipe: ClassVar[dict[str, Any]] = {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "clip_norm": 0.1,
        "batch_size": 32,
        "schedule": "cosine",
        "warmup": 300,
        "eval_every": 1500,
        "eval_limit": 500,
    }

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        o = self.options
        self.items = o.items
        check_choice(self.name, "items", self.items, ITEMS)
        if self.items == "digits" and o.data is not None:
            raise TaskError(f"task {self.name!r} with items 'digits' reads no --data")
        for opt in ("n_train", "n_valid", "n_test"):
            if getattr(o, opt) is not None:
                check_positive(self.name, opt, getattr(o, opt), minimum=0)
        self.spec, self.default_sizes = SOURCES[self.items]
        self._splits: dict[str, CanvasExamples] | None = None

    @property
    def image_size(self) -> int:
        """Canvas side in pixels."""
        return self.spec.size

    @property
    def class_names(self) -> tuple[str, ...]:
        """The item classes."""
        if self.items == "digits":
            return tuple(str(i) for i in range(10))
        return FashionMNISTTask.class_names

    # -- data ----------------------------------------------------------------------------
    def _pools(self) -> dict[str, ItemPool]:
        """Item images ``(n, H, W)``, labels and pixel scale of each split's pool."""
        return item_pools(self.items, self.options.data, self.options.seed, self.name)

    def examples(self, split: Split) -> CanvasExamples:
        """``(image (1, S, S) in [0, 1], {"labels": (k,), "boxes": (k, 4) cxcywh in [0, 1]})``
        canvases of a split."""
        check_choice(self.name, "split", split, SPLITS)
        if self._splits is None:
            o = self.options
            sizes = {
                "train": o.n_train if o.n_train is not None else self.default_sizes["train"],
                "valid": o.n_valid if o.n_valid is not None else self.default_sizes["valid"],
                "test": o.n_test if o.n_test is not None else self.default_sizes["test"],
            }
            self._splits = {
                s: CanvasExamples(items, labels, sizes[s], o.seed * 3 + k, self.spec, scale)
                for k, (s, (items, labels, scale)) in enumerate(self._pools().items())
            }
        return self._splits[split]

    def collate(self, examples: Sequence[tuple[Tensor, Mapping[str, Tensor]]]) -> Batch:
        """``inputs`` ``(b, 1, S, S)``; ``labels`` ``(b, M)`` (-1 pads) and ``boxes``
        ``(b, M, 4)`` with ``M`` the most objects of a canvas in the batch."""
        images = torch.stack([x for x, _ in examples])
        m = max([1] + [int(t["labels"].numel()) for _, t in examples])
        labels = torch.full((len(examples), m), -1, dtype=torch.long)
        boxes = torch.zeros(len(examples), m, 4)
        for i, (_, t) in enumerate(examples):
            n = int(t["labels"].numel())
            labels[i, :n], boxes[i, :n] = t["labels"], t["boxes"]
        return {"inputs": images, "labels": labels, "boxes": boxes}

    @staticmethod
    def targets(batch: Batch) -> list[dict[str, Tensor]]:
        """A batch's padded targets as one ``{"labels", "boxes"}`` per image."""
        out = []
        for labels, boxes in zip(batch["labels"], batch["boxes"]):
            real = labels >= 0
            out.append({"labels": labels[real], "boxes": boxes[real]})
        return out

    def n_tokens(self, batch: Batch) -> int:
        """Canvases in the batch."""
        return int(batch["inputs"].shape[0])

    # -- model ---------------------------------------------------------------------------
    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """A :class:`~qkv.models.DETRConfig` sized to the canvases (image size, one channel,
        the item classes).

        Raises:
            TaskError: a preset of another family, or fewer queries than a canvas has items.
        """
        sizes = {
            "image_size": self.image_size,
            "in_channels": 1,
            "n_classes": len(self.class_names),
        }
        stages = (self.image_size // 4).bit_length() - 1  # stride-2 stages down to 4x4
        default = self.default_model | {
            "backbone_channels": self.default_model["backbone_channels"][:stages]
        }
        cfg = sized_config(self, "detr", preset, default, sizes, overrides, base)
        if cfg.n_queries < self.spec.max_items:  # type: ignore[attr-defined]
            raise TaskError(
                f"task {self.name!r}: n_queries ({cfg.n_queries}) must be at least the "  # type: ignore[attr-defined]
                f"{self.spec.max_items} items a canvas may hold"
            )
        return cfg

    # -- objective and metrics -----------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        """DETR's set loss (:func:`qkv.training.set_loss.set_loss`) times the batch size,
        ``n`` = canvases (the trainer's mean is DETR's per-batch loss)."""
        out = model(batch["inputs"])
        loss, logs = set_loss(out, self.targets(batch), model.config)
        b = int(batch["inputs"].shape[0])
        return LossOutput(loss * b, b, {k: v * b for k, v in logs.items()})

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        n = max(n, 1)
        return {"loss": loss_sum / n, **{k: v / n for k, v in logs.items()}}

    def evaluate(
        self,
        model: nn.Module,
        split: Split = "valid",
        *,
        batch_size: int = 64,
        limit: int | None = None,
        beam_size: int = 1,
        progress: bool = False,
    ) -> dict[str, float]:
        """``map_50`` (the headline), ``map``, then the set loss and its parts on (the first
        ``limit`` canvases of) a split. Without a mAP package: the loss only (first).

        Raises:
            TaskError: the split is empty.
        """
        data = self.examples(split)[:limit]
        if len(data) == 0:
            raise TaskError(f"task {self.name!r}: split {split!r} has no examples to evaluate")
        dev = model_device(model)
        loss_sum, n, logs = 0.0, 0, {}
        preds: list[dict[str, Tensor]] = []
        truth: list[dict[str, Tensor]] = []
        size = self.image_size
        with evaluating(model), torch.no_grad():
            for start in range(0, len(data), batch_size):
                batch = to_device(
                    self.collate(
                        [data[i] for i in range(start, min(start + batch_size, len(data)))]
                    ),
                    dev,
                )
                out = model(batch["inputs"])
                targets = self.targets(batch)
                loss, parts = set_loss(out, targets, model.config)
                b = int(batch["inputs"].shape[0])
                loss_sum, n = loss_sum + float(loss) * b, n + b
                for k, v in parts.items():
                    logs[k] = logs.get(k, 0.0) + v * b
                preds += [
                    {k: v.cpu() for k, v in d.items()}
                    for d in detections(out.logits, out.boxes, size)
                ]
                truth += [
                    {
                        "boxes": (cxcywh_to_xyxy(t["boxes"]) * size).cpu(),
                        "labels": t["labels"].cpu(),
                    }
                    for t in targets
                ]
        metrics = self.metrics(loss_sum, n, logs)
        if map_backend() is None:
            _warn_no_map()
            return metrics
        found = detection_map(preds, truth)
        return {"map_50": found["map_50"], "map": found["map"], **metrics}

    def _describe(self, d: Mapping[str, Tensor]) -> str:
        keep = d["scores"] >= SHOW_SCORE
        parts = [
            f"{self.class_names[int(c)]} {float(s):.2f} ({', '.join(f'{v:.0f}' for v in b.tolist())})"
            for b, s, c in zip(d["boxes"][keep], d["scores"][keep], d["labels"][keep])
        ]
        return "; ".join(parts) if parts else f"nothing above {SHOW_SCORE}"

    def samples(self, model: nn.Module, k: int = 3) -> list[str]:
        """The first ``k`` valid canvases: their objects and what the model found."""
        data = self.examples("valid")[:k]
        batch = to_device(self.collate([data[i] for i in range(len(data))]), model_device(model))
        with evaluating(model), torch.no_grad():
            out = model(batch["inputs"])
        lines = []
        for i, (d, t) in enumerate(
            zip(detections(out.logits, out.boxes, self.image_size), self.targets(batch))
        ):
            names = ", ".join(self.class_names[int(c)] for c in t["labels"])
            lines.append(f"valid canvas {i}: holds {names}; found {self._describe(d)}")
        return lines

    def read_image(self, source: str) -> Tensor:
        """One canvas ``(1, S, S)``: an image file (grey, resized) or ``SPLIT:N``."""
        return read_task_image(self, source, self.image_size)

    def pictures(
        self,
        model: nn.Module,
        source: str,
        out: str | Path,
        *,
        target: str | None = None,
        question: str | None = None,
        png_dir: str | Path | None = None,
        title: str | None = None,
    ) -> Path:
        """Each object query's attention beside its box (see :meth:`Task.pictures`)."""
        if not isinstance(model, DETR):
            raise ValueError(f"task 'detect' needs a DETR, got {type(model).__name__}")
        return report_for_detection(model, self, source, out, png_dir=png_dir, title=title)

    def predict(self, model: nn.Module, inputs: Sequence[str], **_: Any) -> list[str]:
        """The detections of each input (a file or ``SPLIT:N``) with a score of at least 0.5:
        ``"Sneaker 0.93 (x0, y0, x1, y1); ..."`` in pixels."""
        images = torch.stack([self.read_image(x) for x in inputs]).to(model_device(model))
        with evaluating(model), torch.no_grad():
            out = model(images)
        return [self._describe(d) for d in detections(out.logits, out.boxes, self.image_size)]

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write ``task.json`` (canvas size and class names)."""
        state = {"image_size": self.image_size, "class_names": list(self.class_names)}
        write_task_file(self, Path(directory), state)

    def load(self, directory: Path) -> None:
        """Nothing to read."""


_WARNED: list[bool] = []


def _warn_no_map() -> None:
    if not _WARNED:
        _WARNED.append(True)
        print(
            "qkv detect: no COCO mAP implementation installed (`pip install pycocotools`, "
            "or `pip install 'qkv[detect]'`): evaluation reports the set loss only",
            file=sys.stderr,
        )


__all__ = ["DetectTask", "detections"]
