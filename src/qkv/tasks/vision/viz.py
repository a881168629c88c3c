"""Attention on images for the vision families, for ``qkv viz``:

* a Swin reads an image: where the patch at the centre of the grid looks in every block
  (its window, shifted in every other block; heads averaged), as heat on the picture; the
  interactive views show the first stage's blocks as attention over the whole patch grid
  (:func:`qkv.interp.images.windows_to_grid`), and the image panel over that grid (hover a
  patch to see where it attends in the selected block and head);
* DETR reads a canvas: each object query's cross-attention over the image in the last
  decoder layer (heads averaged) next to its predicted box and class (Carion et al. 2020,
  fig. 6); the interactive views show the encoder (feature-map cells), the decoder (queries)
  and the cross-attention (queries to cells); the image panel shows the encoder's rows from
  the hovered cell, and each object query's cross-attention (picked from a list) on the
  canvas.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from qkv.interp.capture import AttentionEntry, AttentionRecord, record_attention
from qkv.interp.image_panel import ImagePanel
from qkv.interp.images import cls_maps, figure_png, plot_overlays, windows_to_grid
from qkv.interp.plots import save_figure, write_figures
from qkv.interp.report import write_report
from qkv.layers.mode import evaluating
from qkv.models import DETR, Swin, ViT
from qkv.tasks.vision._boxes import SHOW_SCORE, detections

# The task modules import this one: it reads their tasks through these views (no cycle).


class ImageTaskView(Protocol):
    """What an image task's pictures read from it (ImageTask)."""

    @property
    def class_names(self) -> Any: ...

    @property
    def image_size(self) -> Any: ...

    def read_image(self, *args: Any, **kwargs: Any) -> Any: ...

    def top_classes(self, *args: Any, **kwargs: Any) -> Any: ...


class DetectTaskView(Protocol):
    """What detect's pictures read from it (DetectTask)."""

    @property
    def class_names(self) -> Any: ...

    @property
    def image_size(self) -> Any: ...

    def read_image(self, *args: Any, **kwargs: Any) -> Any: ...


PNG_NAME = "attention_on_image.png"


def _cells(rows: int, cols: int) -> list[str]:
    return [f"r{r}c{c}" for r in range(rows) for c in range(cols)]


def swin_grid_record(model: Swin, record: AttentionRecord, *, stage: int = 0) -> AttentionRecord:
    """The blocks of one stage as attention over the stage's whole grid (image 0), for the
    interactive views: ``(1, h, H W, H W)`` per block, named as recorded."""
    out = AttentionRecord()
    for i, ((s, grid), block) in enumerate(zip(model.stage_of_layers(), model.layers)):
        name = f"layers.{i}.self_attn"
        if s != stage or name not in record:
            continue
        entry = record[name]
        dense = windows_to_grid(entry.weights, grid, block.window, block.shift)
        n = grid[0] * grid[1]
        out.add(
            AttentionEntry(
                name=name,
                kind="encoder_self",
                layer_index=i,
                weights=dense[None],
                heads=entry.heads,
                rows=tuple(range(n)),
                s_q=n,
            )
        )
    return out


