"""Run a trained qkv model on raw text or an image and record its attention with the
token strings (or the patch grid).

The glue between a task's tokenizers or images and :func:`~qkv.interp.record_attention`:

* encoder-decoders read the text as the source; the decoder reads ``[BOS] + target``,
  where the target is given or is the model's own greedy output (``task.predict``);
* language models and encoders read the text's tokens (the last ``max_len`` of them);
* a ViT reads an image (a file, or ``SPLIT:N`` of its task); the report shows where the
  class token looks on the picture (rollout and each layer), then the image panel (hover a
  patch to see where it attends) above the interactive views;
* a Swin or a DETR reads an image too: :mod:`qkv.tasks.viz_vision` draws their figures
  (window attention of the centre patch; each object query's attention beside its box).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from qkv.interp.capture import AttentionRecord, LayerSelector, record_attention
from qkv.interp.image_panel import ImagePanel
from qkv.interp.images import cls_maps, figure_png, plot_overlays
from qkv.interp.plots import save_figure, write_figures
from qkv.interp.report import write_report
from qkv.layers.mode import evaluating
from qkv.models import DETR, Captioner, DecoderLM, EncoderModel, Seq2SeqTransformer, Swin, ViT
from qkv.tasks._image import ImageTask
from qkv.tasks.asr import ASRTask
from qkv.tasks.base import Task
from qkv.tasks.caption import CaptionTask
from qkv.tasks.clip import CLIPTask
from qkv.tasks.detect import DetectTask
from qkv.tasks.run import load_trained
from qkv.tasks.viz_caption import report_for_captioner
from qkv.tasks.viz_multimodal import report_for_clip, report_for_vqa
from qkv.tasks.viz_speech import report_for_speech
from qkv.tasks.viz_vision import report_for_detection, report_for_swin
from qkv.tasks.vqa import VQATask


@dataclass(frozen=True)
class TextRecord:
    """Attention recorded on one text.

    Attributes:
        record: the weights.
        tokens: token strings of the input (encoder, or decoder-only model).
        target_tokens: the decoder's input tokens of an encoder-decoder, else None.
        target: the target text the decoder read (generated when not given), else None.
    """

    record: AttentionRecord
    tokens: list[str]
    target_tokens: list[str] | None
    target: str | None


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _tokenizer(task: Task, *names: str) -> Any:
    for name in names:
        tok = getattr(task, name, None)
        if tok is not None:
            return tok
    raise ValueError(
        f"task {getattr(task, 'name', type(task).__name__)!r} has no tokenizer ({', '.join(names)}); "
        f"it cannot turn text into tokens"
    )


def _strings(tok: Any, ids: Iterable[int]) -> list[str]:
    return [tok.id_to_token(int(i)) for i in ids]


def record_text(
    model: nn.Module,
    task: Task,
    text: str,
    *,
    target: str | None = None,
    layers: Iterable[LayerSelector] | None = None,
    heads: Sequence[int] | None = None,
    rows: Sequence[int] | None = None,
) -> TextRecord:
    """Run ``model`` on ``text`` (tokenized by ``task``) and record its attention.

    Args:
        model: a :class:`~qkv.models.Seq2SeqTransformer`, :class:`~qkv.models.DecoderLM` or
            :class:`~qkv.models.EncoderModel` (as from :func:`qkv.training.load_trained`).
        task: its task (tokenizers: ``src_tokenizer``/``tgt_tokenizer`` or ``tokenizer``).
        text: the input text.
        target: the decoder's target text for encoder-decoders (default: generated).
        layers: see :func:`~qkv.interp.record_attention`.
        heads: see :func:`~qkv.interp.record_attention`.
        rows: see :func:`~qkv.interp.record_attention`.

    Returns:
        A :class:`TextRecord`.

    Raises:
        ValueError: a model family that does not read text, a task without tokenizers,
            or a text with no tokens.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    if not isinstance(model, (Seq2SeqTransformer, DecoderLM, EncoderModel)):
        raise ValueError(
            f"model must be a Seq2SeqTransformer, DecoderLM or EncoderModel to read text, got "
            f"{type(model).__name__}"
        )
    sel: dict[str, Any] = {"layers": layers, "heads": heads, "rows": rows}
    was_training = model.training
    model.eval()  # no dropout; the caller's mode is restored below
    try:
        return _run(model, task, text, target, sel)
    finally:
        model.train(was_training)


