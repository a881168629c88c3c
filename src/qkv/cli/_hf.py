"""What ``qkv generate --hf DIR`` and ``qkv viz --hf DIR`` do, as library functions.

Both read a Hugging Face model directory (``config.json``, the weights and
``tokenizer.json``) with :func:`~qkv.interop.load_hf` and
:func:`~qkv.interop.load_hf_tokenizer`; text goes through the directory's tokenizer with its
own special tokens (``[CLS] .. [SEP]``, ``</s>``, ...), and generation uses the directory's
token ids (``decoder_start_token_id``, ``eos_token_id``, ``pad_token_id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qkv.generation import generate
from qkv.interop import HFModel, load_hf, load_hf_tokenizer
from qkv.interp import record_attention, write_report
from qkv.interp.plots import write_figures
from qkv.models import DecoderLM, EncoderModel, Seq2SeqTransformer
from qkv.tasks.viz import TextRecord


def _ids(tok: Any, text: str) -> list[int]:
    ids = list(tok.encode(text).ids)
    if not ids:
        raise ValueError(f"text {text!r} has no tokens")
    return ids


def _batch(rows: Sequence[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Right-padded ``(b, s)`` ids and their mask (True = real token)."""
    s = max(len(r) for r in rows)
    ids = torch.full((len(rows), s), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), s, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    return ids, mask


def _kind(loaded: HFModel) -> str:
    m = loaded.model
    if isinstance(m, Seq2SeqTransformer):
        return "seq2seq"
    if isinstance(m, DecoderLM):
        return "lm"
    if isinstance(m, EncoderModel):
        return "encoder"
    return "vision"


def generate_ids(
    loaded: HFModel, rows: Sequence[list[int]], *, max_new_tokens: int = 32, **kwargs: Any
) -> list[list[int]]:
    """Generate from token ids with a loaded directory's token ids.

    Args:
        loaded: from :func:`~qkv.interop.load_hf`: a GPT-2, BART, Marian or T5 model.
        rows: prompt (GPT-2) or source (encoder-decoders) ids per example.
        max_new_tokens: the most new tokens per row.
        **kwargs: more :func:`qkv.generation.generate` arguments (``strategy``,
            ``beam_size``, ``temperature``, ...; greedy by default).

    Returns:
        The new tokens per row, EOS excluded.

    Raises:
        ValueError: a model that does not generate (BERT, ViT), or prompts longer than a
            language model's context allows.
    """
    kind = _kind(loaded)
    if kind not in ("lm", "seq2seq"):
        raise ValueError(
            f"{loaded.path} holds a {loaded.family} model ({type(loaded.model).__name__}), which "
            f"does not generate text; use a GPT-2, BART, Marian or T5 directory"
        )
    pad = loaded.token_id("pad_token_id")
    eos = loaded.token_id("eos_token_id")
    pad = pad if pad is not None else (eos if eos is not None else 0)
    ids, mask = _batch(rows, pad)
    kw: dict[str, Any] = {"eos_id": eos, "pad_id": pad, "max_new_tokens": max_new_tokens, **kwargs}
    if kind == "seq2seq":
        start = loaded.token_id("decoder_start_token_id")
        kw.setdefault("bos_id", start if start is not None else pad)
    else:
        limit = loaded.model.config.max_len
        longest = max(len(r) for r in rows)
        if longest + kw["max_new_tokens"] > limit:
            raise ValueError(
                f"prompt ({longest} tokens) + max_new_tokens ({kw['max_new_tokens']}) exceeds the "
                f"model's context ({limit} positions)"
            )
    device = next(loaded.model.parameters()).device
    return generate(loaded.model, ids.to(device), padding_mask=mask.to(device), **kw).tokens


def generate_text(
    directory: str | Path,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    device: str = "cpu",
    **kwargs: Any,
) -> list[str]:
    """Continue prompts (GPT-2) or translate/transform sources (BART, Marian, T5) with a
    Hugging Face model directory: what ``qkv generate --hf DIR PROMPT...`` prints.

    Args:
        directory: the model directory, with ``tokenizer.json``.
        prompts: the input texts.
        max_new_tokens: the most new tokens per text.
        device: where to run.
        **kwargs: more :func:`qkv.generation.generate` arguments (greedy by default).

    Returns:
        The generated text per prompt (a language model's continuation only), special tokens
        removed.

    Raises:
        FileNotFoundError: no ``tokenizer.json`` (or config, weights).
        ValueError: a model that does not generate, or an empty prompt.
    """
    loaded = load_hf(directory, device=device)
    tok = load_hf_tokenizer(directory)
    rows = [_ids(tok, p) for p in prompts]
    out = generate_ids(loaded, rows, max_new_tokens=max_new_tokens, **kwargs)
    return [tok.decode(t, skip_special_tokens=True) for t in out]


