"""The Swin Transformer (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer
using Shifted Windows").

Patch partition and a linear embedding (sec. 3.1), then stages of Swin blocks: pre-norm
window attention with a learned relative position bias (:class:`qkv.pos.WindowRelativeBias`),
every other block on windows shifted by ``M // 2`` (the cyclic shift, with the mask of the
wrapped regions: :class:`qkv.masks.ShiftedWindow`), each block followed by a feed-forward
network; patch merging between stages halves the grid and doubles the width. Attention runs
on the ordinary :class:`~qkv.attn.MultiHeadAttention` (any backend): the grid is cut into
windows (:func:`qkv.masks.window_partition`) that form the batch, and the wrap mask and the
relative bias form one additive bias per window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.attn.mha import MultiHeadAttention
from qkv.layers.drop_path import DropPath
from qkv.layers.dropout import dropout
from qkv.layers.feedforward import FeedForward
from qkv.layers.norms import make_norm
from qkv.masks.window import ShiftedWindow, window_partition, window_reverse
from qkv.models.base import TransformerModel
from qkv.models.init import init_weights
from qkv.models.swin.config import SwinConfig
from qkv.models.vit import PatchEmbedding
from qkv.pos import Learned
from qkv.pos.window_bias import WindowRelativeBias

#: LayerNorm epsilon of the patch embedding and patch merging norms (the reference code
#: and ``transformers`` use ``nn.LayerNorm``'s default there, whatever ``norm_eps`` says).
FIXED_NORM_EPS = 1e-5


def stage_windows(grid: int, window: int, block: int) -> tuple[int, int]:
    """``(window, shift)`` of block ``block`` (0-based within its stage) on a ``grid`` side:
    shifted by ``window // 2`` in odd blocks, except that a grid no larger than the window
    is one window without shift (reference code, ``SwinTransformerBlock.__init__``)."""
    if grid <= window:
        return grid, 0
    return window, (window // 2 if block % 2 else 0)


class SwinBlock(nn.Module):
    """One Swin block (fig. 3b): ``x + W-MSA(LN(x))`` then ``x + MLP(LN(x))``, the attention
    in (shifted) windows.

    Args:
        self_attn: the attention module (``d`` wide).
        ff: the feed-forward network.
        self_attn_norm: norm before attention.
        ff_norm: norm before the feed-forward network.
        pos_bias: the window's relative position bias.
        window: window side ``M`` of this block.
        shift: cyclic shift (0 or ``M // 2``).
        dropout: dropout on each branch's output.
        drop_path: stochastic depth of both branches.
    """

    def __init__(
        self,
        self_attn: MultiHeadAttention,
        ff: nn.Module,
        self_attn_norm: nn.Module,
        ff_norm: nn.Module,
        pos_bias: WindowRelativeBias,
        *,
        window: int,
        shift: int = 0,
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= shift < window:
            raise ValueError(f"shift ({shift}) must be in [0, window={window})")
        self.self_attn, self.self_attn_norm = self_attn, self_attn_norm
        self.ff, self.ff_norm = ff, ff_norm
        self.pos_bias = pos_bias
        self.window, self.shift = window, shift
        self.dropout = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def padded(self, grid: tuple[int, int]) -> tuple[int, int]:
        """The grid padded (bottom, right) to a multiple of the window."""
        m = self.window
        return -(-grid[0] // m) * m, -(-grid[1] // m) * m

    def mask(self, grid: tuple[int, int]) -> ShiftedWindow:
        """This block's attention pattern over its padded grid, as a lazy qkv mask."""
        return ShiftedWindow(self.padded(grid), self.window, self.shift)

    def window_bias(self, grid: tuple[int, int], device: torch.device) -> Tensor:
        """Relative bias plus, for shifted windows, ``-inf`` where the wrap mask forbids:
        ``(1 | n_windows, h, M^2, M^2)``."""
        bias = self.pos_bias()  # (1, h, N, N)
        wrap = self.mask(grid).windows(device)  # (nW, N, N) or None
        if wrap is None:
            return bias
        neg = torch.tensor(float("-inf"), dtype=bias.dtype, device=device)
        return torch.where(wrap[:, None], bias, neg)  # (nW, h, N, N)

    def attend(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """Window attention of normalized tokens ``(b, H W, d) -> (b, H W, d)``."""
        b, _, d = x.shape
        h, w = grid
        hp, wp = self.padded(grid)
        m, s = self.window, self.shift
        x = x.view(b, h, w, d)
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))  # (b, Hp, Wp, d), zeros as in the paper
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(x, m)  # (b * nW, N, d)
        bias = self.window_bias(grid, x.device)  # (1 | nW, h, N, N)
        if bias.shape[0] > 1:
            n_w = bias.shape[0]
            bias = bias[None].expand(b, *bias.shape).reshape(b * n_w, *bias.shape[1:])
        out = self.self_attn(windows, attn_bias=bias)  # (b * nW, N, d)
        x = window_reverse(out, m, hp, wp)  # (b, Hp, Wp, d)
        if s:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        return x[:, :h, :w].reshape(b, h * w, d)  # (b, H W, d)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """Apply the block to ``x`` ``(b, H W, d)`` on a ``grid = (H, W)``."""
        if x.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"x has {x.shape[1]} tokens, the grid {grid} has {grid[0] * grid[1]}")
        x = x + self.drop_path(dropout(self.dropout, self.attend(self.self_attn_norm(x), grid)))
        return x + self.drop_path(dropout(self.dropout, self.ff(self.ff_norm(x))))


