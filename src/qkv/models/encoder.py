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
        return self.forward_layers(
            x, 0, None, padding_mask=padding_mask, mask=mask, positions=positions
        )

    def forward_layers(
        self,
        x: Tensor,
        start: int,
        stop: int | None,
        *,
        padding_mask: Tensor | None = None,
        mask: MaskLike = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Run the layers ``start`` to ``stop`` (exclusive; None: to the end, then the final
        norm): :meth:`forward` in pieces, so that the output of a frozen first part can be
        computed once and the rest trained on it (``forward_layers(x, 0, k)`` then
        ``forward_layers(h, k, None)`` equals ``forward(x)``).

        Args:
            x: ``(b, s, d)`` embedded inputs, or the states after layer ``start - 1``.
            start: the first layer to run.
            stop: the layer to stop before, or None for the rest and the final norm.
            padding_mask: as in :meth:`forward`.
            mask: as in :meth:`forward`.
            positions: as in :meth:`forward`.

        Returns:
            ``(b, s, d)``.
        """
        s = x.shape[1]
        bias = None if self.pos_bias is None else self.pos_bias(s, s, device=x.device)
        for layer in self.layers[start:stop]:
            x = layer(x, mask=mask, padding_mask=padding_mask, attn_bias=bias, positions=positions)
        if stop is not None:
            return x  # (b, s, d): the final norm comes with the rest (stop None)
        return x if self.norm is None else self.norm(x)  # (b, s, d)
