"""The attention report of a speech model (``qkv viz`` on an ``asr`` checkpoint): the
alignment of the transcript with the audio, as a figure and in the interactive report.

The decoder reads ``[BOS] + transcript`` (the model's own greedy transcript unless a target
is given) against the encoder's positions, labelled by their time in the audio; the
alignment is the cross-attention averaged over layers and heads, drawn under the
log-mel spectrogram (:func:`qkv.interp.plots.plot_alignment`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from qkv.data.audio import SAMPLE_RATE
from qkv.data.tokenizers import BOS_ID
from qkv.interp.capture import AttentionRecord, record_attention
from qkv.interp.images import figure_png
from qkv.interp.plots import plot_alignment, save_figure, write_figures
from qkv.interp.report import write_report
from qkv.layers.mode import evaluating
from qkv.models import Whisper
from qkv.tasks.base import TaskError

# The task modules import this one: it reads their tasks through these views (no cycle).


class ASRTaskView(Protocol):
    """What asr's pictures read from it (ASRTask)."""

    @property
    def front_end(self) -> Any: ...

    @property
    def tokenizer(self) -> Any: ...

    def features(self, *args: Any, **kwargs: Any) -> Any: ...

    def read_input(self, *args: Any, **kwargs: Any) -> Any: ...

    def transcribe(self, *args: Any, **kwargs: Any) -> Any: ...


def alignment(record: AttentionRecord, batch: int = 0) -> Tensor:
    """The cross-attention averaged over layers and heads, ``(s_q, s_k)``."""
    return record.stack("cross")[:, batch].float().mean(dim=(0, 1))  # (s_q, s_k)


def report_for_speech(
    model: nn.Module,
    task: ASRTaskView,
    source: str,
    out: str | Path,
    *,
    target: str | None = None,
    png_dir: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Transcribe one utterance, record every attention head and write the report with the
    alignment figure (and, with ``png_dir``, ``alignment.png`` and the heatmaps).

    Args:
        model: a :class:`~qkv.models.Whisper`.
        task: its ``asr`` task.
        source: a sound file or ``SPLIT:N`` (:meth:`ASRTask.read_input`).
        out: the HTML file to write.
        target: the transcript the decoder reads (default: the model's greedy one).
        png_dir: where to save the figures.
        title: page title (default: the source and the transcript).

    Returns:
        The report's path.

    Raises:
        TaskError: not a Whisper model, or an input that cannot be read.
    """
    if not isinstance(model, Whisper):
        raise TaskError(f"task 'asr' needs a Whisper model, got {type(model).__name__}")
    signal = task.read_input(source)
    if target is None:
        target = task.transcribe(model, [signal])[0]
    feats, _ = task.features([signal])  # (1, t, n_mels)
    tok = task.tokenizer
    ids = [BOS_ID, *tok.encode(target)][: model.config.max_len]
    dev = next(model.parameters()).device
    with evaluating(model), torch.no_grad(), record_attention(model) as rec:
        model(feats.to(dev), torch.tensor([ids], device=dev))
    hop = task.front_end.hop / SAMPLE_RATE
    stride = hop * model.config.conv_strides[0] * model.config.conv_strides[1]
    s_src = model.config.source_len(feats.shape[1])
    times = [f"{i * stride:.2f}s" for i in range(s_src)]
    target_tokens = [tok.id_to_token(i) for i in ids]
    fig = plot_alignment(
        alignment(rec), stride, target_tokens=target_tokens, spectrogram=feats[0],
        seconds_per_frame=hop, title=f"{target!r}",
    )  # fmt: skip
    caption = (
        "alignment: cross-attention of each output token over the audio (layers and heads averaged)"
    )
    path = write_report(
        out,
        rec,
        times,
        target_tokens=target_tokens,
        title=title or f"{source}: {target!r}",
        figures=[(caption, figure_png(fig))],
    )
    if png_dir is not None:
        save_figure(fig, Path(png_dir) / "alignment.png")
        write_figures(rec, png_dir, tokens=times, target_tokens=target_tokens, heads=False)
    return path


__all__ = ["alignment", "report_for_speech"]