def report_for_swin(
    model: Swin,
    task: ImageTaskView,
    source: str,
    out: str | Path,
    *,
    png_dir: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """The attention report of a Swin on one image (see the module docstring).

    Returns:
        The report's path.
    """
    image = task.read_image(source)
    with evaluating(model), torch.no_grad(), record_attention(model) as rec:
        model(image[None].to(next(model.parameters()).device))
    maps: list[tuple[str, Tensor]] = []
    for i, ((stage, grid), block) in enumerate(zip(model.stage_of_layers(), model.layers)):
        dense = windows_to_grid(
            rec[f"layers.{i}.self_attn"].weights, grid, block.window, block.shift
        )
        centre = (grid[0] // 2) * grid[1] + grid[1] // 2
        shifted = f", shifted by {block.shift}" if block.shift else ""
        label = f"block {i}, stage {stage}\n{block.window}x{block.window} windows{shifted}"
        maps.append((label, dense.mean(0)[centre].reshape(grid)))
    fig = plot_overlays(image, maps)
    caption = "where the centre patch attends in each Swin block (its window; heads averaged)"
    top = task.top_classes(model, [(image, 0)], k=3)[0]
    if title is None:
        best, prob = top[0]
        title = f"{source}: {best} ({prob:.0%})"
    side = model.config.grid
    grid_rec = swin_grid_record(model, rec)
    path = write_report(
        out,
        grid_rec,
        _cells(side, side),
        title=title,
        figures=[(caption, figure_png(fig))],
        image=ImagePanel.row_major(image, (side, side)),
    )
    if png_dir is not None:
        save_figure(fig, Path(png_dir) / PNG_NAME)
        write_figures(grid_rec, png_dir, tokens=_cells(side, side))
    return path


def report_for_detection(
    model: DETR,
    task: DetectTaskView,
    source: str,
    out: str | Path,
    *,
    png_dir: str | Path | None = None,
    title: str | None = None,
    max_queries: int = 8,
) -> Path:
    """DETR's report on one canvas: each object query's cross-attention (last decoder layer,
    heads averaged) on the image with its predicted box; the queries shown are those scoring
    at least 0.5, or the 3 best when none does.

    Returns:
        The report's path.
    """
    image = task.read_image(source)
    with evaluating(model), torch.no_grad(), record_attention(model) as rec:
        pred = model(image[None].to(next(model.parameters()).device))
    (det,) = detections(pred.logits, pred.boxes, task.image_size)
    rows, cols = pred.grid
    last = rec.by_kind("cross")[-1].weights[0].float().mean(0)  # (N, cells)
    order = det["scores"].argsort(descending=True).tolist()
    shown = [q for q in order if det["scores"][q] >= SHOW_SCORE] or order[:3]
    shown = shown[:max_queries]
    maps, boxes = [], []
    for q in shown:
        name = task.class_names[int(det["labels"][q])]
        maps.append(
            (f"query {q}: {name} {float(det['scores'][q]):.2f}", last[q].reshape(rows, cols))
        )
        boxes.append(tuple(float(v) for v in det["boxes"][q]))
    fig = plot_overlays(image, maps, boxes=boxes)  # type: ignore[arg-type]
    caption = (
        "each object query's cross-attention over the image (last decoder layer, heads "
        "averaged) with its predicted box"
    )
    if title is None:
        title = f"{source}: {len(shown)} object queries"
    queries = [f"q{q}" for q in range(pred.logits.shape[1])]
    path = write_report(
        out,
        rec,
        _cells(rows, cols),
        target_tokens=queries,
        title=title,
        figures=[(caption, figure_png(fig))],
        image=ImagePanel.row_major(image, (rows, cols)),
    )
    if png_dir is not None:
        save_figure(fig, Path(png_dir) / PNG_NAME)
        write_figures(rec, png_dir, tokens=_cells(rows, cols), target_tokens=queries)
    return path


def is_vision(model: nn.Module) -> bool:
    """Whether :mod:`qkv.tasks.vision.viz` draws this model's report."""
    return isinstance(model, (Swin, DETR))


@dataclass(frozen=True)
class ImageRecord:
    """Attention recorded on one image.

    Attributes:
        record: the weights (every layer, head and row).
        image: the input ``(c, H, W)`` in ``[0, 1]``.
        grid: the patch grid ``(rows, cols)``.
        tokens: ``[CLS]`` then ``r{row}c{col}`` for each patch, row-major.
        top: the model's top classes with their probabilities.
    """

    record: AttentionRecord
    image: Tensor
    grid: tuple[int, int]
    tokens: list[str]
    top: list[tuple[str, float]]


def record_image(model: nn.Module, task: ImageTaskView, source: str) -> ImageRecord:
    """Run a ViT on one image and record every attention head.

    Args:
        model: a :class:`~qkv.models.ViT`.
        task: its image task (reads the image, names the classes).
        source: an image file or ``SPLIT:N`` (see :meth:`ImageTask.read_image`).

    Returns:
        An :class:`ImageRecord`.

    Raises:
        ValueError: not a ViT, or an image that cannot be read.
    """
    if not isinstance(model, ViT):
        raise ValueError(f"attention on an image needs a ViT, got {type(model).__name__}")
    image = task.read_image(source)
    side = model.config.image_size // model.config.patch_size
    grid = (side, side)
    with evaluating(model), record_attention(model) as rec:
        model(image[None].to(next(model.parameters()).device))
    tokens = ["[CLS]"] + [f"r{r}c{c}" for r in range(side) for c in range(side)]
    top = task.top_classes(model, [(image, 0)], k=3)[0]
    return ImageRecord(rec, image, grid, tokens, top)


def report_for_image(
    model: nn.Module,
    task: ImageTaskView,
    source: str,
    out: str | Path,
    *,
    png_dir: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Write the attention report of a ViT on one image: where the class token looks (the
    rollout over all layers, then each layer with its heads averaged) as heat on the picture,
    above the interactive image panel (hover a patch to see where it attends; a button for
    the class token) and the views of every head over the ``[CLS] + patches`` tokens.

    Args:
        model: a ViT.
        task: its image task.
        source: an image file or ``SPLIT:N``.
        out: the HTML file to write.
        png_dir: also save the overlay (``attention_on_image.png``) and heatmaps there.
        title: page title (default: the source and the top class).

    Returns:
        The report's path.
    """
    ir = record_image(model, task, source)
    fig = plot_overlays(ir.image, cls_maps(ir.record, ir.grid))
    caption = "where the class token attends: rollout over all layers, then each layer"
    if title is None:
        best, prob = ir.top[0]
        title = f"{source}: {best} ({prob:.0%})"
    path = write_report(
        out,
        ir.record,
        ir.tokens,
        title=title,
        figures=[(caption, figure_png(fig))],
        image=ImagePanel.row_major(ir.image, ir.grid, first=1),  # after the class token
    )
    if png_dir is not None:
        save_figure(fig, Path(png_dir) / "attention_on_image.png")
        write_figures(ir.record, png_dir, tokens=ir.tokens)
    return path


__all__ = [
    "ImageRecord",
    "is_vision",
    "record_image",
    "report_for_detection",
    "report_for_image",
    "report_for_swin",
    "swin_grid_record",
]
