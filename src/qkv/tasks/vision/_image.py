"""Shared machinery of the image-classification tasks (``digits``, ``fashion-mnist``): a ViT
(or, with ``--preset swin``, a Swin Transformer) on grey images (the loss, accuracy and top
classes come from :class:`~qkv.tasks._classify.ClassifyTask`)."""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, overload

import torch
from torch import Tensor, nn

from qkv import models
from qkv.data.images import open_image
from qkv.models import Swin, TransformerConfig
from qkv.tasks._classify import ClassifyTask
from qkv.tasks._common import (
    check_choice,
    check_positive,
    sized_config,
    write_task_file,
)
from qkv.tasks.base import SPLITS, Split, TaskError, split_item, with_truth
from qkv.tasks.options import OptionsLike, SeedOption, SizeOptions, option
from qkv.tasks.vision.viz import report_for_image, report_for_swin
from qkv.training.objective import Batch


class ImageExamples(Sequence[tuple[Tensor, int]]):
    """Images and labels as a sequence of ``(image, label)``: image ``(c, H, W)`` float in
    ``[0, 1]`` (stored as uint8, scaled on access), label an int.

    Args:
        images: ``(n, c, H, W)`` uint8 tensor.
        labels: ``(n,)`` integer tensor.
        scale: the pixel value that maps to 1.0 (255 for 8-bit images, 16 for sklearn digits).
    """

    def __init__(self, images: Tensor, labels: Tensor, scale: float = 255.0) -> None:
        if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"images must be (n, c, H, W) and labels (n,), got {tuple(images.shape)} and "
                f"{tuple(labels.shape)}"
            )
        self.images, self.labels, self.scale = images, labels.long(), scale

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @overload
    def __getitem__(self, i: int) -> tuple[Tensor, int]: ...
    @overload
    def __getitem__(self, i: slice) -> ImageExamples: ...
    def __getitem__(self, i: int | slice) -> tuple[Tensor, int] | ImageExamples:
        if isinstance(i, slice):
            return ImageExamples(self.images[i], self.labels[i], self.scale)
        return self.images[i].float() / self.scale, int(self.labels[i])

    def subset(self, index: Tensor) -> ImageExamples:
        """The examples at ``index`` (a 1-d long tensor)."""
        return ImageExamples(self.images[index], self.labels[index], self.scale)

    def select(self, indices: Sequence[int]) -> ImageExamples:
        """The examples at ``indices``, in one indexing op (the trainer batches with it)."""
        return self.subset(torch.as_tensor(list(indices), dtype=torch.long))


def read_task_image(task: Any, source: str, size: int) -> Tensor:
    """An image task's input ``(1, size, size)`` in ``[0, 1]``: an image file (made grey and
    resized) or ``SPLIT:N``, the image of the ``N``-th example of ``task.examples(SPLIT)``.

    Raises:
        TaskError: a missing or unreadable file, or a bad ``SPLIT:N``.
    """
    item = split_item(source)
    if item is not None:
        data = task.examples(item[0])
        if item[1] >= len(data):
            raise TaskError(f"{source}: split {item[0]!r} has {len(data)} images")
        return data[item[1]][0]  # type: ignore[no-any-return]
    path = Path(source)
    if not os.path.lexists(path):
        raise TaskError(f"input {source!r} is neither an image file nor SPLIT:N (e.g. test:0)")
    try:
        with open_image(path) as im:  # checks the file, its pixel count and mode first
            grey = im.convert("L").resize((size, size))
            pixels = torch.tensor(list(grey.getdata()), dtype=torch.float32)
    except OSError as e:
        raise TaskError(f"{path} is not an image file Pillow can read: {e}") from None
    return pixels.view(1, size, size) / 255.0  # (1, H, W)


