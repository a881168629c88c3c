"""Per-head statistics of attention weights and a pattern label per head.

The statistics are those used to sort heads into the patterns found in trained models
(Clark et al. 2019, "What Does BERT Look At?"; Kovaleva et al. 2019; Voita et al. 2019):

* entropy of each query's distribution ``H_i = -sum_j a_ij log a_ij`` (nats), and the same
  divided by ``log n_i`` (``n_i`` keys with non-zero weight; 1 = uniform, "broad");
* mean attention distance ``sum_j a_ij |p_i - j|`` (Dosovitskiy et al. 2021, fig. 7);
* share of attention on the first key and on given special keys (``[CLS]``, ``[SEP]``...);
* diagonal ``a_{i, p_i}``, previous-token ``a_{i, p_i - 1}`` and next-token
  ``a_{i, p_i + 1}`` scores, where ``p_i`` is query ``i``'s position among the keys.

Every statistic is averaged over batch rows and query rows (only rows where it is
defined: a previous-token score needs ``p_i >= 1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeAlias

import torch
from torch import Tensor

from qkv.interp.capture import KINDS, AttentionEntry, AttentionRecord, Kind

Label: TypeAlias = Literal[
    "previous_token", "next_token", "diagonal", "first_token", "special_tokens", "broad", "mixed"
]
LABELS: tuple[str, ...] = (
    "previous_token",
    "next_token",
    "diagonal",
    "first_token",
    "special_tokens",
    "broad",
    "mixed",
)
Source: TypeAlias = AttentionRecord | AttentionEntry | Tensor


@dataclass(frozen=True)
class HeadStats:
    """Statistics of one attention head (see the module docstring for definitions).

    Attributes:
        layer: module name (``""`` for a bare tensor).
        kind: ``"encoder_self"``, ``"decoder_self"`` or ``"cross"``.
        layer_index: the layer's index ``N``.
        head: the module's head index.
        entropy: mean entropy of a query's weights, in nats.
        norm_entropy: mean entropy divided by ``log`` of the attended keys (0..1).
        distance: mean attention distance in positions.
        first_token: mean weight on key 0.
        special: mean total weight on the special keys, or None when none were given.
        diagonal: mean weight of a query on its own position.
        previous: mean weight on the previous position.
        next: mean weight on the next position.
        label: the pattern (see :func:`label_heads`).
    """

    layer: str
    kind: Kind
    layer_index: int
    head: int
    entropy: float
    norm_entropy: float
    distance: float
    first_token: float
    special: float | None
    diagonal: float
    previous: float
    next: float
    label: Label = "mixed"

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (for JSON, tables)."""
        return asdict(self)


