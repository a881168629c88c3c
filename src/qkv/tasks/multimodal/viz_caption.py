"""The picture of "Show, Attend and Tell" (Xu et al. 2015, fig. 3) for ``qkv viz`` on a
captioner: the model captions the image, then for each generated word its cross-attention
over the image patches (last decoder layer, heads averaged, the class token left out) is
drawn as heat on the picture. The interactive report shows the encoder (class token and
patches), the decoder (the caption's tokens) and the cross-attention (words to patches);
its image panel shows, for the word picked, where it looked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from qkv.data.tokenizers import BOS_ID, EOS_ID
from qkv.interp.capture import AttentionRecord, record_attention
from qkv.interp.image_panel import ImagePanel
from qkv.interp.images import figure_png, patch_map, plot_overlays
from qkv.interp.plots import save_figure, write_figures
from qkv.interp.report import write_report
from qkv.layers.mode import evaluating
from qkv.models import Captioner

# The task modules import this one: it reads their tasks through these views (no cycle).


class CaptionTaskView(Protocol):
    """What caption's pictures read from it (CaptionTask)."""

    @property
    def max_len(self) -> Any: ...

    @property
    def tokenizer(self) -> Any: ...

    def read_image(self, *args: Any, **kwargs: Any) -> Any: ...


PNG_NAME = "caption_attention.png"


def word_attention(
    model: Captioner, image: Tensor, ids: list[int]
) -> tuple[list[tuple[int, Tensor]], AttentionRecord]:
    """Teacher-force ``[BOS] + ids`` on ``image`` and return, for each token of ``ids``, the
    cross-attention that chose it: the last decoder layer's row of the step before it,
    heads averaged, over the patch grid.

    Args:
        model: the captioner.
        image: ``(1, H, W)``.
        ids: the caption's token ids (without BOS).

    Returns:
        ``([(token id, (grid, grid) map), ...], the attention record)``.
    """
    device = next(model.parameters()).device
    tgt = torch.tensor([[BOS_ID, *ids]], device=device)  # (1, 1 + n)
    with evaluating(model), torch.no_grad(), record_attention(model) as rec:
        model(image[None].to(device), tgt)
    last = rec.by_kind("cross")[-1].weights[0].float().mean(0)  # (1 + n, 1 + patches)
    g = model.config.grid
    return [(t, patch_map(last[i].cpu(), (g, g))) for i, t in enumerate(ids)], rec


def report_for_captioner(
    model: Captioner,
    task: CaptionTaskView,
    source: str,
    out: str | Path,
    *,
    png_dir: str | Path | None = None,
    title: str | None = None,
) -> Path:
    """A captioner's report on one scene (see the module docstring): greedy caption, then
    one overlay per word.

    Args:
        model: the captioner.
        task: its task (tokenizer, scenes).
        source: an image file or ``SPLIT:N``.
        out: the HTML file to write.
        png_dir: also save the overlays (``caption_attention.png``) and the heatmaps there.
        title: page title (default: the source and the caption).

    Returns:
        The report's path.
    """
    image = task.read_image(source)
    device = next(model.parameters()).device
    gen = model.generate(
        image[None].to(device),
        max_new_tokens=task.max_len - 1,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
    )
    ids = [t for t in gen.tokens[0] if t != EOS_ID]
    caption = task.tokenizer.decode(ids)
    words, rec = word_attention(model, image, ids)
    tok = task.tokenizer
    maps = [(tok.decode([t]) or str(t), m) for t, m in words]
    fig = plot_overlays(image, maps, columns=6)
    figure_caption = (
        f"\u201c{caption}\u201d: for each generated word, its cross-attention over the image "
        "(last decoder layer, heads averaged)"
    )
    g = model.config.grid
    cells = ["[cls]", *(f"r{r}c{c}" for r in range(g) for c in range(g))]
    targets = ["<bos>", *(tok.decode([t]) or str(t) for t in ids)]
    path = write_report(
        out,
        rec,
        cells,
        target_tokens=targets,
        title=title if title is not None else f"{source}: {caption}",
        figures=[(figure_caption, figure_png(fig))],
        image=ImagePanel.row_major(image, (g, g), first=1),
    )
    if png_dir is not None:
        save_figure(fig, Path(png_dir) / PNG_NAME)
        write_figures(rec, png_dir, tokens=cells, target_tokens=targets)
    return path


__all__ = ["PNG_NAME", "report_for_captioner", "word_attention"]