def shuffled_split(n: int, sizes: Sequence[int], seed: int, what: str) -> list[Tensor]:
    """Disjoint index sets of the given sizes from a seeded permutation of ``range(n)``.

    Raises:
        TaskError: the sizes add up to more than ``n``.
    """
    if sum(sizes) > n:
        raise TaskError(f"{what}: cannot take {list(sizes)} examples from {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out, start = [], 0
    for k in sizes:
        out.append(perm[start : start + k])
        start += k
    return out


class ImageTask(ClassifyTask):
    """Base of the grey-image classification tasks. Subclasses set the geometry class
    attributes and implement :meth:`_make_splits`."""

    names_inputs = True
    prediction = (
        "the top 3 classes of each input with their probabilities (and the true class of "
        "a SPLIT:N image)"
    )

    @dataclass
    class Options(SizeOptions, SeedOption):
        """The options of an image classification task."""

        augment: bool = option(
            True, "random shifts, flips and erasing of training images as the task's recipe says"
        )

    options: Options
    image_size: ClassVar[int]
    in_channels: ClassVar[int] = 1
    class_names: ClassVar[tuple[str, ...]]
    default_patch: ClassVar[int]
    default_model: ClassVar[dict[str, Any]]
    #: The task's own Swin (``--preset swin``), about as many parameters as
    #: :attr:`default_model`'s ViT, and its patch size.
    swin_model: ClassVar[dict[str, Any]] = {}
    swin_patch: ClassVar[int] = 1
    #: training-time augmentation: ``shift`` (pixels), ``flip`` and ``erase`` (probabilities)
    augmentation: ClassVar[dict[str, float]] = {}

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        o = self.options
        self.augment_on = o.augment
        if not isinstance(self.augment_on, bool):
            raise TaskError(
                f"task {self.name!r}: augment must be true or false, got {self.augment_on!r}"
            )
        for opt in ("n_train", "n_valid", "n_test"):
            if getattr(o, opt) is not None:
                check_positive(self.name, opt, getattr(o, opt), minimum=0)
        self._splits: dict[str, ImageExamples] | None = None

    @abc.abstractmethod
    def _make_splits(self) -> dict[str, ImageExamples]:
        """The train/valid/test examples (deterministic given the options)."""

    def examples(self, split: Split) -> ImageExamples:
        """``(image (c, H, W) float in [0, 1], label)`` examples of a split."""
        check_choice(self.name, "split", split, SPLITS)
        if self._splits is None:
            self._splits = self._make_splits()
        return self._splits[split]

    def augment(self, batch: Batch) -> Batch:
        """Training-time augmentation of a batch, as the task's :attr:`augmentation` says
        (``augment = False`` turns it off): a random shift of up to ``shift`` pixels
        (zero padding, then a crop), a horizontal flip with probability ``flip``, and random
        erasing (Zhong et al. 2020) of one rectangle with probability ``erase``. Draws from
        torch's RNG, so a resumed run augments exactly as an uninterrupted one."""
        if not self.augment_on:
            return batch
        x = batch["inputs"]  # (b, c, H, W)
        b, c, h, w = x.shape
        dev = x.device
        shift = int(self.augmentation.get("shift", 0))
        if shift:
            padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))
            dy = torch.randint(0, 2 * shift + 1, (b, 1), device=dev)
            dx = torch.randint(0, 2 * shift + 1, (b, 1), device=dev)
            rows = torch.arange(h, device=dev)[None] + dy  # (b, H)
            cols = torch.arange(w, device=dev)[None] + dx  # (b, W)
            bi = torch.arange(b, device=dev)[:, None, None, None]
            ci = torch.arange(c, device=dev)[None, :, None, None]
            x = padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]  # (b, c, H, W)
        flip = float(self.augmentation.get("flip", 0.0))
        if flip:
            x = torch.where((torch.rand(b, device=dev) < flip)[:, None, None, None], x.flip(-1), x)
        erase = float(self.augmentation.get("erase", 0.0))
        if erase:
            area = torch.empty(b, device=dev).uniform_(0.02, 0.25) * h * w
            aspect = torch.exp(torch.empty(b, device=dev).uniform_(-1.2, 1.2))  # 0.3 .. 3.3
            eh = (area * aspect).sqrt().round().clamp(1, h).long()
            ew = (area / aspect).sqrt().round().clamp(1, w).long()
            top = (torch.rand(b, device=dev) * (h - eh + 1)).long()
            left = (torch.rand(b, device=dev) * (w - ew + 1)).long()
            r = torch.arange(h, device=dev)[None]
            q = torch.arange(w, device=dev)[None]
            inside = ((r >= top[:, None]) & (r < (top + eh)[:, None]))[:, :, None] & (
                (q >= left[:, None]) & (q < (left + ew)[:, None])
            )[:, None, :]  # (b, H, W)
            on = (torch.rand(b, device=dev) < erase)[:, None, None] & inside
            x = x.masked_fill(on[:, None], 0.0)
        return {**batch, "inputs": x}

    def collate(self, examples: Sequence[tuple[Tensor, int]]) -> Batch:
        """``inputs`` ``(b, c, H, W)`` float images and ``labels`` ``(b,)`` long."""
        if isinstance(examples, ImageExamples):  # a slice: stack the stored uint8 at once
            return {"inputs": examples.images.float() / examples.scale, "labels": examples.labels}
        images = torch.stack([x for x, _ in examples])
        labels = torch.tensor([y for _, y in examples], dtype=torch.long)
        return {"inputs": images, "labels": labels}

    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """A :class:`~qkv.models.ViTConfig` (or :class:`~qkv.models.SwinConfig`) for the task's
        image size, channels and classes, with the task's patch size (presets are sized for
        larger images; pass ``patch_size=`` to choose another).

        ``preset`` is None (the task's own ViT, :attr:`default_model`), ``"swin"`` (the task's
        own Swin, :attr:`swin_model`, of about the same parameter count), or a ViT or Swin
        preset of :data:`qkv.models.PRESETS` (``vit-tiny``, ``swin-tiny``, ...).

        Raises:
            TaskError: a preset of another model family.
        """
        family, default, patch = "vit", self.default_model, self.default_patch
        if preset == "swin" and self.swin_model:
            family, default, patch, preset = "swin", self.swin_model, self.swin_patch, None
        else:
            chosen = base
            if chosen is None and preset in models.preset_names():
                chosen = models.preset_config(preset)
            if isinstance(chosen, models.SwinConfig):
                family, patch = "swin", self.swin_patch
        sizes: dict[str, Any] = {
            "image_size": self.image_size,
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "patch_size": patch,
        }
        return sized_config(self, family, preset, default, sizes, overrides, base)

    def read_image(self, source: str) -> Tensor:
        """One input image ``(c, H, W)`` in ``[0, 1]``: an image file (PNG, JPEG, ...; made
        grey and resized to the task's size) or ``SPLIT:N``, the ``N``-th image of a split
        (``test:0``).

        Raises:
            TaskError: a missing or unreadable file, or a bad ``SPLIT:N``.
        """
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
        """Where the class token of a ViT looks on the image, or a Swin's window attention (see :meth:`Task.pictures`)."""
        if isinstance(model, Swin):
            return report_for_swin(model, self, source, out, png_dir=png_dir, title=title)
        return report_for_image(model, self, source, out, png_dir=png_dir, title=title)

    def predict(self, model: nn.Module, inputs: Sequence[str], **_: Any) -> list[str]:
        """The top 3 classes of each input image (a file, or ``SPLIT:N``) with their
        probabilities, e.g. ``"Sneaker 0.91, Sandal 0.06, Ankle boot 0.02"``; for
        ``SPLIT:N`` followed by the image's true class (``" (true: Sandal)"``)."""
        images = [(self.read_image(x), 0) for x in inputs]
        out = []
        for source, top in zip(inputs, self.top_classes(model, images, k=3)):
            line = ", ".join(f"{name} {prob:.2f}" for name, prob in top)
            item = split_item(source)
            if item is not None:  # read_image checked the index
                line = with_truth(line, self.class_names[self.examples(item[0])[item[1]][1]])
            out.append(line)
        return out

    def save(self, directory: Path) -> None:
        """Write ``task.json`` (with the class names)."""
        state = {"image_size": self.image_size, "class_names": list(self.class_names)}
        write_task_file(self, Path(directory), state)

    def load(self, directory: Path) -> None:
        """Nothing to read: images need no tokenizer."""


__all__ = ["ImageExamples", "ImageTask", "read_task_image", "shuffled_split"]
