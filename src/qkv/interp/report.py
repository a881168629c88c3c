"""A self-contained interactive HTML report of recorded attention.

One file, no network: the data, stylesheet and script are inlined, and a Content Security
Policy forbids every load and every script but the report's own (pinned by its SHA-256), so
a token such as ``<img src=x onerror=alert(1)>`` can only ever show as text. Views, for
encoder self-, decoder self- and cross-attention alike:

* a head view (Vig 2019, "A Multiscale Visualization of Attention in the Transformer
  Model"): queries and keys in two columns joined by lines whose opacity is the weight;
  hovering a token highlights its connections; layer and head selectors;
* a model view: a layers x heads grid of thumbnails (click one to select it);
* a heatmap of the selected head;
* the head statistics table of :func:`qkv.interp.head_stats` (sortable);
* given the input picture (``image=``, an :class:`~qkv.interp.image_panel.ImagePanel`),
  an image panel: hover a patch to see the selected head's attention row from it as heat
  over the picture (click to pin; arrow keys move); other queries (a class token, DETR's
  object queries over the cells) are picked from buttons or a list.

Long inputs stay usable: the head view draws only each query's strongest edges, and past
``max_values`` weights in total only the ``top_k`` strongest keys per query are kept.
Weights are stored as bytes, ``round(255 sqrt(w))`` (a step of at most 0.008 near 1, and
weights down to 4e-6 stay non-zero), which is what the eye can see.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qkv.data.outfiles import write_output_file
from qkv.interp._report_assets import CSS, JS
from qkv.interp.capture import AttentionEntry, AttentionRecord, token_sides
from qkv.interp.image_panel import ImagePanel
from qkv.interp.stats import HeadStats, head_stats

#: Token strings treated as special when computing the ``special`` share.
DEFAULT_SPECIAL: frozenset[str] = frozenset(
    {"<pad>", "<bos>", "<eos>", "<unk>", "<s>", "</s>", "[CLS]", "[SEP]", "[PAD]", "[MASK]"}
    | {"<|endoftext|>"}
)
KIND_LABELS: dict[str, str] = {
    "encoder_self": "Encoder self-attention",
    "decoder_self": "Decoder self-attention",
    "cross": "Cross-attention (decoder queries, encoder keys)",
}


def _b64(t: Tensor) -> str:
    return base64.b64encode(t.contiguous().cpu().numpy().tobytes()).decode("ascii")


def _quantize(w: Tensor) -> Tensor:
    """``round(255 sqrt(w))`` as bytes: the square root keeps small weights visible
    (uniform attention over 600 keys is 10, not 0); the page decodes ``(q / 255)^2``."""
    return (w.float().clamp(0, 1).sqrt() * 255.0).round().to(torch.uint8)


def _check_tokens(name: str, tokens: Sequence[str] | None) -> list[str] | None:
    if tokens is None:
        return None
    if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
        raise TypeError(f"{name} must be a sequence of strings, got {tokens!r:.80}")
    return list(tokens)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _entry_stats(
    e: AttentionEntry, batch: int, key_tokens: Sequence[str], special: Collection[str]
) -> list[HeadStats]:
    one = AttentionEntry(
        e.name, e.kind, e.layer_index, e.weights[batch : batch + 1], e.heads, e.rows, e.s_q
    )
    pos = [i for i, t in enumerate(key_tokens) if t in special]
    return head_stats(one, special=pos or None)


def _layer_data(e: AttentionEntry, batch: int, dense: bool, top_k: int) -> dict[str, Any]:
    w = e.weights[batch].detach().float()  # (h', r, s_k)
    layer: dict[str, Any] = {
        "name": e.name,
        "index": e.layer_index,
        "heads": list(e.heads),
        "qpos": [r + e.key_offset for r in e.rows],
    }
    if dense:
        layer["encoding"] = "dense"
        layer["data"] = [_b64(_quantize(w[i])) for i in range(w.shape[0])]
        return layer
    k = min(top_k, w.shape[-1])
    vals, idx = w.topk(k, dim=-1)  # (h', r, k), strongest first
    layer["encoding"], layer["k"] = "topk", k
    layer["data"] = [
        {"idx": _b64(idx[i].to(torch.int32).to(torch.int16)), "val": _b64(_quantize(vals[i]))}
        for i in range(w.shape[0])
    ]
    return layer


def report_data(
    record: AttentionRecord,
    tokens: Sequence[str],
    *,
    target_tokens: Sequence[str] | None = None,
    title: str = "qkv attention report",
    batch: int = 0,
    stats: Sequence[HeadStats] | None = None,
    special_tokens: Collection[str] = DEFAULT_SPECIAL,
    max_values: int = 4_000_000,
    top_k: int = 32,
    edges_per_query: int | None = None,
    min_weight: float = 0.02,
    image: ImagePanel | None = None,
) -> dict[str, Any]:
    """The JSON-ready data of a report (see :func:`build_report` for the arguments)."""
    if not isinstance(record, AttentionRecord):
        raise TypeError(f"record must be an AttentionRecord, got {type(record).__name__}")
    if not record:
        raise ValueError("record is empty: run the model inside record_attention first")
    toks = {
        "input": _check_tokens("tokens", tokens),
        "target": _check_tokens("target_tokens", target_tokens),
    }
    for name, val in (("max_values", max_values), ("top_k", top_k)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    if not 0.0 <= min_weight <= 1.0:
        raise ValueError(f"min_weight must be in [0, 1], got {min_weight!r}")
    if image is not None and not isinstance(image, ImagePanel):
        raise TypeError(f"image must be an ImagePanel, got {type(image).__name__}")
    if "cross" in record.kinds and toks["target"] is None:
        raise ValueError("cross-attention was recorded: pass target_tokens (the decoder's input)")
    b = min(e.weights.shape[0] for e in record.values())
    if not 0 <= batch < b:
        raise ValueError(f"batch ({batch}) out of range [0, {b})")
    for e in record.values():
        q_side, k_side = token_sides(e.kind, toks["target"] is not None)
        qt, kt = toks[q_side], toks[k_side]
        assert qt is not None and kt is not None
        if len(kt) != e.s_k:
            raise ValueError(
                f"{e.name!r} ({e.kind}) has {e.s_k} keys but {k_side} tokens number {len(kt)}"
            )
        if max(e.rows) + e.key_offset >= len(qt):
            raise ValueError(
                f"{e.name!r} ({e.kind}) has queries up to position "
                f"{max(e.rows) + e.key_offset} but {q_side} tokens number {len(qt)}"
            )
    total = sum(len(e.heads) * len(e.rows) * e.s_k for e in record.values())
    dense = total <= max_values
    views = []
    for kind in record.kinds:
        entries = record.by_kind(kind)
        q_side, k_side = token_sides(kind, toks["target"] is not None)
        views.append(
            {
                "kind": kind,
                "label": KIND_LABELS[kind],
                "q": q_side,
                "k": k_side,
                "nk": entries[0].s_k,
                "layers": [_layer_data(e, batch, dense, top_k) for e in entries],
            }
        )
    if stats is None:
        stats = []
        for e in record.values():
            kt = toks[token_sides(e.kind, toks["target"] is not None)[1]]
            assert kt is not None
            stats.extend(_entry_stats(e, batch, kt, special_tokens))
    n_max = max(v["nk"] for v in views)
    if edges_per_query is None:
        edges_per_query = 6 if n_max <= 64 else 3 if n_max <= 256 else 2
    data: dict[str, Any] = {
        "title": str(title),
        "tokens": {k: v for k, v in toks.items() if v is not None},
        "views": views,
        "stats": [{k: _json_safe(v) for k, v in s.to_dict().items()} for s in stats],
        "edges_per_query": int(edges_per_query),
        "min_weight": float(min_weight),
        "encoding": "dense" if dense else "topk",
    }
    if image is not None:
        assert toks["input"] is not None
        data["image"] = image.data(len(toks["input"]))
    return data


def _script_json(data: dict[str, Any]) -> str:
    """JSON that is inert inside ``<script type="application/json">``: ``<``, ``>`` and
    ``&`` are written as ``\\u`` escapes, so no token can close the element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(JS.encode("utf-8")).digest()).decode("ascii")
    return (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>{css}</style>
</head>
<body>
<h1 id="title"></h1>
{figures}<p class="note">Attention weights recorded by qkv (<code>qkv.interp.record_attention</code>):
row = query, column = key; each query's weights sum to 1. Self-contained: no network.</p>
<div id="controls">
  <label>attention <select id="kind"></select></label>
  <label>layer <select id="layer"></select></label>
  <label>head <select id="head"></select></label>
  <label>edges per query <input id="topk" type="number" min="1" max="64"></label>
  <label>min weight <input id="minw" type="number" min="0" max="1" step="0.01"></label>
  <span id="status" class="note"></span>
  <div id="tip"></div>
</div>
{image_panel}<h2>Head view</h2>
<p class="note">Lines join each query (left) to its strongest keys (right); opacity and width
show the weight. Hover a token to highlight all of its connections.</p>
<div id="headview-wrap"><svg id="headview" xmlns="http://www.w3.org/2000/svg"></svg></div>
<h2>Model view</h2>
<p class="note">Every layer and head of the selected kind; click one to select it.</p>
<div id="modelview"></div>
<h2>Heatmap</h2>
<div id="heat-wrap"><canvas id="heatmap"></canvas></div>
<h2>Head statistics</h2>
<p class="note">Averages over query rows: entropy (nats), mean attention distance, weight on
the first and on special tokens, on the query's own, previous and next position; the
pattern label of <code>qkv.interp.label_heads</code>. Click a column to sort, a row to view.</p>
<div id="stats-wrap"><table id="stats"><thead></thead><tbody></tbody></table></div>
<script id="qkv-data" type="application/json">{data}</script>
<script>{js}</script>
</body>
</html>
"""


_IMAGE_PANEL = """<h2>Attention on the image</h2>
<p class="note">Hover a patch to see where it attends in the selected layer and head (heat
scaled to the row's strongest patch); click to pin it, arrow keys move the pinned patch,
Escape unpins. Other queries (a class token, object queries) are picked below.</p>
<div id="img-panel">
  <div id="img-queries"></div>
  <label><input id="img-mean" type="checkbox"> mean of the layer's heads</label>
  <canvas id="imgview" tabindex="0"></canvas>
  <div id="img-tip" class="note"></div>
</div>
"""


def build_report(
    record: AttentionRecord,
    tokens: Sequence[str],
    *,
    target_tokens: Sequence[str] | None = None,
    title: str = "qkv attention report",
    batch: int = 0,
    stats: Sequence[HeadStats] | None = None,
    special_tokens: Collection[str] = DEFAULT_SPECIAL,
    max_values: int = 4_000_000,
    top_k: int = 32,
    edges_per_query: int | None = None,
    min_weight: float = 0.02,
    figures: Sequence[tuple[str, bytes]] = (),
    image: ImagePanel | None = None,
) -> str:
    """The HTML text of an interactive attention report.

    Knows nothing of checkpoints or tokenizers: give it the token strings and a record.

    Args:
        record: from :func:`~qkv.interp.record_attention` (any layers, heads and rows).
        tokens: token strings of the input: the encoder's (encoder-decoders, encoders) or
            the decoder's (language models).
        target_tokens: the decoder's input tokens of an encoder-decoder (queries of the
            decoder self- and cross-attention).
        title: page title.
        batch: which batch row of the record to show.
        stats: head statistics to show (default: :func:`~qkv.interp.head_stats` of that
            batch row, with ``special_tokens`` as the special keys).
        special_tokens: token strings counted as special.
        max_values: most weights stored densely; beyond, only the ``top_k`` strongest keys
            per query are stored.
        top_k: keys kept per query in the sparse encoding.
        edges_per_query: edges drawn per query in the head view (default by length).
        min_weight: weakest edge drawn in the head view.
        figures: ``(caption, PNG bytes)`` pictures shown above the interactive views (e.g.
            attention over an image: :mod:`qkv.interp.images`), embedded as data URLs.
        image: the input picture and its patch grid: adds the interactive image panel
            (the patches must be input tokens, the keys of the views it draws).

    Returns:
        The HTML document.

    Raises:
        ValueError: an empty record, token lists that do not match the recorded lengths
            (naming the layer and both lengths), or out-of-range arguments.
    """
    data = report_data(
        record,
        tokens,
        target_tokens=target_tokens,
        title=title,
        batch=batch,
        stats=stats,
        special_tokens=special_tokens,
        max_values=max_values,
        top_k=top_k,
        edges_per_query=edges_per_query,
        min_weight=min_weight,
        image=image,
    )
    return _TEMPLATE.format(
        csp=_csp(),
        figures=_figures_html(figures),
        image_panel=_IMAGE_PANEL if image is not None else "",
        title=html.escape(str(title)),
        css=CSS,
        data=_script_json(data),
        js=JS,
    )


def _figures_html(figures: Sequence[tuple[str, bytes]]) -> str:
    """``<figure>`` elements with the PNGs inline (the page's policy allows data images)."""
    parts = []
    for caption, png in figures:
        if not png.startswith(b"\x89PNG"):
            raise ValueError(f"figure {caption!r} is not PNG data")
        url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img alt="{html.escape(caption)}" src="{url}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>\n"
        )
    return "".join(parts)


def write_report(
    path: str | Path, record: AttentionRecord, tokens: Sequence[str], **kwargs: Any
) -> Path:
    """Write :func:`build_report` ``(record, tokens, **kwargs)`` to ``path`` (UTF-8).

    Returns:
        The path written.
    """
    path = Path(path)
    text = build_report(record, tokens, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_output_file(path, text.encode("utf-8"))  # never through a planted link
    return path