def record_hf(
    directory: str | Path,
    text: str,
    *,
    target: str | None = None,
    device: str = "cpu",
    max_new_tokens: int = 32,
) -> TextRecord:
    """Run a Hugging Face model directory on one ``text`` and record every attention head
    with :func:`qkv.interp.record_attention`.

    Encoder-decoders read ``text`` as the source and ``[decoder start] + target`` in the
    decoder, where the target is ``target`` (tokenized) or the model's greedy output; GPT-2
    and BERT read ``text``'s tokens (the last ``max_len``). One text is never padded (the
    tokenizer's own padding is off), so no head attends to padding.

    Args:
        directory: the model directory, with ``tokenizer.json``.
        text: the input text.
        target: the decoder's target text for encoder-decoders (default: generated).
        device: where to run.
        max_new_tokens: longest generated target.

    Returns:
        A :class:`~qkv.tasks.viz.TextRecord` (the weights and the token strings).

    Raises:
        ValueError: a vision model (the input is an image, not text), or a text without
            tokens.
    """
    loaded = load_hf(directory, device=device)
    tok = load_hf_tokenizer(directory)
    model, kind = loaded.model, _kind(loaded)
    if kind == "vision":
        raise ValueError(f"{directory} holds a {loaded.family} model, which reads images, not text")
    if target is not None and kind != "seq2seq":  # it would be read by nothing
        raise ValueError(
            f"--target: {directory} holds a {loaded.family} model, which has no decoder target "
            "(only encoder-decoders take one: BART, Marian, T5)"
        )
    dev = next(model.parameters()).device
    ids = _ids(tok, text)
    target_tokens = None
    with torch.no_grad():
        if kind == "seq2seq":
            if target is None:
                new = generate_ids(loaded, [ids], max_new_tokens=max_new_tokens)[0]
                target = tok.decode(new, skip_special_tokens=True)
            else:
                new = list(tok.encode(target).ids)
            start = loaded.token_id("decoder_start_token_id")
            tgt_in = [start if start is not None else 0, *new]
            src = torch.tensor([ids], device=dev)  # (1, s_src)
            tgt = torch.tensor([tgt_in], device=dev)  # (1, s_tgt)
            with record_attention(model) as rec:
                model(src, tgt)
            target_tokens = [tok.id_to_token(i) or str(i) for i in tgt_in]
        else:
            ids = ids[-model.config.max_len :]
            with record_attention(model) as rec:
                model(torch.tensor([ids], device=dev))
    tokens = [tok.id_to_token(i) or str(i) for i in ids]
    return TextRecord(rec, tokens, target_tokens, target if kind == "seq2seq" else None)


def viz_hf(
    directory: str | Path,
    text: str,
    out_html: str | Path,
    png_dir: str | Path | None = None,
    *,
    target: str | None = None,
    device: str = "cpu",
    title: str | None = None,
    max_new_tokens: int = 32,
) -> Path:
    """Record a Hugging Face model directory's attention on ``text`` (:func:`record_hf`) and
    write the interactive report (and, given ``png_dir``, heatmaps): what
    ``qkv viz --hf DIR TEXT`` does.

    Args:
        directory: the model directory, with ``tokenizer.json``.
        text: the input text.
        out_html: the report to write.
        png_dir: also save heatmaps there.
        target: the decoder's target text for encoder-decoders (default: generated).
        device: where to run.
        title: page title (default: the text and the directory's name).
        max_new_tokens: longest generated target.

    Returns:
        The report's path.

    Raises:
        ValueError: see :func:`record_hf`.
    """
    tr = record_hf(directory, text, target=target, device=device, max_new_tokens=max_new_tokens)
    if title is None:
        arrow = f" \u2192 {tr.target!r}" if tr.target is not None else ""
        title = f"{text!r}{arrow} ({Path(directory).name})"
    path = write_report(out_html, tr.record, tr.tokens, target_tokens=tr.target_tokens, title=title)
    if png_dir is not None:
        write_figures(tr.record, png_dir, tokens=tr.tokens, target_tokens=tr.target_tokens)
    return path
