"""``fashion-mnist``: a Vision Transformer on Fashion-MNIST (Xiao et al. 2017).

60,000 training and 10,000 test grey 28x28 images of 10 kinds of clothing, from the Debian
package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or a directory
given as ``--data`` holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``. The valid
split (default 5,000) is a seeded sample of the training images; test is ``t10k``. With 7x7
patches an image is 16 tokens plus the class token. ``--preset swin`` trains the task's
Swin instead (as many parameters; a 7x7 grid of 4x4 patches in shifted 4x4 windows, then
one 4x4 window).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from qkv.data.idx import IdxError, read_idx
from qkv.tasks.base import TaskError
from qkv.tasks.options import DataOption, option
from qkv.tasks.vision._image import ImageExamples, ImageTask, shuffled_split

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}


def read_fashion_mnist(directory: str | Path, part: str) -> ImageExamples:
    """The ``"train"`` or ``"test"`` (t10k) images and labels of a Fashion-MNIST directory.

    Raises:
        TaskError: a missing file (with the install hint), a malformed one, or image and
            label counts that differ.
    """
    directory = Path(directory)
    paths = {kind: directory / FILES[(part, kind)] for kind in ("images", "labels")}
    for p in paths.values():
        if not p.is_file():
            raise TaskError(
                f"Fashion-MNIST file {p} is missing: `apt-get install dataset-fashion-mnist` "
                f"(files in {FASHION_MNIST_DIR}), or pass --data DIR holding {sorted(FILES.values())}"
            )
    try:
        images, labels = read_idx(paths["images"]), read_idx(paths["labels"])
    except IdxError as e:
        raise TaskError(str(e)) from e
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise TaskError(
            f"{paths['images']} {tuple(images.shape)} and {paths['labels']} "
            f"{tuple(labels.shape)}: need (n, H, W) images and n labels"
        )
    return ImageExamples(images[:, None], labels, scale=255.0)  # (n, 1, H, W)


class FashionMNISTTask(ImageTask):
    """ViT (or Swin) classification of Fashion-MNIST.

    Options: ``data`` (a directory with the four ``.gz`` files; default the Debian
    package's), ``seed`` (valid sample), ``n_valid`` (5,000), ``n_train`` (default: the other
    55,000), ``n_test`` (default: all 10,000, else the first ``n_test``).
    """

    @dataclass
    class Options(ImageTask.Options, DataOption):
        """fashion-mnist's options."""

        data: str | None = option(
            None,
            "a directory of the Fashion-MNIST .gz files",
            shown="the dataset-fashion-mnist package's",
        )

    options: Options
    name = "fashion-mnist"
    image_size = 28
    default_patch = 7
    class_names: ClassVar[tuple[str, ...]] = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 128,
        "n_heads": 4,
        "d_ff": 256,
        "n_layers": 4,
        "dropout": 0.0,
    }
    # Recipe, chosen by measurement (docs/recipes.md; valid accuracy after 10 min on one
    # thread): AdamW with a cosine schedule instead of Noam (78.7% after 9 min with Noam,
    # 81.8% with AdamW + cosine on 2 cores); 7x7 patches, a 4x4 grid of 16 tokens instead
    # of 49, make a step 6x cheaper (2,199 steps of 128 in 10 min, 5 epochs, against 335:
    # 86.5%); lr 2e-3 lost (86.2%); the model still underfits there, so no dropout and no
    # label smoothing (86.9%). The parameter count is the same as with 4x4 patches.
    recipe: ClassVar[dict[str, Any]] = {
        "batch_size": 128,
        "optimizer": "adamw",
        "lr": 1e-3,
        "schedule": "cosine",
        "warmup": 100,
        "weight_decay": 0.05,
        "label_smoothing": 0.0,
    }
    # Swin at the ViT's parameter count (533,142 vs 540,170): 4x4 patches make a 7x7 grid
    # (padded to 8x8) of 4x4 windows, shifted by 2 in every other block, merged into one 4x4
    # window. Chosen by measurement (docs/vision.md, 10 min on one thread): 2x2 patches (a
    # 14x14 grid of 7x7 windows) cost 1.8x the time of a 4x4-patch ViT per step and lost to
    # it (69.6% against 79.5%); with 4x4 patches Swin beats the 7x7-patch ViT (test 88.3%
    # against 87.5%).
    swin_model: ClassVar[dict[str, Any]] = {
        "d_model": 64,
        "n_heads": 2,
        "d_ff": 256,
        "depths": [2, 2],
        "window_size": 4,
        "dropout": 0.0,
        "drop_path": 0.1,
    }
    swin_patch: ClassVar[int] = 4
    default_valid: ClassVar[int] = 5000

    def _make_splits(self) -> dict[str, ImageExamples]:
        o = self.options
        directory = Path(o.data) if o.data is not None else FASHION_MNIST_DIR
        train_all = read_fashion_mnist(directory, "train")
        test = read_fashion_mnist(directory, "test")
        for part in (train_all, test):
            size = tuple(part.images.shape[2:])
            if size != (self.image_size, self.image_size):
                raise TaskError(f"Fashion-MNIST images in {directory} are {size}, expected 28x28")
        n_valid = (
            o.n_valid if o.n_valid is not None else min(self.default_valid, len(train_all) // 10)
        )
        n_train = o.n_train if o.n_train is not None else len(train_all) - n_valid
        valid_idx, train_idx = shuffled_split(
            len(train_all), (n_valid, n_train), o.seed, f"task 'fashion-mnist' ({directory})"
        )
        if o.n_test is not None:
            test = test[: o.n_test]
        return {
            "train": train_all.subset(train_idx),
            "valid": train_all.subset(valid_idx),
            "test": test,
        }


__all__ = ["FASHION_MNIST_DIR", "FashionMNISTTask", "read_fashion_mnist"]
