"""Attention on images for the multimodal tasks, for ``qkv viz``:

* ``vqa`` (:class:`~qkv.models.Llava`): the question is answered greedily, then the whole
  sequence ``[image tokens; question; answer]`` is re-run under
  :func:`~qkv.interp.record_attention`. For each answer word, the attention over the image
  tokens of the position that predicts it (the token before it: in a decoder the word is
  decided there), averaged over the language model's layers and heads, is drawn as heat on
  the scene; the interactive views show every layer and head, and the image panel the image
  tokens (click a question or answer token to see where it looks).
* ``clip`` (:class:`~qkv.models.CLIP`): the image tower's class token, as for a ViT (the
  rollout over all layers, then each layer), titled with the zero-shot top class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from qkv.interp.capture import record_attention
from qkv.interp.image_panel import ImagePanel
from qkv.interp.images import cls_maps, figure_png, plot_overlays
from qkv.interp.plots import save_figure, write_figures
from qkv.interp.report import write_report
from qkv.layers.mode import evaluating
from qkv.models import CLIP, Llava
from qkv.training.evaluate import model_device

# The task modules import this one: it reads their tasks through these views (no cycle).


class VQATaskView(Protocol):
    """What vqa's pictures read from it (VQATask)."""

    @property
    def tokenizer(self) -> Any: ...

    def _question_ids(self, *args: Any, **kwargs: Any) -> Any: ...

    def answer(self, *args: Any, **kwargs: Any) -> Any: ...

    def examples_for(self, *args: Any, **kwargs: Any) -> Any: ...

    def read_image(self, *args: Any, **kwargs: Any) -> Any: ...


class CLIPTaskView(Protocol):
    """What clip's pictures read from it (CLIPTask)."""

    def predict(self, *args: Any, **kwargs: Any) -> Any: ...

    def read_image(self, *args: Any, **kwargs: Any) -> Any: ...


PNG_NAME = "attention_on_image.png"


def _cells(side: int) -> list[str]:
    return [f"r{r}c{c}" for r in range(side) for c in range(side)]


def report_for_vqa(
    model: nn.Module,
    task: VQATaskView,
    source: str,
    out: str | Path,
    *,
    question: str | None = None,
    png_dir: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """The attention report of a LLaVA-style model answering a question about a scene.

    Args:
        model: a :class:`~qkv.models.Llava`.
        task: its ``vqa`` task.
        source: an image file or ``SPLIT:N``.
        out: the HTML file to write.
        question: the question (default: the scene's first generated question, for
            ``SPLIT:N``).
        png_dir: also save the overlay (``attention_on_image.png``) and heatmaps there.
        title: page title (default: the question and the answer).

    Returns:
        The report's path.

    Raises:
        ValueError: not a Llava.
        TaskError: an image file without a question.
    """
    if not isinstance(model, Llava):
        raise ValueError(f"task 'vqa' needs a Llava model, got {type(model).__name__}")
    image, question = task.examples_for(source, question)
    (answer,) = task.answer(model, image[None], [question])
    q_ids = task._question_ids(question)
    ids = torch.tensor([q_ids + answer], dtype=torch.long, device=model_device(model))
    with evaluating(model), torch.no_grad(), record_attention(model.lm) as rec:
        model(image[None].to(ids.device), ids)
    side = model.config.image_size // model.config.patch_size
    n = side * side
    words = [task.tokenizer.id_to_token(i) for i in q_ids + answer]
    maps = []
    for j, word in enumerate(words[len(q_ids) :]):
        row = n + len(q_ids) - 1 + j  # the position whose output is this answer word
        heat = torch.stack([e.weights[0, :, row, :n].float().mean(0) for e in rec.values()])
        maps.append((f"\u2192 {word!r}", heat.mean(0).reshape(side, side).cpu()))
    said = task.tokenizer.decode(answer)
    fig = plot_overlays(image, maps or [("(empty answer)", torch.zeros(side, side))])
    caption = (
        "for each answer word, the attention over the image tokens of the position that "
        "predicts it (the language model's layers and heads averaged)"
    )
    if title is None:
        title = f"{source}: {question} \u2192 {said!r}"
    tokens = _cells(side) + words
    path = write_report(
        out,
        rec,
        tokens,
        title=title,
        figures=[(caption, figure_png(fig))],
        image=ImagePanel.row_major(image, (side, side)),
    )
    if png_dir is not None:
        save_figure(fig, Path(png_dir) / PNG_NAME)
        write_figures(rec, png_dir, tokens=tokens)
    return path


def report_for_clip(
    model: nn.Module,
    task: CLIPTaskView,
    source: str,
    out: str | Path,
    *,
    png_dir: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """The attention report of CLIP's image tower on one image (the class token's rollout
    and each layer on the picture, the interactive views of every head).

    Raises:
        ValueError: not a CLIP.
    """
    if not isinstance(model, CLIP):
        raise ValueError(f"task 'clip' needs a CLIP model, got {type(model).__name__}")
    image = task.read_image(source)
    side = model.config.image_size // model.config.patch_size
    with evaluating(model), torch.no_grad(), record_attention(model.vision) as rec:
        model.vision(image[None].to(model_device(model)))
    fig = plot_overlays(image, cls_maps(rec, (side, side)))
    caption = (
        "where the image tower's class token attends: rollout over all layers, then each layer"
    )
    if title is None:
        title = f"{source}: {task.predict(model, [source])[0]}"
    tokens = ["[CLS]", *_cells(side)]
    path = write_report(
        out,
        rec,
        tokens,
        title=title,
        figures=[(caption, figure_png(fig))],
        image=ImagePanel.row_major(image, (side, side), first=1),
    )
    if png_dir is not None:
        save_figure(fig, Path(png_dir) / PNG_NAME)
        write_figures(rec, png_dir, tokens=tokens)
    return path


__all__ = ["report_for_clip", "report_for_vqa"]
