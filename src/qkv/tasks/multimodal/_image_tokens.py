"""Image tokenizers of the ``text2image`` task: training a :class:`~qkv.models.vq.VQVAE` with
the shared trainer, and the quantized-intensity baseline it was measured against.

Both turn ``(b, 1, H, W)`` images in ``[0, 1]`` into ``(b, n_tokens)`` ids in
``[0, n_codes)`` and back. The baseline (:class:`IntensityTokenizer`) averages the image over
``cell x cell`` blocks and rounds each block's mean to one of ``levels`` grey values; it needs
no training, but a 7x7 grid of 8 greys loses the shapes that tell a shirt from a coat (see
docs/text2image.md for the measurement that chose the VQ-VAE).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.data.cachefiles import stderr_is_terminal
from qkv.models.vq import VQVAE, VQConfig
from qkv.training.budget import format_seconds
from qkv.training.config import TrainConfig
from qkv.training.objective import Batch, LossOutput
from qkv.training.trainer import Trainer


class IntensityTokenizer:
    """Quantized intensities at low resolution: a token per ``cell x cell`` block, the
    block's mean grey rounded to one of ``levels`` values.

    Args:
        image_size: side of the square images.
        cell: block side in pixels (must divide ``image_size``).
        levels: grey levels (the vocabulary).

    Raises:
        ValueError: a cell that does not divide the image, or fewer than 2 levels.
    """

    def __init__(self, image_size: int, cell: int, levels: int) -> None:
        if cell < 1 or image_size % cell:
            raise ValueError(f"cell ({cell}) must divide image_size ({image_size})")
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.image_size, self.cell, self.levels = image_size, cell, levels
        self.grid = image_size // cell
        self.n_tokens, self.n_codes = self.grid * self.grid, levels

    def encode(self, images: Tensor) -> Tensor:
        """``(b, 1, H, W)`` in ``[0, 1]`` -> ``(b, grid * grid)`` levels, row by row."""
        means = F.avg_pool2d(images, self.cell)  # (b, 1, grid, grid)
        return (means * self.levels).long().clamp(0, self.levels - 1).flatten(1)

    def decode(self, tokens: Tensor) -> Tensor:
        """``(b, grid * grid)`` levels -> ``(b, 1, H, W)``: each block the middle of its bin."""
        grey = (tokens.float() + 0.5) / self.levels  # (b, grid grid)
        grid = grey.view(-1, 1, self.grid, self.grid)  # (b, 1, grid, grid)
        return F.interpolate(grid, scale_factor=self.cell, mode="nearest")  # (b, 1, H, W)


class VQObjective:
    """The VQ-VAE loss (:class:`~qkv.models.vq.VQVAE`) as a trainer objective: examples are
    ``(1, H, W)`` images; ``recon`` (the reconstruction MSE) is logged beside the loss."""

    def collate(self, examples: Sequence[Tensor]) -> Batch:
        return {"images": torch.stack(list(examples))}  # (b, 1, H, W)

    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        out = model(batch["images"])
        b = batch["images"].shape[0]
        return LossOutput(out.loss * b, b, {"recon": float(out.recon_loss.detach()) * b})

    def n_tokens(self, batch: Batch) -> int:
        return int(batch["images"].shape[0])

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        return {"loss": loss_sum / max(n, 1), "recon": logs.get("recon", 0.0) / max(n, 1)}


#: The VQ-VAE training recipe (Adam, constant 2e-3 after a short warmup, batch 128).
VQ_RECIPE: dict[str, Any] = {
    "batch_size": 128,
    "optimizer": "adam",
    "lr": 2e-3,
    "schedule": "constant",
    "warmup": 50,
    "clip_norm": 1.0,
    "log_every": 100,
}


def train_vq(
    images: Tensor,
    config: VQConfig,
    *,
    steps: int,
    seed: int,
    device: str = "cpu",
    max_time: float | None = None,
) -> tuple[VQVAE, dict[str, float]]:
    """Train a VQ-VAE on images with the shared :class:`~qkv.training.Trainer`.

    The codebook starts on the encoder outputs of a seeded sample of 1,024 images
    (:meth:`~qkv.models.vq.VectorQuantizer.init_from`).

    Args:
        images: ``(n, 1, H, W)`` float in ``[0, 1]``.
        config: the VQ-VAE's shape.
        steps: optimizer steps (at most, with ``max_time``).
        seed: seed of the weights, the codebook start and the batch order.
        device: where to train.
        max_time: stop after this many seconds of training (None: run all ``steps``); a
            command's budget gives the stage its share (``Task.stage_time``).

    Returns:
        ``(model in eval mode on the CPU, report)``: the report holds ``steps`` (trained),
        ``seconds``, the last ``recon`` MSE and ``codes_used``, the codes the first 4,096
        images use.
    """
    torch.manual_seed(seed)
    model = VQVAE(config)
    g = torch.Generator().manual_seed(seed)
    sample = images[torch.randperm(len(images), generator=g)[:1024]]
    with torch.no_grad():
        model.quantizer.init_from(model.encoder(sample), g)
    recipe = {**VQ_RECIPE, "steps": steps, "seed": seed, "device": device, "max_time": max_time}
    recipe["progress"] = stderr_is_terminal()  # a bar's redraws would interleave a log file
    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), **recipe})
    cfg.batch_size = min(cfg.batch_size, len(images))
    start = time.perf_counter()
    trainer = Trainer(model, list(images), config=cfg, objective=VQObjective(), out_dir=None)
    summary = trainer.fit()
    model = model.cpu().eval()
    with torch.no_grad():
        probe = images[:4096]
        out = model(probe)
        used = len(torch.unique(out.codes))
    report = {
        "steps": float(summary["step"]),
        "seconds": time.perf_counter() - start,
        "recon": float(out.recon_loss),
        "codes_used": float(used),
    }
    return model, report


def vq_note(report: Mapping[str, float], planned: int, share: float | None) -> str | None:
    """The line a run's header says about a VQ-VAE trained for it (None: none trained).

    Args:
        report: :func:`train_vq`'s report (empty: the VQ-VAE was loaded, or not used).
        planned: the steps it was given.
        share: the seconds a time budget gave it (None: no budget).
    """
    if "steps" not in report:
        return None
    steps = int(report["steps"])
    note = (
        f"image tokens from a VQ-VAE trained {steps:,} of {planned:,} steps in "
        f"{format_seconds(report.get('seconds', 0.0))}"
    )
    if steps < planned and share is not None:
        note += f" (stopped at its share of the time budget, {format_seconds(share)})"
    return note + f", reconstruction MSE {report.get('recon', float('nan')):.4f}"


__all__ = ["VQ_RECIPE", "IntensityTokenizer", "VQObjective", "train_vq", "vq_note"]
