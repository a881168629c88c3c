"""Attention heatmaps with matplotlib: one head with token labels, or a layers x heads grid.

Figures are built with :class:`matplotlib.figure.Figure` directly (no ``pyplot``), so no
global figure state is touched and no display is needed; they are returned, and saved
when a path ending in ``.png`` or ``.svg`` is given.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from qkv.data.outfiles import write_output_file
from qkv.interp.capture import AttentionEntry, AttentionRecord, Kind, token_sides

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS: tuple[str, ...] = ("png", "svg")
MAX_LABELS = 64  # beyond this, only every n-th token is labelled


def _figure(figsize: tuple[float, float]) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is a dependency of the viz extra
        raise ImportError("plots need matplotlib: pip install 'qkv[viz]'") from e
    return Figure(figsize=figsize, layout="constrained")


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Save a figure as PNG or SVG (chosen by the file suffix).

    Raises:
        ValueError: a suffix other than ``.png`` / ``.svg``.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"path must end in one of {[f'.{f}' for f in FORMATS]}, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    write_output_file(path, buf.getvalue())  # never through a planted link
    return path


def _label_axis(ax: Axes, axis: str, tokens: Sequence[str] | None, n: int) -> None:
    if tokens is None:
        return
    if len(tokens) != n:
        arg = "key_tokens" if axis == "keys" else "query_tokens"
        raise ValueError(f"{arg} has {len(tokens)} tokens but the weights have {n} {axis}")
    step = max(1, -(-n // MAX_LABELS))
    ticks = list(range(0, n, step))
    labels = [tokens[i] for i in ticks]
    if axis == "keys":
        ax.set_xticks(ticks, labels, rotation=90, fontsize=8)
    else:
        ax.set_yticks(ticks, labels, fontsize=8)


def _head_matrix(source: AttentionEntry | Tensor, head: int, batch: int) -> tuple[Tensor, str]:
    if isinstance(source, AttentionEntry):
        return source.head(head, batch), f"{source.name} head {head}"
    if not isinstance(source, Tensor):
        raise TypeError(f"source must be an AttentionEntry or tensor, got {type(source).__name__}")
    w = source
    if w.ndim == 4:
        if not 0 <= batch < w.shape[0]:
            raise ValueError(f"batch ({batch}) out of range [0, {w.shape[0]})")
        w = w[batch]
    if w.ndim == 3:
        if not 0 <= head < w.shape[0]:
            raise ValueError(f"head ({head}) out of range [0, {w.shape[0]})")
        w = w[head]
    if w.ndim != 2:
        raise ValueError(
            f"weights must be (s_q, s_k), (h, s_q, s_k) or (b, h, s_q, s_k), got {tuple(source.shape)}"
        )
    return w, f"head {head}"


def plot_head(
    source: AttentionEntry | Tensor,
    head: int = 0,
    *,
    batch: int = 0,
    query_tokens: Sequence[str] | None = None,
    key_tokens: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
    cmap: str = "viridis",
    ax: Axes | None = None,
) -> Figure:
    """Heatmap of one head's weights: rows are queries, columns keys.

    Args:
        source: an :class:`~qkv.interp.AttentionEntry` (``head`` is a module head index)
            or weights ``(s_q, s_k)``, ``(h, s_q, s_k)`` or ``(b, h, s_q, s_k)``.
        head: which head.
        batch: which batch row.
        query_tokens: labels of the rows (those recorded, for an entry with ``rows``).
        key_tokens: labels of the columns.
        title: the axes title (default: module name and head).
        path: save to this ``.png`` / ``.svg`` file.
        cmap: a matplotlib colormap name.
        ax: draw into these axes instead of a new figure.

    Returns:
        The figure.

    Raises:
        ValueError: a head or batch out of range, token lists of the wrong length, or an
            unsupported file suffix.
    """
    w, default_title = _head_matrix(source, head, batch)
    w = w.detach().float().cpu()
    if ax is None:
        side = min(12.0, max(4.0, 0.18 * max(w.shape)))
        fig = _figure((side + 1.5, side))
        ax = fig.add_subplot()
    else:
        fig = ax.get_figure()  # type: ignore[assignment]
    im = ax.imshow(w.numpy(), cmap=cmap, vmin=0.0, vmax=max(1e-6, float(w.max())), aspect="auto")
    _label_axis(ax, "queries", query_tokens, w.shape[0])
    _label_axis(ax, "keys", key_tokens, w.shape[1])
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title if title is not None else default_title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_grid(
    record: AttentionRecord,
    kind: Kind | None = None,
    *,
    batch: int = 0,
    path: str | Path | None = None,
    cmap: str = "viridis",
    cell: float = 1.4,
) -> Figure:
    """A layers x heads grid of small heatmaps of one kind of attention.

    Args:
        record: from :func:`~qkv.interp.record_attention`.
        kind: ``"encoder_self"``, ``"decoder_self"`` or ``"cross"`` (default: the first
            recorded).
        batch: which batch row.
        path: save to this ``.png`` / ``.svg`` file.
        cmap: a matplotlib colormap name.
        cell: side of each heatmap in inches.

    Returns:
        The figure.

    Raises:
        ValueError: an empty record, a kind that was not recorded, or a bad suffix.
    """
    if not isinstance(record, AttentionRecord):
        raise TypeError(f"record must be an AttentionRecord, got {type(record).__name__}")
    if not record:
        raise ValueError("record is empty: run the model inside record_attention first")
    kind = kind if kind is not None else record.kinds[0]
    entries = record.by_kind(kind)
    b = min(e.weights.shape[0] for e in entries) if entries else 0
    if entries and not 0 <= batch < b:
        raise ValueError(f"batch ({batch}) out of range [0, {b})")
    if not entries:
        raise ValueError(f"no {kind!r} attention recorded; recorded kinds: {record.kinds}")
    n_heads = max(len(e.heads) for e in entries)
    fig = _figure((cell * n_heads + 0.5, cell * len(entries) + 0.5))
    axes = fig.subplots(len(entries), n_heads, squeeze=False)
    for r, e in enumerate(entries):
        for c in range(n_heads):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(e.heads):
                ax.set_axis_off()
                continue
            w = e.weights[batch, c].detach().float().cpu()
            ax.imshow(w.numpy(), cmap=cmap, vmin=0.0, vmax=max(1e-6, float(w.max())))
            if r == 0:
                ax.set_title(f"head {e.heads[c]}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"layer {e.layer_index}", fontsize=8)
    fig.suptitle(f"{kind} attention (layers x heads)", fontsize=10)
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_alignment(
    weights: Tensor,
    seconds_per_key: float,
    *,
    target_tokens: Sequence[str] | None = None,
    spectrogram: Tensor | None = None,
    seconds_per_frame: float = 0.01,
    title: str | None = None,
) -> Figure:
    """A speech model's alignment: cross-attention weights of the output tokens (rows)
    over the encoder's positions (columns, in seconds), under the input's spectrogram on
    the same time axis. A model that reads the audio in order draws a near-diagonal.

    Args:
        weights: ``(s_q, s_k)``, e.g. the cross-attention averaged over layers and heads.
        seconds_per_key: audio time per encoder position (hop x downsampling / rate).
        target_tokens: the decoder's input tokens (row labels).
        spectrogram: ``(t, n_mels)`` features drawn above, or None.
        seconds_per_frame: audio time per spectrogram frame.
        title: figure title.

    Returns:
        The figure.

    Raises:
        ValueError: weights that are not 2-D, or labels that do not match the rows.
    """
    if weights.ndim != 2:
        raise ValueError(f"weights must be (s_q, s_k), got {tuple(weights.shape)}")
    s_q, s_k = weights.shape
    height = 0.18 * s_q + 1.5
    fig = _figure((10.0, height + (2.0 if spectrogram is not None else 0.0)))
    n_rows = 2 if spectrogram is not None else 1
    axes = fig.subplots(n_rows, 1, sharex=True, height_ratios=[2.0, height][-n_rows:])
    ax = axes[-1] if n_rows == 2 else axes
    if spectrogram is not None:
        top = axes[0]
        end = spectrogram.shape[0] * seconds_per_frame
        top.imshow(spectrogram.float().T.cpu().numpy(), aspect="auto", origin="lower",
                   extent=(0.0, end, 0, spectrogram.shape[1]), cmap="magma")  # fmt: skip
        top.set_ylabel("mel")
    ax.imshow(weights.float().cpu().numpy(), aspect="auto", cmap="viridis", vmin=0.0,
              extent=(0.0, s_k * seconds_per_key, s_q - 0.5, -0.5), interpolation="nearest")  # fmt: skip
    _label_axis(ax, "queries", target_tokens, s_q)
    ax.set_xlabel("audio (s)")
    ax.set_ylabel("output token")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def write_figures(
    record: AttentionRecord,
    directory: str | Path,
    *,
    tokens: Sequence[str] | None = None,
    target_tokens: Sequence[str] | None = None,
    batch: int = 0,
    fmt: str = "png",
    heads: bool = True,
) -> list[Path]:
    """Save a layers x heads grid per kind and, with ``heads``, a labelled heatmap of every
    recorded head (``{kind}_grid.png``, ``{kind}_layer{N}_head{H}.png``).

    Each head is a matplotlib figure (about 0.1-0.3 s); pass ``heads=False`` for large
    models.

    Args:
        record: from :func:`~qkv.interp.record_attention`.
        directory: created if missing.
        tokens: token strings of the input (labels; see :func:`~qkv.interp.build_report`).
        target_tokens: the decoder's input tokens of an encoder-decoder.
        batch: which batch row.
        fmt: ``"png"`` or ``"svg"``.
        heads: also save every head's heatmap.

    Returns:
        The paths written.

    Raises:
        ValueError: an unknown format or an empty record.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    directory = Path(directory)
    toks = {"input": tokens, "target": target_tokens}
    paths = []
    for kind in record.kinds:
        fig = plot_grid(record, kind, batch=batch)
        paths.append(save_figure(fig, directory / f"{kind}_grid.{fmt}"))
        if not heads:
            continue
        q_side, k_side = token_sides(kind, target_tokens is not None) if tokens else ("", "")
        for e in record.by_kind(kind):
            qt, kt = toks.get(q_side), toks.get(k_side)
            q_labels = [qt[r + e.key_offset] for r in e.rows] if qt is not None else None
            for h in e.heads:
                fig = plot_head(e, h, batch=batch, query_tokens=q_labels, key_tokens=kt)
                name = f"{kind}_layer{e.layer_index}_head{h}.{fmt}"
                paths.append(save_figure(fig, directory / name))
    return paths
