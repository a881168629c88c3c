"""Token embeddings with optional scale, absolute positions, token types and a norm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qkv.layers.dropout import dropout


class Embeddings(nn.Module):
    """``dropout(norm(scale * E_tok[ids] + P[positions] + E_type[types]))``.

    One module covers the original Transformer (``scale = sqrt(d)``, sinusoidal ``P``;
    Vaswani et al. 2017 sec. 3.4-3.5), GPT-2 (learned ``P``) and BERT (learned ``P``, token
    types, LayerNorm). Passing the same ``tok_emb`` to two instances shares the matrix.

    Args:
        tok_emb: the token embedding ``(vocab, d)``.
        pos_emb: a module ``pos_emb(x, positions) -> x + P`` (:class:`qkv.pos.Sinusoidal`,
            :class:`qkv.pos.Learned`), or None when positions enter elsewhere (RoPE, ALiBi,
            relative bias) or not at all.
        type_emb: token-type (segment) embedding ``(n_types, d)``, or None.
        scale: multiplier of the token embeddings.
        norm: norm applied to the sum, or None.
        dropout: dropout on the result.
    """

    def __init__(
        self,
        tok_emb: nn.Embedding,
        *,
        pos_emb: nn.Module | None = None,
        type_emb: nn.Embedding | None = None,
        scale: float = 1.0,
        norm: nn.Module | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.tok_emb = tok_emb
        self.pos_emb = pos_emb
        self.type_emb = type_emb
        self.scale = float(scale)
        self.norm = norm
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        ids: Tensor,
        *,
        positions: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Embed token ids.

        Args:
            ids: ``(b, s)`` long token ids.
            positions: ``(s,)`` or ``(b, s)`` absolute positions; default ``arange(s)``.
            token_type_ids: ``(b, s)`` long; default all zeros (used only with ``type_emb``).

        Returns:
            ``(b, s, d)``.

        Raises:
            ValueError: ``ids`` that are not ``(b, s)``.
        """
        if ids.ndim != 2:
            raise ValueError(f"token ids must be (b, s), got shape {tuple(ids.shape)}")
        x = self.tok_emb(ids)  # (b, s, d)
        if self.scale != 1.0:
            x = x * self.scale
        if self.pos_emb is not None:
            x = self.pos_emb(x, positions)  # (b, s, d)
        if self.type_emb is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(ids)
            x = x + self.type_emb(token_type_ids)  # (b, s, d)
        if self.norm is not None:
            x = self.norm(x)
        return dropout(self.dropout, x)  # (b, s, d)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"
