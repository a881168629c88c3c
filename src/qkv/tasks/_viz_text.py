"""A text model's attention report: run a trained encoder-decoder, language model or
encoder on raw text (tokenized by its task) and record its attention with the token strings.

Encoder-decoders read the text as the source; the decoder reads ``[BOS] + target``, where
the target is given or is the model's own greedy output (``task.predict``). Language models
and encoders read the text's tokens (the last ``max_len`` of them). This is what
:meth:`qkv.tasks.base.Task.pictures` draws unless a task draws its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from qkv.interp.capture import AttentionRecord, LayerSelector, record_attention
from qkv.interp.plots import write_figures
from qkv.interp.report import write_report
from qkv.models import DecoderLM, EncoderModel, Seq2SeqTransformer

# The task modules import this one: it reads their tasks through these views (no cycle).


class TextTaskView(Protocol):
    """What a text report reads from its task (tokenizers are looked up by name)."""

    @property
    def name(self) -> Any: ...

    def collate(self, *args: Any, **kwargs: Any) -> Any: ...

    def predict(self, *args: Any, **kwargs: Any) -> Any: ...


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


def _tokenizer(task: TextTaskView, *names: str) -> Any:
    for name in names:
        tok = getattr(task, name, None)
        if tok is not None:
            return tok
    name = getattr(task, "name", type(task).__name__)
    raise ValueError(
        f"qkv viz cannot draw task {name!r}: it draws models that read text through a "
        "tokenizer (e.g. translate, lm, classify, summarize) or images and sound (vit, swin, "
        f"detect, caption, clip, vqa, asr), and {name!r} has no tokenizer for text "
        f"({', '.join(names)})"
    )


def _strings(tok: Any, ids: Iterable[int]) -> list[str]:
    return [tok.id_to_token(int(i)) for i in ids]


def record_text(
    model: nn.Module,
    task: TextTaskView,
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
    model: nn.Module, task: TextTaskView, text: str, target: str | None, sel: dict[str, Any]
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


def report_for_text(
    model: nn.Module,
    task: TextTaskView,
    text: str,
    out: str | Path,
    *,
    target: str | None = None,
    png_dir: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """Run a text model on ``text`` and write its attention report (and figures).

    Args:
        model: a model that reads text (see :func:`record_text`).
        task: its task, which holds the tokenizers.
        text: the input text.
        out: the HTML file to write.
        target: the decoder's target for encoder-decoders (default: the model's output).
        png_dir: also save heatmaps there (:func:`~qkv.interp.plots.write_figures`).
        title: page title (default: the text, and the output of an encoder-decoder).

    Returns:
        The report's path.
    """
    tr = record_text(model, task, text, target=target)
    if title is None:
        title = f"{text!r}" + (f" \u2192 {tr.target!r}" if tr.target is not None else "")
    path = write_report(out, tr.record, tr.tokens, target_tokens=tr.target_tokens, title=title)
    if png_dir is not None:
        write_figures(tr.record, png_dir, tokens=tr.tokens, target_tokens=tr.target_tokens)
    return path


__all__ = ["TextRecord", "record_text", "report_for_text"]
