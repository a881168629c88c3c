"""The encoder stack: ``N`` bidirectional :class:`~qkv.models.blocks.EncoderLayer` s."""

from __future__ import annotations

from torch import Tensor

from qkv.attn.functional import MaskLike
from qkv.models.stack import LayerStack


class Encoder(LayerStack):
    """A stack of encoder layers with an optional final norm and position bias.

    Args:
        layers: the layers, applied in order; held as ``nn.ModuleList`` ``layers``.
        norm: final norm (pre-norm stacks need one: their residual stream is never
            normalized otherwise), or None.
        pos_bias: a module ``pos_bias(s_q, s_k, device=...) -> (1, h, s_q, s_k)`` whose
            output is added to every layer's attention scores (:class:`qkv.pos.ALiBi`,
            :class:`qkv.pos.RelativeBias`; computed once, shared by all layers as in T5).

    Raises:
        ValueError: an empty ``layers``.
    """

    def forward(
        self,
        x: Tensor,
        *,
        padding_mask: Tensor | None = None,
        mask: MaskLike = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Encode.

        Args:
            x: ``(b, s, d)`` embedded inputs.
            padding_mask: ``(b, s)`` bool, True = real token; padded keys are never attended.
            mask: extra attention mask (bool True = may attend, float bias or a
                :mod:`qkv.masks` object) broadcastable to ``(b, h, s, s)``.
            positions: ``(s,)`` or ``(b, s)`` positions for rotary embeddings.

        Returns:
            ``(b, s, d)``; rows at padded positions are computed but meaningless.
        """
        s = x.shape[1]
        bias = None if self.pos_bias is None else self.pos_bias(s, s, device=x.device)
        for layer in self.layers:
            x = layer(x, mask=mask, padding_mask=padding_mask, attn_bias=bias, positions=positions)
        return x if self.norm is None else self.norm(x)  # (b, s, d)
