"""Document masks for packed sequences: several documents share one row of the batch and
attend only within themselves (as in packed pre-training, e.g. Krell et al. 2021;
attention-gym's ``generate_doc_mask_mod``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from qkv.masks._base import Mask, MaskMod
from qkv.masks._tiles import BlockBounds, register_bounds, value_range


def _check_ids(ids: Sequence[int] | Tensor, name: str) -> Tensor:
    t = ids if isinstance(ids, Tensor) else torch.as_tensor(list(ids))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"document({name}) needs integer document ids, got dtype {t.dtype}")
    if t.ndim not in (1, 2):
        raise ValueError(f"document({name}) needs shape (s,) or (b, s), got {tuple(t.shape)}")
    return t.long()


class Document(Mask):
    r"""Query ``i`` may attend to key ``j`` iff both belong to the same document:
    :math:`\mathrm{ids}_q[i] = \mathrm{ids}[j]`.

    Args:
        ids: document id of every key position, ``(s_k,)`` or ``(b, s_k)`` integers (for
            packed sequences usually non-decreasing, e.g. ``[0, 0, 0, 1, 1, 2]``).
        q_ids: document id of every query, same rank as ``ids``; by default the ids of
            the *last* ``s_q`` key positions (queries aligned to the end of the keys, like
            :class:`~qkv.masks.Causal`), which needs ``s_q <= s_k``.

    Raises:
        TypeError: non-integer ids.
        ValueError: ids of the wrong rank, or (when used) of the wrong length.
    """

    def __init__(
        self, ids: Sequence[int] | Tensor, q_ids: Sequence[int] | Tensor | None = None
    ) -> None:
        self.ids = _check_ids(ids, "ids")
        self.q_ids = None if q_ids is None else _check_ids(q_ids, "q_ids")
        if self.q_ids is not None and self.q_ids.ndim != self.ids.ndim:
            raise ValueError(
                f"document(q_ids) of shape {tuple(self.q_ids.shape)} must have the rank of "
                f"ids {tuple(self.ids.shape)}"
            )
        if self.q_ids is not None and self.q_ids.shape[:-1] != self.ids.shape[:-1]:
            raise ValueError(
                f"document(q_ids) of shape {tuple(self.q_ids.shape)} and ids of shape "
                f"{tuple(self.ids.shape)} must have the same batch size"
            )
        self.batch_size = self.ids.shape[0] if self.ids.ndim == 2 else None

    def query_ids(self, s_q: int, s_k: int) -> Tensor:
        """``(s_q,)`` or ``(b, s_q)`` document ids of the queries (validates the lengths)."""
        if self.ids.shape[-1] != s_k:
            raise ValueError(f"document(ids) covers {self.ids.shape[-1]} keys but s_k={s_k}")
        if self.q_ids is not None:
            if self.q_ids.shape[-1] != s_q:
                raise ValueError(
                    f"document(q_ids) covers {self.q_ids.shape[-1]} queries but s_q={s_q}"
                )
            return self.q_ids
        if s_q > s_k:
            raise ValueError(
                f"document(ids) aligns queries to the last keys, which needs s_q <= s_k, "
                f"got s_q={s_q}, s_k={s_k}; pass q_ids for cross-attention"
            )
        return self.ids[..., s_k - s_q :]

    def mod(self, s_q: int, s_k: int) -> MaskMod:
        qid, kid = self.query_ids(s_q, s_k), self.ids
        if kid.ndim == 2:
            return lambda b, h, q, k: qid[b, q] == kid[b, k]
        return lambda b, h, q, k: qid[q] == kid[k]

    def _device(self) -> torch.device:
        return self.ids.device

    def __repr__(self) -> str:
        return f"document(ids of shape {tuple(self.ids.shape)})"


@register_bounds(Document)
def _bounds(mask: Mask, s_q: int, s_k: int, block: int, device: torch.device) -> BlockBounds:
    assert isinstance(mask, Document)
    qid = mask.query_ids(s_q, s_k).to(device)
    kid = mask.ids.to(device)
    if kid.ndim == 1:
        qid, kid = qid[None], kid[None]
    q_min, q_max = value_range(qid, s_q, block)  # (b_m, n_qb)
    k_min, k_max = value_range(kid, s_k, block)  # (b_m, n_kb)
    # sharing an id needs overlapping id ranges (exact for contiguous sorted ids)
    maybe = (q_min[:, :, None] <= k_max[:, None, :]) & (k_min[:, None, :] <= q_max[:, :, None])
    one = (q_min == q_max)[:, :, None] & (k_min == k_max)[:, None, :]
    full = one & (q_min[:, :, None] == k_min[:, None, :])
    return BlockBounds(maybe, full)


def document(ids: Sequence[int] | Tensor, q_ids: Sequence[int] | Tensor | None = None) -> Document:
    """A document (packed-sequence) mask; see :class:`Document`."""
    return Document(ids, q_ids)
