"""DETR, the detection Transformer (Carion et al. 2020, "End-to-End Object Detection with
Transformers").

A backbone turns the image into a feature map, a ``1 x 1`` convolution projects it to
``d_model``, and a post-norm Transformer encoder-decoder reads it: DETR's 2-D sine positions
(:func:`qkv.pos.sine_2d`) are added to the queries and keys (never the values) of every
attention layer, and the decoder's ``N`` inputs start at zero with a learned position each
(the *object queries*). Every decoder output goes through a linear class head (``n_classes``
+ "no object") and a 3-layer MLP box head (``cxcywh`` in ``[0, 1]``, after a sigmoid). The
Hungarian matcher and the set loss are in :mod:`qkv.training.matcher` and
:mod:`qkv.training.set_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.attn.mha import MultiHeadAttention
from qkv.layers.dropout import dropout
from qkv.layers.feedforward import FeedForward
from qkv.models.base import TransformerModel
from qkv.models.detr.config import DETRConfig
from qkv.models.init import init_weights
from qkv.models.parts import norm_for
from qkv.models.stack import LayerStack
from qkv.pos.sine2d import sine_2d


@dataclass
class DETROutput:
    """What :class:`DETR` predicts for a batch of images.

    Attributes:
        logits: ``(b, N, n_classes + 1)`` class logits; the last class is "no object".
        boxes: ``(b, N, 4)`` boxes ``(cx, cy, w, h)`` in ``[0, 1]`` of the image.
        aux: ``(logits, boxes)`` of every decoder layer but the last, bottom first (empty
            without ``aux_loss``).
        grid: the feature map's ``(rows, cols)`` (the encoder tokens, row-major).
    """

    logits: Tensor
    boxes: Tensor
    aux: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    grid: tuple[int, int] = (0, 0)


class CNNBackbone(nn.Module):
    """A small convolutional backbone: stride-2 ``3 x 3`` convolutions, each followed by a
    ReLU (and, with ``norm``, by batch normalization before it, as in a ResNet), halving the
    image per stage (qkv's stand-in for DETR's ResNet-50).

    Args:
        in_channels: image channels.
        channels: output channels of each stage.
        norm: batch-normalize each convolution's output (the convolutions then have no bias).
    """

    def __init__(self, in_channels: int, channels: list[int], norm: bool = False) -> None:
        super().__init__()
        ins = [in_channels, *channels[:-1]]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=not norm)
            for c_in, c_out in zip(ins, channels)
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) if norm else nn.Identity() for c in channels)

    def forward(self, images: Tensor) -> Tensor:
        """``(b, c, H, W) -> (b, channels[-1], H / 2^n, W / 2^n)``."""
        x = images
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        return x


class PatchBackbone(nn.Module):
    """One convolution with kernel and stride ``p`` (ViT's patch embedding) as the backbone.

    Args:
        in_channels: image channels.
        channels: output channels.
        patch_size: ``p``.
    """

    def __init__(self, in_channels: int, channels: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, channels, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        """``(b, c, H, W) -> (b, channels, H / p, W / p)``."""
        return self.proj(images)


class BoxHead(nn.Module):
    """DETR's box FFN: ``n`` linear layers with ReLU between, ``d -> ... -> 4`` (sec. 3.2).

    Args:
        d: input and hidden width.
        n_layers: linear layers (3 in DETR).
    """

    def __init__(self, d: int, n_layers: int = 3) -> None:
        super().__init__()
        outs = [d] * (n_layers - 1) + [4]
        self.layers = nn.ModuleList(nn.Linear(d, o) for o in outs)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d) -> (..., 4)`` boxes ``cxcywh`` in ``[0, 1]`` (sigmoid)."""
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x.sigmoid()


class DETREncoderLayer(nn.Module):
    """Post-norm encoder layer with the positions added to queries and keys.

    ``x = norm1(x + drop(attn(q=x+pos, k=x+pos, v=x)))``, ``x = norm2(x + drop(ff(x)))``.
    """

    def __init__(self, cfg: DETRConfig) -> None:
        super().__init__()
        self.self_attn = _attention(cfg)
        self.self_attn_norm = norm_for(cfg)
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation, cfg.ff_dropout, cfg.bias)
        self.ff_norm = norm_for(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """``x`` ``(b, s, d)``, ``pos`` ``(1 | b, s, d)`` -> ``(b, s, d)``."""
        qk = x + pos
        x = self.self_attn_norm(x + dropout(self.dropout, self.self_attn(qk, qk, x)))
        return self.ff_norm(x + dropout(self.dropout, self.ff(x)))


class DETRDecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention among the queries (object positions on
    queries and keys), cross-attention to the image (object positions on the queries, image
    positions on the keys), feed-forward. No causal mask: the queries decode in parallel."""

    def __init__(self, cfg: DETRConfig) -> None:
        super().__init__()
        self.self_attn = _attention(cfg)
        self.self_attn_norm = norm_for(cfg)
        self.cross_attn = _attention(cfg)
        self.cross_attn_norm = norm_for(cfg)
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation, cfg.ff_dropout, cfg.bias)
        self.ff_norm = norm_for(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, tgt: Tensor, memory: Tensor, memory_keys: Tensor, query_pos: Tensor
    ) -> Tensor:
        """Apply the layer.

        Args:
            tgt: ``(b, N, d)`` the queries' states.
            memory: ``(b, s, d)`` the encoder output (the values).
            memory_keys: ``memory + pos`` (the keys).
            query_pos: ``(1 | b, N, d)`` the object queries.

        Returns:
            ``(b, N, d)``.
        """
        qk = tgt + query_pos
        tgt = self.self_attn_norm(tgt + dropout(self.dropout, self.self_attn(qk, qk, tgt)))
        attended = self.cross_attn(tgt + query_pos, memory_keys, memory)
        tgt = self.cross_attn_norm(tgt + dropout(self.dropout, attended))
        return self.ff_norm(tgt + dropout(self.dropout, self.ff(tgt)))


def _attention(cfg: DETRConfig) -> MultiHeadAttention:
    return MultiHeadAttention(
        cfg.d_model,
        cfg.n_heads,
        bias=cfg.bias,
        dropout=cfg.attn_dropout,
        backend=cfg.attn_backend,
    )


class DETR(TransformerModel):
    """DETR for object detection: see the module docstring.

    Modules: ``backbone`` (None for ``backbone="features"``), ``input_proj`` (``1 x 1``
    convolution), ``query_embed`` (``nn.Embedding(N, d)``, the object queries), ``encoder``
    (``layers``), ``decoder`` (``layers``, ``norm``), ``class_head``, ``box_head``.
    Attention sits at ``encoder.layers.N.self_attn``, ``decoder.layers.N.self_attn`` and
    ``decoder.layers.N.cross_attn``.

    Args:
        config: a :class:`~qkv.models.config.DETRConfig`.
    """

    config: DETRConfig

    def __init__(self, config: DETRConfig) -> None:
        if not isinstance(config, DETRConfig):
            raise TypeError(f"DETR needs a DETRConfig, got {type(config).__name__}")
        super().__init__(config)
        cfg = config
        chans = cfg.backbone_channels
        self.backbone: nn.Module | None
        if cfg.backbone == "cnn":
            self.backbone = CNNBackbone(cfg.in_channels, chans, cfg.backbone_norm)
        elif cfg.backbone == "patch":
            self.backbone = PatchBackbone(cfg.in_channels, chans[0], cfg.patch_size)
        else:
            self.backbone = None
        self.input_proj = nn.Conv2d(chans[-1], cfg.d_model, kernel_size=1)
        self.query_embed = nn.Embedding(cfg.n_queries, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = LayerStack([DETREncoderLayer(cfg) for _ in range(cfg.n_encoder_layers)])
        self.decoder = LayerStack(
            [DETRDecoderLayer(cfg) for _ in range(cfg.n_decoder_layers)], norm=norm_for(cfg)
        )
        self.class_head = nn.Linear(cfg.d_model, cfg.n_classes + 1)
        self.box_head = BoxHead(cfg.d_model)
        init_weights(self, cfg.init, std=cfg.init_std, n_layers=cfg.n_layers)
        with torch.no_grad():
            nn.init.normal_(self.query_embed.weight)  # N(0, 1), as nn.Embedding in DETR

    def features(self, inputs: Tensor) -> Tensor:
        """The backbone's feature map ``(b, c, h, w)`` (the input itself for
        ``backbone="features"``).

        Raises:
            ValueError: inputs of the wrong shape.
        """
        cfg = self.config
        if self.backbone is None:
            if inputs.ndim != 4 or inputs.shape[1] != cfg.backbone_channels[-1]:
                raise ValueError(
                    f"this DETR reads feature maps (b, {cfg.backbone_channels[-1]}, h, w), got "
                    f"{tuple(inputs.shape)}"
                )
            return inputs
        c = cfg.in_channels
        if inputs.ndim != 4 or inputs.shape[1] != c or inputs.shape[-1] % cfg.stride:
            raise ValueError(
                f"images must be (b, {c}, H, W) with H and W multiples of {cfg.stride}, got "
                f"{tuple(inputs.shape)}"
            )
        return self.backbone(inputs)

    def encode(self, inputs: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """Backbone, projection and encoder.

        Returns:
            ``(memory (b, h w, d), pos (1, h w, d), (h, w))``.
        """
        fmap = self.input_proj(self.features(inputs))  # (b, d, h, w)
        _, d, h, w = fmap.shape
        x = fmap.flatten(2).transpose(1, 2)  # (b, h w, d)
        pos = sine_2d(h, w, d, device=x.device, dtype=x.dtype)[None]  # (1, h w, d)
        x = dropout(self.dropout, x)
        for layer in self.encoder.layers:
            x = layer(x, pos)
        return x, pos, (h, w)

    def decode(self, memory: Tensor, pos: Tensor) -> list[Tensor]:
        """The decoder's normalized output after every layer, bottom first, each
        ``(b, N, d)`` (only the last without ``aux_loss``)."""
        b = memory.shape[0]
        query_pos = self.query_embed.weight[None]  # (1, N, d)
        tgt = torch.zeros(b, *query_pos.shape[1:], dtype=memory.dtype, device=memory.device)
        keys = memory + pos
        norm = self.decoder.norm
        assert norm is not None
        outs = []
        for i, layer in enumerate(self.decoder.layers):
            tgt = layer(tgt, memory, keys, query_pos)
            if self.config.aux_loss or i == len(self.decoder.layers) - 1:
                outs.append(norm(tgt))
        return outs

    def forward(self, inputs: Tensor) -> DETROutput:
        """Detect: images ``(b, c, H, W)`` (or feature maps for ``backbone="features"``) ->
        :class:`DETROutput`."""
        memory, pos, grid = self.encode(inputs)
        outs = self.decode(memory, pos)
        preds = [(self.class_head(h), self.box_head(h)) for h in outs]
        logits, boxes = preds[-1]
        return DETROutput(logits, boxes, preds[:-1], grid)


__all__ = [
    "DETR",
    "BoxHead",
    "CNNBackbone",
    "DETRDecoderLayer",
    "DETREncoderLayer",
    "DETROutput",
    "PatchBackbone",
]
