"""``digits``: a Vision Transformer on scikit-learn's 8x8 handwritten digits.

1,797 grey 8x8 images (pixel values 0-16, scaled to [0, 1]), 10 classes. No official split:
a seeded permutation gives test (default 360), valid (default 180) and train (the rest,
1,257). With 2x2 patches an image is 16 tokens plus the class token; a small ViT reaches
~95% accuracy in a minute on a CPU. ``--preset swin`` trains the task's Swin instead.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from qkv.tasks.base import TaskError
from qkv.tasks.vision._image import ImageExamples, ImageTask, shuffled_split


class DigitsTask(ImageTask):
    """ViT (or Swin) classification of ``sklearn.datasets.load_digits()``.

    Options: ``seed`` (split), ``n_train`` (default: all the rest), ``n_valid`` (180),
    ``n_test`` (360).
    """

    name = "digits"
    image_size = 8
    default_patch = 4
    class_names: ClassVar[tuple[str, ...]] = tuple(str(i) for i in range(10))
    # Recipe, chosen by measurement on 2 CPU cores (docs/recipes.md): 4x4 patches (5 tokens:
    # 2x2 patches give 17 tokens, 3x the time per image, and no better accuracy in a
    # minute), a wider model, AdamW with a cosine schedule; random shifts of these 8x8
    # images slowed learning more than they regularised within the minute.
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 128,
        "n_heads": 4,
        "d_ff": 256,
        "n_layers": 4,
        "dropout": 0.1,
    }
    recipe: ClassVar[dict[str, Any]] = {
        "steps": 700,
        "batch_size": 128,
        "optimizer": "adamw",
        "lr": 3e-3,
        "schedule": "cosine",
        "warmup": 50,
        "weight_decay": 0.05,
        "label_smoothing": 0.1,
    }
    # Swin near the ViT's parameter count (532,770 vs 534,410): one-pixel patches make an
    # 8x8 grid of 4x4 windows (shifted in every other block), merged into one 4x4 window.
    swin_model: ClassVar[dict[str, Any]] = {
        "d_model": 64,
        "n_heads": 4,
        "d_ff": 256,
        "depths": [2, 2],
        "window_size": 4,
        "dropout": 0.0,
        "drop_path": 0.1,
    }
    swin_patch: ClassVar[int] = 1
    default_sizes: ClassVar[dict[str, int]] = {"test": 360, "valid": 180}

    def _make_splits(self) -> dict[str, ImageExamples]:
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise TaskError("task 'digits' needs scikit-learn: `pip install scikit-learn`") from e
        d = load_digits()
        images = torch.as_tensor(d.images, dtype=torch.uint8)[:, None]  # (n, 1, 8, 8), 0..16
        data = ImageExamples(images, torch.as_tensor(d.target), scale=16.0)
        o = self.options
        n_test = o.n_test if o.n_test is not None else self.default_sizes["test"]
        n_valid = o.n_valid if o.n_valid is not None else self.default_sizes["valid"]
        rest = len(data) - n_test - n_valid
        n_train = o.n_train if o.n_train is not None else rest
        test, valid, train = shuffled_split(
            len(data), (n_test, n_valid, n_train), o.seed, "task 'digits'"
        )
        return {"train": data.subset(train), "valid": data.subset(valid), "test": data.subset(test)}


__all__ = ["DigitsTask"]
