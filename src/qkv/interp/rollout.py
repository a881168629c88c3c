"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Each layer's heads are fused into one matrix ``A_l`` (mean by default), the residual
connection is modelled by mixing in the identity and renormalizing rows,

    ``Â_l = norm_rows(0.5 * A_l + 0.5 * I)``                          (sec. 3, eq. for A)

and the layers are multiplied from the bottom up,

    ``R_1 = Â_1,   R_l = Â_l R_{l-1}``,

so ``R_L[i, j]`` is how much of output position ``i``'s information is attributed to
input token ``j`` along every attention path.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import torch
from torch import Tensor

from qkv.interp.capture import KINDS, AttentionRecord, Kind

HeadFusion: TypeAlias = Literal["mean", "max", "min"]


def rollout(
    source: AttentionRecord | Tensor,
    *,
    kind: Kind = "encoder_self",
    residual: bool = True,
    residual_weight: float = 0.5,
    head_fusion: HeadFusion = "mean",
    start_layer: int = 0,
) -> Tensor:
    """Attention rollout over the self-attention layers of one stack.

    Args:
        source: an :class:`~qkv.interp.AttentionRecord` with every head and row of the
            stack's layers recorded, or weights ``(layers, b, h, s, s)`` (or
            ``(layers, h, s, s)``), bottom layer first.
        kind: which stack of a record: ``"encoder_self"`` or ``"decoder_self"``
            (cross-attention does not chain: its keys are another sequence).
        residual: add the identity for the residual connection (the paper's rollout).
        residual_weight: weight of the identity, ``Â = (1 - r) A + r I`` (paper: 0.5).
        head_fusion: how heads are fused into one matrix per layer.
        start_layer: first layer multiplied in (earlier layers are skipped).

    Returns:
        ``(b, s, s)`` rollout; each row sums to 1 when ``residual`` (or when every row of
        every layer attends to something).

    Raises:
        ValueError: cross-attention, non-square or partially recorded weights, an unknown
            fusion, a residual weight outside ``[0, 1]`` or a start layer out of range.
    """
    if kind == "cross" or kind not in KINDS:
        raise ValueError(f"kind must be 'encoder_self' or 'decoder_self' for rollout, got {kind!r}")
    if head_fusion not in ("mean", "max", "min"):
        raise ValueError(f"head_fusion must be one of ('mean', 'max', 'min'), got {head_fusion!r}")
    if not 0.0 <= residual_weight <= 1.0:
        raise ValueError(f"residual_weight must be in [0, 1], got {residual_weight!r}")
    if isinstance(source, AttentionRecord):
        entries = source.by_kind(kind)
        for e in entries:
            if e.rows != tuple(range(e.s_q)) or e.s_q != e.s_k:
                raise ValueError(
                    f"rollout needs every query row of square self-attention; {e.name!r} has "
                    f"rows {len(e.rows)} of s_q={e.s_q} and s_k={e.s_k}"
                )
        w = source.stack(kind)  # (layers, b, h, s, s)
    elif isinstance(source, Tensor):
        w = source if source.ndim == 5 else source[:, None] if source.ndim == 4 else None
        if w is None:
            raise ValueError(
                f"weights must be (layers, b, h, s, s) or (layers, h, s, s), got {tuple(source.shape)}"
            )
    else:
        raise TypeError(f"source must be an AttentionRecord or tensor, got {type(source).__name__}")
    n_layers, _, _, s_q, s_k = w.shape
    if s_q != s_k:
        raise ValueError(f"rollout needs square weights (s_q == s_k), got s_q={s_q}, s_k={s_k}")
    if not 0 <= start_layer < n_layers:
        raise ValueError(f"start_layer ({start_layer}) out of range [0, {n_layers})")
    w = w.detach().float()
    if head_fusion == "mean":
        a = w.mean(dim=2)  # (layers, b, s, s)
    elif head_fusion == "max":
        a = w.amax(dim=2)
    else:
        a = w.amin(dim=2)
    if residual:
        eye = torch.eye(s_q, dtype=a.dtype, device=a.device)
        a = (1.0 - residual_weight) * a + residual_weight * eye
        z = a.sum(-1, keepdim=True)
        a = a / torch.where(z > 0, z, torch.ones_like(z))
    r = a[start_layer]  # (b, s, s)
    for layer in range(start_layer + 1, n_layers):
        r = a[layer] @ r  # (b, s, s)
    return r