def _run(
    model: nn.Module, task: Task, text: str, target: str | None, sel: dict[str, Any]
) -> TextRecord:
    dev = _device(model)
    if isinstance(model, Seq2SeqTransformer):
        src_tok = _tokenizer(task, "src_tokenizer", "tokenizer")
        tgt_tok = _tokenizer(task, "tgt_tokenizer", "tokenizer")
        if target is None:
            target = task.predict(model, [text])[0]
        batch: dict[str, Tensor] = {k: v.to(dev) for k, v in task.collate([(text, target)]).items()}
        if batch["src"].shape[1] == 0:
            raise ValueError(f"text {text!r} has no tokens")
        with torch.no_grad(), record_attention(model, **sel) as rec:
            model(
                batch["src"],
                batch["tgt_in"],
                src_padding_mask=batch["src_padding_mask"],
                tgt_padding_mask=batch["tgt_padding_mask"],
            )
        return TextRecord(
            rec, _strings(src_tok, batch["src"][0]), _strings(tgt_tok, batch["tgt_in"][0]), target
        )
    tok = _tokenizer(task, "tokenizer")  # decoder-only and encoder-only models
    encode = getattr(task, "encode_text", tok.encode)
    ids = list(encode(text))[-model.config.max_len :]
    if not ids:
        raise ValueError(f"text {text!r} has no tokens")
    x = torch.tensor([ids], dtype=torch.long, device=dev)  # (1, s)
    with torch.no_grad(), record_attention(model, **sel) as rec:
        model(x)
    return TextRecord(rec, _strings(tok, ids), None, None)


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
    """Run a trained model on ``text`` (tokenized by its task) and write the report.

    Args:
        model: a model that reads text (see :func:`qkv.tasks.viz.record_text`), a ViT or
            Swin (image tasks), a DETR (``detect``), or a Captioner (``caption``).
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
    if isinstance(task, VQATask):
        return report_for_vqa(
            model, task, text, out, question=question, png_dir=png_dir, title=title
        )
    if isinstance(task, CLIPTask):
        return report_for_clip(model, task, text, out, png_dir=png_dir, title=title)
    if isinstance(task, CaptionTask):
        if not isinstance(model, Captioner):
            raise ValueError(f"task 'caption' needs a Captioner, got {type(model).__name__}")
        return report_for_captioner(model, task, text, out, png_dir=png_dir, title=title)
    if isinstance(task, DetectTask):
        if not isinstance(model, DETR):
            raise ValueError(f"task 'detect' needs a DETR, got {type(model).__name__}")
        return report_for_detection(model, task, text, out, png_dir=png_dir, title=title)
    if isinstance(task, ASRTask):
        return report_for_speech(
            model, task, text, out, target=target, png_dir=png_dir, title=title
        )
    if isinstance(task, ImageTask):
        if isinstance(model, Swin):
            return report_for_swin(model, task, text, out, png_dir=png_dir, title=title)
        return report_for_image(model, task, text, out, png_dir=png_dir, title=title)
    tr = record_text(model, task, text, target=target)
    if title is None:
        title = f"{text!r}" + (f" \u2192 {tr.target!r}" if tr.target is not None else "")
    path = write_report(out, tr.record, tr.tokens, target_tokens=tr.target_tokens, title=title)
    if png_dir is not None:
        write_figures(tr.record, png_dir, tokens=tr.tokens, target_tokens=tr.target_tokens)
    return path


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


def record_image(model: nn.Module, task: ImageTask, source: str) -> ImageRecord:
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
    task: ImageTask,
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
