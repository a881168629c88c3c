"""Image tasks: sklearn digits and Fashion-MNIST (IDX parsing on fake files)."""

from __future__ import annotations

import gzip
import struct

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import qkv.models as M
from qkv.data.idx import IdxError, read_idx
from qkv.tasks import DigitsTask, FashionMNISTTask, TaskError, TaskOptions, load_task
from qkv.tasks.vision.fashion_mnist import FASHION_MNIST_DIR


def test_digits_shapes_labels_and_splits() -> None:
    task = DigitsTask()
    sizes = {s: len(task.examples(s)) for s in ("train", "valid", "test")}
    assert sizes == {"train": 1257, "valid": 180, "test": 360}
    image, label = task.examples("train")[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert 0 <= label < 10
    all_labels = torch.cat([task.examples(s).labels for s in sizes])
    assert (
        torch.bincount(all_labels).tolist()
        == torch.bincount(torch.as_tensor(load_digits().target)).tolist()
    )
    keys = {s: {x.numpy().tobytes() for x in task.examples(s).images} for s in sizes}
    assert len(keys["test"] & keys["valid"]) <= 2  # disjoint indices; digits repeats a few images
    again = DigitsTask().examples("test")
    assert torch.equal(again.images, task.examples("test").images)
    other = DigitsTask(TaskOptions(seed=1)).examples("test")
    assert not torch.equal(other.images, task.examples("test").images)
    assert len(DigitsTask(TaskOptions(n_train=100)).examples("train")) == 100


def test_image_batch_loss_and_evaluate() -> None:
    task = DigitsTask()
    batch = task.collate([task.examples("train")[i] for i in range(5)])
    assert batch["inputs"].shape == (5, 1, 8, 8) and batch["labels"].shape == (5,)
    cfg = task.model_config(d_model=16, n_heads=2, d_ff=32, n_layers=1)
    assert isinstance(cfg, M.ViTConfig) and (cfg.image_size, cfg.patch_size, cfg.n_classes) == (
        8,
        4,
        10,
    )
    model = M.build(cfg).eval()
    out = task.loss(model, batch, label_smoothing=0.1)
    expected = F.cross_entropy(
        model(batch["inputs"]), batch["labels"], reduction="sum", label_smoothing=0.1
    )
    assert out.n == 5 and float(out.loss_sum.detach()) == pytest.approx(
        float(expected.detach()), rel=1e-5
    )
    m = task.evaluate(model, "valid", batch_size=32, limit=50)
    assert list(m) == ["accuracy", "loss"] and 0 <= m["accuracy"] <= 100
    assert (
        task.model_config("vit-tiny").patch_size == 4
    )  # 8 px images: the preset's 8 px patch becomes the task's 4


def _idx(path, code: int, dims: tuple[int, ...], data: bytes, magic0: int = 0) -> None:
    header = bytes([magic0, 0, code, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)
    with gzip.open(path, "wb") as f:
        f.write(header + data)


def _fake_fashion(directory, n_train: int = 30, n_test: int = 10) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        pixels = bytes((i * 7 + j) % 256 for i in range(n) for j in range(28 * 28))
        _idx(directory / f"{part}-images-idx3-ubyte.gz", 0x08, (n, 28, 28), pixels)
        _idx(
            directory / f"{part}-labels-idx1-ubyte.gz", 0x08, (n,), bytes(i % 10 for i in range(n))
        )


def test_idx_parsing_on_fake_files(tmp_path) -> None:
    _fake_fashion(tmp_path)
    images = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    labels = read_idx(tmp_path / "train-labels-idx1-ubyte.gz")
    assert images.shape == (30, 28, 28) and images.dtype == torch.uint8
    assert images[2, 0, 5].item() == (2 * 7 + 5) % 256  # data starts at byte 16
    assert labels.tolist() == [i % 10 for i in range(30)]  # data starts at byte 8
    _idx(tmp_path / "bad.gz", 0x08, (3,), b"\x00\x01", magic0=1)
    with pytest.raises(IdxError, match=r"bad.gz: not an IDX file"):
        read_idx(tmp_path / "bad.gz")
    _idx(tmp_path / "short.gz", 0x08, (2, 2), b"\x00\x01\x02")
    with pytest.raises(
        IdxError, match=r"short.gz: header says \(2, 2\) = 4 bytes of data, file has 3"
    ):
        read_idx(tmp_path / "short.gz")
    _idx(tmp_path / "float.gz", 0x0D, (1,), b"\x00" * 4)
    with pytest.raises(IdxError, match=r"float.gz: element type 0x0d is not supported"):
        read_idx(tmp_path / "float.gz")


def test_fashion_mnist_task_on_fake_files(tmp_path) -> None:
    _fake_fashion(tmp_path / "fm")
    task = FashionMNISTTask(TaskOptions(data=str(tmp_path / "fm"), n_valid=6))
    sizes = {s: len(task.examples(s)) for s in ("train", "valid", "test")}
    assert sizes == {"train": 24, "valid": 6, "test": 10}
    image, label = task.examples("test")[3]
    assert image.shape == (1, 28, 28) and label == 3
    assert image[0, 0, 5].item() == pytest.approx(((3 * 7 + 5) % 256) / 255)
    cfg = task.model_config()
    assert (cfg.image_size, cfg.patch_size, cfg.in_channels, cfg.n_classes) == (28, 7, 1, 10)
    task.save(tmp_path / "ckpt")
    back = load_task(tmp_path / "ckpt")
    assert isinstance(back, FashionMNISTTask) and back._splits is None


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path) -> None:
    with pytest.raises(
        TaskError,
        match=r"train-images-idx3-ubyte.gz is missing: `apt-get install dataset-fashion-mnist`",
    ):
        FashionMNISTTask(TaskOptions(data=str(tmp_path))).examples("train")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist() -> None:
    task = FashionMNISTTask(TaskOptions(n_test=100))
    assert [len(task.examples(s)) for s in ("train", "valid", "test")] == [55000, 5000, 100]
    labels = task.examples("train").labels
    assert sorted(torch.bincount(labels).tolist())[0] > 5000  # balanced classes
