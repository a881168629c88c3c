"""The item pools of the tasks that compose real images into larger ones (``detect``'s
canvases, the multimodal tasks' scenes): per split, item images, their labels and pixel
scale, so that no item image is in two splits.

``"fashion-mnist"``: train items are the Fashion-MNIST training images less a seeded sample
of 5,000 (fewer for small directories, at most a fifth), valid items that sample, test
items the ``t10k`` images. ``"digits"``: scikit-learn's 1,797 8x8 digits split 1,257 /
180 / 360 (seeded); small and always there, the tests use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from qkv.tasks.base import TaskError
from qkv.tasks.options import DataOption, SeedOption, SizeOptions, option
from qkv.tasks.vision._image import shuffled_split
from qkv.tasks.vision.fashion_mnist import FASHION_MNIST_DIR, read_fashion_mnist

ITEMS = ("fashion-mnist", "digits")


@dataclass
class ItemOptions(SizeOptions, SeedOption, DataOption):
    """The options of a task drawn from items (detect, caption, clip, vqa, text2image):
    which items, where Fashion-MNIST's files are, the seed and the split sizes."""

    data: str | None = option(
        None,
        "a directory of the Fashion-MNIST .gz files (the items)",
        shown="the dataset-fashion-mnist package's",
    )
    items: str = option("fashion-mnist", "the items: Fashion-MNIST's or digits", choices=ITEMS)


@dataclass
class SceneOptions(ItemOptions):
    """The options of a scene task (caption, clip, vqa): items and the grid of a scene."""

    grid: int = option(2, "cells per side of a scene", choices=(2, 3))


#: ``(images (n, H, W), labels (n,), scale)``: the pixel value ``scale`` maps to 1.0
ItemPool = tuple[Tensor, Tensor, float]


def item_pools(items: str, data: str | Path | None, seed: int, task: str) -> dict[str, ItemPool]:
    """The ``"train"``, ``"valid"`` and ``"test"`` item pools of an item source.

    Args:
        items: ``"fashion-mnist"`` or ``"digits"``.
        data: the Fashion-MNIST directory (default the Debian package's); ``None`` for digits.
        seed: the seed of the valid sample.
        task: the task's name, for error messages.

    Raises:
        TaskError: an unknown source, digits without scikit-learn, or a missing or
            malformed Fashion-MNIST file.
    """
    if items not in ITEMS:
        raise TaskError(f"task {task!r}: items must be one of {list(ITEMS)}, got {items!r}")
    if items == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise TaskError("items 'digits' need scikit-learn: `pip install scikit-learn`") from e
        d = load_digits()
        images = torch.as_tensor(d.images, dtype=torch.float32)  # (1797, 8, 8), 0..16
        labels = torch.as_tensor(d.target)
        test, valid, train = shuffled_split(len(images), (360, 180, 1257), seed, f"task {task!r}")
        return {
            s: (images[i], labels[i], 16.0)
            for s, i in (("train", train), ("valid", valid), ("test", test))
        }
    directory = Path(data) if data is not None else FASHION_MNIST_DIR
    train_all = read_fashion_mnist(directory, "train")
    test_part = read_fashion_mnist(directory, "test")
    n_valid = min(5000, len(train_all) // 5)  # 5,000 items, fewer for small directories
    valid_idx, train_idx = shuffled_split(
        len(train_all), (n_valid, len(train_all) - n_valid), seed, f"task {task!r} ({directory})"
    )
    return {
        "train": (train_all.images[train_idx, 0], train_all.labels[train_idx], 255.0),
        "valid": (train_all.images[valid_idx, 0], train_all.labels[valid_idx], 255.0),
        "test": (test_part.images[:, 0], test_part.labels, 255.0),
    }


__all__ = ["ITEMS", "ItemOptions", "ItemPool", "SceneOptions", "item_pools"]