def _masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean over every dim but the head dim 1 of ``x`` where ``valid``; NaN when none."""
    v = valid.to(x.dtype).expand_as(x)
    n = v.sum(dim=(0, 2))
    return torch.where(n > 0, (x * v).sum(dim=(0, 2)) / n.clamp(min=1), torch.nan)


def _shifted(w: Tensor, qpos: Tensor, shift: int) -> tuple[Tensor, Tensor]:
    """``w[..., r, qpos[r] + shift]`` and where that key exists."""
    s_k = w.shape[-1]
    idx = qpos + shift  # (r,)
    ok = (idx >= 0) & (idx < s_k)
    gathered = w.gather(-1, idx.clamp(0, s_k - 1).view(1, 1, -1, 1).expand(*w.shape[:3], 1))
    return gathered[..., 0], ok.view(1, 1, -1)  # (b, h, r), (1, 1, r)


def _special_mask(special: Sequence[int] | Tensor | None, b: int, s_k: int) -> Tensor | None:
    if special is None:
        return None
    if isinstance(special, Tensor) and special.dtype == torch.bool:
        if special.ndim == 1:
            special = special[None]
        if special.shape[-1] != s_k or special.shape[0] not in (1, b):
            raise ValueError(
                f"special as a bool mask must be (s_k,) or (b, s_k) = ({b}, {s_k}), got "
                f"{tuple(special.shape)}"
            )
        return special[:, None, None, :]  # (b | 1, 1, 1, s_k)
    pos = [int(p) for p in special]
    bad = [p for p in pos if not -s_k <= p < s_k]
    if bad:
        raise ValueError(f"special positions {bad} out of range for s_k={s_k}")
    m = torch.zeros(s_k, dtype=torch.bool)
    m[[p % s_k for p in pos]] = True
    return m.view(1, 1, 1, s_k)


def _weights_stats(
    w: Tensor,
    qpos: Tensor,
    special: Sequence[int] | Tensor | None,
    query_mask: Tensor | None,
) -> dict[str, Tensor]:
    """Per-head statistics ``(h,)`` of weights ``(b, h, r, s_k)`` with query positions."""
    w = w.detach().float()
    b, _, r, s_k = w.shape
    qpos = qpos.to(w.device)
    rows_ok = (w.sum(-1) > 0).to(torch.bool)  # (b, h, r): rows that attend to something
    if query_mask is not None:
        if query_mask.dtype != torch.bool or tuple(query_mask.shape) != (b, r):
            raise ValueError(
                f"query_mask must be a bool (b, rows) = ({b}, {r}) tensor, got "
                f"{query_mask.dtype} {tuple(query_mask.shape)}"
            )
        rows_ok = rows_ok & query_mask.to(w.device)[:, None, :]
    plogp = torch.where(w > 0, w * w.clamp(min=1e-30).log(), torch.zeros_like(w))
    ent = -plogp.sum(-1)  # (b, h, r)
    n_att = (w > 0).sum(-1)  # (b, h, r)
    norm_ent = ent / n_att.clamp(min=2).double().log().float()
    kpos = torch.arange(s_k, device=w.device)
    dist = (w * (qpos[:, None] - kpos[None, :]).abs().to(w.dtype)).sum(-1)  # (b, h, r)
    diag, diag_ok = _shifted(w, qpos, 0)
    prev, prev_ok = _shifted(w, qpos, -1)
    nxt, next_ok = _shifted(w, qpos, 1)
    out = {
        "entropy": _masked_mean(ent, rows_ok),
        "norm_entropy": _masked_mean(norm_ent, rows_ok & (n_att > 1)),
        "distance": _masked_mean(dist, rows_ok),
        "first_token": _masked_mean(w[..., 0], rows_ok),
        "diagonal": _masked_mean(diag, rows_ok & diag_ok),
        "previous": _masked_mean(prev, rows_ok & prev_ok),
        "next": _masked_mean(nxt, rows_ok & next_ok),
    }
    sm = _special_mask(special, b, s_k)
    if sm is not None:
        out["special"] = _masked_mean((w * sm.to(w.device)).sum(-1), rows_ok)
    return out


def label_head(s: HeadStats, *, threshold: float = 0.5, broad: float = 0.9) -> Label:
    """The pattern of one head from its statistics.

    The first rule that holds, in order: the largest of the positional scores (previous,
    next, diagonal; self-attention only) is at least ``threshold``; the first-token share,
    then the special-token share, is at least ``threshold``; the normalized entropy is at
    least ``broad`` ("broad": near-uniform, a bag-of-words head); else ``"mixed"``.

    Args:
        s: the head's statistics.
        threshold: minimum mean weight for a positional or token pattern.
        broad: minimum normalized entropy of a broad head.
    """
    if s.kind != "cross":
        positional = {"previous_token": s.previous, "next_token": s.next, "diagonal": s.diagonal}
        best = max(positional, key=lambda k: -1.0 if math.isnan(positional[k]) else positional[k])
        if not math.isnan(positional[best]) and positional[best] >= threshold:
            return best  # type: ignore[return-value]
    if s.first_token >= threshold:
        return "first_token"
    if s.special is not None and s.special >= threshold:
        return "special_tokens"
    if not math.isnan(s.norm_entropy) and s.norm_entropy >= broad:
        return "broad"
    return "mixed"


def _entries(source: Source, kind: Kind) -> list[AttentionEntry]:
    if isinstance(source, AttentionRecord):
        return list(source.values())
    if isinstance(source, AttentionEntry):
        return [source]
    if isinstance(source, Tensor):
        w = source
        if w.ndim == 3:
            w = w[None]
        if w.ndim != 4:
            raise ValueError(
                f"weights must be (h, s_q, s_k) or (b, h, s_q, s_k), got {tuple(w.shape)}"
            )
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        h, s_q = w.shape[1], w.shape[2]
        return [AttentionEntry("", kind, 0, w, tuple(range(h)), tuple(range(s_q)), s_q)]
    raise TypeError(
        f"source must be an AttentionRecord, AttentionEntry or tensor, got {type(source).__name__}"
    )


def head_stats(
    source: Source,
    *,
    special: Sequence[int] | Tensor | None = None,
    query_mask: Tensor | None = None,
    kind: Kind = "encoder_self",
    threshold: float = 0.5,
    broad: float = 0.9,
) -> list[HeadStats]:
    """Statistics and a pattern label for every recorded head.

    Args:
        source: an :class:`~qkv.interp.AttentionRecord`, one entry, or weights
            ``(b, h, s_q, s_k)`` / ``(h, s_q, s_k)``.
        special: key positions of special tokens, or a bool mask ``(s_k,)`` / ``(b, s_k)``
            (True = special), for the ``special`` share; None leaves it None. Applied to
            every entry (call per entry when key sequences differ, as in encoder-decoders).
        query_mask: ``(b, rows)`` bool, True = a real query row (leave padding out of the
            averages); applied to every entry.
        kind: the kind of a bare tensor (``"cross"`` turns off positional labels).
        threshold: see :func:`label_head`.
        broad: see :func:`label_head`.

    Returns:
        One :class:`HeadStats` per (entry, head), in record order, heads ascending.

    Raises:
        ValueError: ill-shaped weights, special positions or query mask.
    """
    out: list[HeadStats] = []
    for e in _entries(source, kind):
        w = e.weights
        qpos = torch.tensor(e.rows, dtype=torch.long) + e.key_offset  # (r,)
        st = {k: v.tolist() for k, v in _weights_stats(w, qpos, special, query_mask).items()}
        for i, head in enumerate(e.heads):
            s = HeadStats(
                layer=e.name,
                kind=e.kind,
                layer_index=e.layer_index,
                head=head,
                entropy=st["entropy"][i],
                norm_entropy=st["norm_entropy"][i],
                distance=st["distance"][i],
                first_token=st["first_token"][i],
                special=st["special"][i] if "special" in st else None,
                diagonal=st["diagonal"][i],
                previous=st["previous"][i],
                next=st["next"][i],
            )
            label = label_head(s, threshold=threshold, broad=broad)
            out.append(HeadStats(**{**s.to_dict(), "label": label}))
    return out


def label_heads(
    source: Source | Sequence[HeadStats],
    *,
    threshold: float = 0.5,
    broad: float = 0.9,
    **kwargs: Any,
) -> dict[tuple[str, int], Label]:
    """The pattern label of every head, ``{(layer name, head): label}``.

    Args:
        source: what :func:`head_stats` takes, or its result.
        threshold: see :func:`label_head`.
        broad: see :func:`label_head`.
        **kwargs: passed to :func:`head_stats` (``special``, ``query_mask``, ``kind``).
    """
    if isinstance(source, (AttentionRecord, AttentionEntry, Tensor)):
        stats = head_stats(source, threshold=threshold, broad=broad, **kwargs)
        return {(s.layer, s.head): s.label for s in stats}
    return {(s.layer, s.head): label_head(s, threshold=threshold, broad=broad) for s in source}
