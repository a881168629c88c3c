"""See inside attention: capture weights from any backend, head statistics, rollout, head
importance and pruning, heatmaps and a self-contained interactive HTML report.

>>> from qkv.interp import record_attention, head_stats, write_report
>>> with record_attention(model) as rec:
...     logits = model(ids)            # the model keeps its fast backend
>>> stats = head_stats(rec)
>>> write_report("report.html", rec, tokens)

Everything here returns records; nothing is stored on the model's modules.
"""

from qkv.interp.capture import (
    KINDS,
    AttentionEntry,
    AttentionRecord,
    Kind,
    attention_modules,
    record_attention,
)
from qkv.interp.image_panel import ImagePanel
from qkv.interp.importance import HeadImportance, head_importance, mask_heads
from qkv.interp.plots import plot_alignment, plot_grid, plot_head, save_figure
from qkv.interp.prune import prune_heads, prune_module
from qkv.interp.report import build_report, write_report
from qkv.interp.rollout import rollout
from qkv.interp.stats import LABELS, HeadStats, head_stats, label_head, label_heads

__all__ = [
    "KINDS",
    "LABELS",
    "AttentionEntry",
    "AttentionRecord",
    "HeadImportance",
    "HeadStats",
    "ImagePanel",
    "Kind",
    "attention_modules",
    "build_report",
    "head_importance",
    "head_stats",
    "label_head",
    "label_heads",
    "mask_heads",
    "plot_alignment",
    "plot_grid",
    "plot_head",
    "prune_heads",
    "prune_module",
    "record_attention",
    "rollout",
    "save_figure",
    "write_report",
]
