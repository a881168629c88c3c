"""Run a trained qkv model on raw text, an image or a sound and write its attention report:
each task draws its own pictures (:meth:`~qkv.tasks.base.Task.pictures`):

* text models: :mod:`qkv.tasks._viz_text` (encoder-decoders read the text as the source and
  their own output as the target; language models and encoders read the text's tokens);
* a ViT, a Swin or a DETR reads an image (a file, or ``SPLIT:N`` of its task):
  :mod:`qkv.tasks.vision.viz` (where the class token looks; window attention of the centre
  patch; each object query's attention beside its box);
* caption, clip, vqa and asr: :mod:`qkv.tasks.multimodal.viz_caption`, :mod:`qkv.tasks.multimodal.viz_multimodal`
  and :mod:`qkv.tasks.speech.viz`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from qkv.tasks._viz_text import TextRecord, record_text
from qkv.tasks.base import Task
from qkv.tasks.run import load_trained


def report_for_task(
    model: nn.Module,
    task: Task,
    text: str,
    out: str | Path,
    *,
    target: str | None = None,
    png_dir: str | Path | None = None,
    title: str | None = None,
    question: str | None = None,
) -> Path:
    """Run a trained model on one input and write the report: the task draws its own
    pictures (:meth:`~qkv.tasks.base.Task.pictures`).

    Args:
        model: the task's model: one that reads text (see :func:`record_text`), a ViT or
            Swin (image tasks), a DETR (``detect``), a Captioner (``caption``), ...
        task: its task, which holds the tokenizers (or the images).
        text: the input text (for an image task: an image file or ``SPLIT:N``).
        out: the HTML file to write.
        target: the decoder's target for encoder-decoders (default: the model's output).
        png_dir: also save heatmaps there (:func:`~qkv.interp.plots.write_figures`).
        title: page title (default: the text, and the output of an encoder-decoder).
        question: ``vqa``: the question about the image (default: the scene's first).

    Returns:
        The report's path.
    """
    return task.pictures(
        model, text, out, target=target, question=question, png_dir=png_dir, title=title
    )


def from_checkpoint(
    directory: str | Path,
    text: str,
    out: str | Path,
    *,
    target: str | None = None,
    png_dir: str | Path | None = None,
    device: str = "cpu",
    title: str | None = None,
    question: str | None = None,
) -> Path:
    """Load a trained checkpoint, run it on ``text``, and write the report (and figures).

    What ``qkv viz --checkpoint DIR TEXT --out report.html [--png DIR]`` does.

    Args:
        directory: checkpoint or run directory (see :func:`qkv.training.load_trained`).
        text: the input text.
        out: the HTML file to write.
        target: the decoder's target for encoder-decoders (default: the model's output).
        png_dir: also save heatmaps there (:func:`~qkv.interp.plots.write_figures`).
        device: where to run the model.
        title: page title (default: the text, and the output of an encoder-decoder).
        question: ``vqa``: the question about the image (default: the scene's first).

    Returns:
        The report's path.
    """
    model, task = load_trained(directory, device=device)
    return report_for_task(
        model, task, text, out, target=target, png_dir=png_dir, title=title, question=question
    )


__all__ = ["TextRecord", "from_checkpoint", "record_text", "report_for_task"]