class PatchMerging(nn.Module):
    """Concatenate each 2x2 group of neighbouring patches and project ``4 d -> 2 d``
    (sec. 3.1): the grid halves (an odd side is padded), the width doubles.

    Modules: ``norm`` (over ``4 d``) and ``reduction`` (``Linear(4d, 2d, bias=False)``).

    Args:
        d: input width.
        norm: a norm over ``4 d``.
    """

    def __init__(self, d: int, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.reduction = nn.Linear(4 * d, 2 * d, bias=False)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """``(b, H W, d) -> (b, ceil(H/2) ceil(W/2), 2 d)``."""
        b, _, d = x.shape
        h, w = grid
        x = x.view(b, h, w, d)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # the reference's order: (0, 0), (1, 0), (0, 1), (1, 1) as (row, column) offsets
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        x = torch.cat(parts, dim=-1)  # (b, H/2, W/2, 4 d)
        x = x.view(b, -1, 4 * d)  # (b, H/2 W/2, 4 d)
        return self.reduction(self.norm(x))  # (b, H/2 W/2, 2 d)


class Swin(TransformerModel):
    """Swin Transformer for image classification: ``head(mean(norm(stages(patches))))``.

    Modules: ``patch_embed`` (``proj``), ``embed_norm``, ``pos_emb`` (absolute positions when
    ``pos="learned"``, else None), ``layers`` (every :class:`SwinBlock`, stage after stage;
    attention at ``layers.N.self_attn``), ``merges`` (a :class:`PatchMerging` after every
    stage but the last), ``norm``, ``head`` (None when ``n_classes=0``).

    Args:
        config: a :class:`~qkv.models.config.SwinConfig`.
    """

    config: SwinConfig

    def __init__(self, config: SwinConfig) -> None:
        if not isinstance(config, SwinConfig):
            raise TypeError(f"Swin needs a SwinConfig, got {type(config).__name__}")
        super().__init__(config)
        cfg = config
        self.patch_embed = PatchEmbedding(
            cfg.image_size, cfg.patch_size, cfg.in_channels, cfg.d_model
        )
        self.embed_norm = make_norm(cfg.norm, cfg.d_model, FIXED_NORM_EPS)
        self.pos_emb = Learned(cfg.n_patches, cfg.d_model) if cfg.pos == "learned" else None
        self.dropout = nn.Dropout(cfg.dropout)
        # stochastic depth rising linearly over the blocks (plain floats: builds on meta too)
        rates = [cfg.drop_path * i / max(cfg.n_layers - 1, 1) for i in range(cfg.n_layers)]
        blocks: list[SwinBlock] = []
        merges: list[PatchMerging] = []
        for i, (depth, width, heads, side) in enumerate(
            zip(cfg.depths, cfg.stage_widths, cfg.heads_per_stage, cfg.stage_grids)
        ):
            for j in range(depth):
                window, shift = stage_windows(side, cfg.window_size, j)
                blocks.append(
                    SwinBlock(
                        MultiHeadAttention(
                            width,
                            heads,
                            bias=cfg.bias,
                            dropout=cfg.attn_dropout,
                            backend=cfg.attn_backend,
                        ),
                        FeedForward(
                            width, cfg.d_ff * 2**i, cfg.activation, cfg.ff_dropout, cfg.bias
                        ),
                        make_norm(cfg.norm, width, cfg.norm_eps),
                        make_norm(cfg.norm, width, cfg.norm_eps),
                        WindowRelativeBias(heads, window),
                        window=window,
                        shift=shift,
                        dropout=cfg.dropout,
                        drop_path=rates[len(blocks)],
                    )
                )
            if i < cfg.n_stages - 1:
                merges.append(PatchMerging(width, make_norm(cfg.norm, 4 * width, FIXED_NORM_EPS)))
        self.layers = nn.ModuleList(blocks)
        self.merges = nn.ModuleList(merges)
        self.norm = make_norm(cfg.norm, cfg.stage_widths[-1], cfg.norm_eps)
        last = cfg.stage_widths[-1]
        self.head = nn.Linear(last, cfg.n_classes) if cfg.n_classes else None
        init_weights(self, cfg.init, std=cfg.init_std, n_layers=cfg.n_layers)
        with torch.no_grad():
            for block in blocks:
                nn.init.trunc_normal_(block.pos_bias.relative_position_bias_table, std=0.02)

    def stage_of_layers(self) -> list[tuple[int, tuple[int, int]]]:
        """``(stage, grid)`` of every block of :attr:`layers`, in order."""
        cfg = self.config
        out = []
        for i, (depth, side) in enumerate(zip(cfg.depths, cfg.stage_grids)):
            out += [(i, (side, side))] * depth
        return out

    def stages(self, images: Tensor) -> list[Tensor]:
        """Each stage's output before patch merging (the last one normalized by ``norm``).

        Args:
            images: ``(b, c, H, W)``.

        Returns:
            ``[(b, tokens_i, d_i), ...]``, one per stage, tokens row-major on the stage grid.
        """
        cfg = self.config
        x = self.embed_norm(self.patch_embed(images))  # (b, n, d)
        if self.pos_emb is not None:
            x = self.pos_emb(x)
        x = dropout(self.dropout, x)
        grid = (cfg.grid, cfg.grid)
        outs: list[Tensor] = []
        start = 0
        for i, depth in enumerate(cfg.depths):
            for block in self.layers[start : start + depth]:
                x = block(x, grid)
            start += depth
            if i < cfg.n_stages - 1:
                outs.append(x)
                x = self.merges[i](x, grid)  # (b, n / 4, 2 d)
                grid = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)
        outs.append(self.norm(x))
        return outs

    def features(self, images: Tensor) -> Tensor:
        """The last stage's normalized tokens ``(b, tokens, d_last)`` (``transformers``'
        ``last_hidden_state``)."""
        return self.stages(images)[-1]

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``(b, n_classes)`` from the mean of the last stage's tokens (without
        a head, ``n_classes=0``: that mean, ``(b, d_last)``)."""
        pooled = self.features(images).mean(dim=1)  # (b, d_last)
        return pooled if self.head is None else self.head(pooled)  # (b, n_classes)


__all__ = ["PatchMerging", "Swin", "SwinBlock", "stage_windows"]
