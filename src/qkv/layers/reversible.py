"""Reversible residual layers (Gomez et al. 2017, RevNet; Kitaev et al. 2020, Reformer,
sec. 4): activations are recomputed in the backward pass instead of stored, so training
memory does not grow with depth.

A block maps two streams ``(x1, x2)`` to::

    y1 = x1 + f(x2)        (f: attention)
    y2 = x2 + g(y1)        (g: feed-forward)

and its inputs follow from its outputs: ``x2 = y2 - g(y1)``, ``x1 = y1 - f(x2)``. The
forward pass of :func:`reversible_stack` runs every block without recording a graph and
keeps only the last outputs; the backward pass walks the blocks in reverse, rebuilding each
block's inputs and back-propagating through a fresh recomputation of ``g`` then ``f``.
Random draws (dropout, LSH rotations) are replayed from the generator state saved in the
forward pass, so the recomputation is the same function. ``g`` is position-wise and is
recomputed ``chunk`` positions at a time (Reformer's chunked feed-forward), so its hidden
activations never exist for the whole sequence at once.

Gradients reach the parameters through ``.backward()`` (they are accumulated into
``.grad`` during the stack's backward pass); ``torch.autograd.grad`` with respect to the
parameters is not supported, as in ``transformers``' Reformer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from qkv.layers.chunking import chunked


class ReversibleBlock(nn.Module):
    """A reversible block: subclasses define :meth:`f` and :meth:`g` (see the module).

    Attributes:
        chunk: positions per chunk when recomputing ``g`` in the backward pass (0 = all).
    """

    chunk: int = 0

    def f(self, x: Tensor, **kwargs: Any) -> Tensor:
        """The first residual function, of ``x2`` (e.g. attention)."""
        raise NotImplementedError

    def g(self, x: Tensor) -> Tensor:
        """The second residual function, of ``y1``; position-wise (e.g. feed-forward)."""
        raise NotImplementedError

    def forward(self, x1: Tensor, x2: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """``(x1 + f(x2), x2 + g(x1 + f(x2)))``."""
        y1 = x1 + self.f(x2, **kwargs)
        return y1, x2 + self.g(y1)


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


@contextmanager
def _replay(state: tuple[Tensor, Tensor | None], device: torch.device) -> Iterator[None]:
    """Run the block with the generators as they were, then restore the current ones."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


class _ReversibleStack(torch.autograd.Function):
    """The whole stack as one autograd node that saves only its outputs."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x1: Tensor,
        x2: Tensor,
        blocks: Sequence[ReversibleBlock],
        kwargs: dict[str, Any],
        *params: Tensor,
    ) -> tuple[Tensor, Tensor]:
        states = []
        with torch.no_grad():
            for blk in blocks:
                s_f = _rng_state(x1.device)
                y1 = x1 + blk.f(x2, **kwargs)
                s_g = _rng_state(x1.device)
                y2 = x2 + chunked(blk.g, y1, blk.chunk)
                states.append((s_f, s_g))
                x1, x2 = y1, y2
        ctx.blocks, ctx.kwargs, ctx.states, ctx.n_params = blocks, kwargs, states, len(params)
        ctx.save_for_backward(x1, x2)
        return x1, x2

    @staticmethod
    def backward(ctx: Any, dy1: Tensor, dy2: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        y1, y2 = ctx.saved_tensors
        dev = y1.device
        for blk, (s_f, s_g) in zip(reversed(ctx.blocks), reversed(ctx.states)):
            # g: x2 = y2 - g(y1); dL/dy1 gains g's share. Chunk by chunk (position-wise).
            y1 = y1.detach().requires_grad_(True)
            g_out = []
            with _replay(s_g, dev), torch.enable_grad():
                size = blk.chunk if blk.chunk > 0 else y1.shape[-2]
                for part, grad in zip(y1.split(size, dim=-2), dy2.split(size, dim=-2)):
                    out = blk.g(part)
                    torch.autograd.backward(out, grad)
                    g_out.append(out.detach())
            with torch.no_grad():
                x2 = y2 - torch.cat(g_out, dim=-2)
                dx1 = dy1 + y1.grad  # type: ignore[operator]
            # f: x1 = y1 - f(x2); dL/dx2 gains f's share.
            x2 = x2.detach().requires_grad_(True)
            with _replay(s_f, dev), torch.enable_grad():
                f_out = blk.f(x2, **ctx.kwargs)
                torch.autograd.backward(f_out, dx1)
            with torch.no_grad():
                x1 = y1.detach() - f_out.detach()
                dx2 = dy2 + x2.grad  # type: ignore[operator]
            y1, y2, dy1, dy2 = x1, x2.detach(), dx1, dx2
        return (dy1, dy2, None, None) + (None,) * ctx.n_params


def reversible_stack(
    blocks: Sequence[ReversibleBlock], x1: Tensor, x2: Tensor, **kwargs: Any
) -> tuple[Tensor, Tensor]:
    """Run reversible blocks in order; with gradients, through one autograd node that
    stores only the final ``(y1, y2)`` (see the module docstring).

    Args:
        blocks: the blocks.
        x1, x2: ``(b, s, d)`` the two input streams (Reformer starts with ``x1 = x2``).
        **kwargs: passed to every block's ``f`` (masks, positions); tensors among them
            receive no gradient.

    Returns:
        ``(y1, y2)``.
    """
    params = [p for blk in blocks for p in blk.parameters() if p.requires_grad]
    needs_grad = torch.is_grad_enabled() and (x1.requires_grad or x2.requires_grad or bool(params))
    if not needs_grad:
        for blk in blocks:
            y1 = x1 + blk.f(x2, **kwargs)
            x1, x2 = y1, x2 + chunked(blk.g, y1, blk.chunk)
        return x1, x2
    return _ReversibleStack.apply(x1, x2, list(blocks), kwargs, *params)  # type: ignore[no-any-return]


__all__ = ["ReversibleBlock", "reversible_stack"]
