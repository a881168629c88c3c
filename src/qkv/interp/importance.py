"""Head masking and head importance (Michel et al. 2019, "Are Sixteen Heads Really Better
than One?").

A head mask ``ξ_h`` multiplies each head's output before the output projection,

    ``MHA(x) = sum_h ξ_h Att_h(x) W_o^h``                                      (eq. 2)

The importance of a head is the expected sensitivity of the loss to its mask at ``ξ = 1``,

    ``I_h = E_x | ∂L(x) / ∂ξ_h |``                                             (eq. 3)

(the gradient method), or the rise of the loss when the head alone is removed (the
ablation method, sec. 3). The mask is applied by forward pre-hooks on each attention
module's ``out_proj`` that exist only inside :func:`mask_heads`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

import torch
from torch import Tensor, nn

from qkv.attn.mha import MultiHeadAttention
from qkv.interp.capture import LayerSelector, select_modules

Method: TypeAlias = Literal["gradient", "ablation"]
B = TypeVar("B")


def _check_mask(name: str, m: MultiHeadAttention, mask: Tensor) -> None:
    if not isinstance(mask, Tensor) or not mask.is_floating_point():
        raise TypeError(f"head mask for {name!r} must be a float tensor, got {mask!r}")
    if mask.ndim not in (1, 2) or mask.shape[-1] != m.n_heads:
        raise ValueError(
            f"head mask for {name!r} must be (h,) or (b, h) with h = n_heads = {m.n_heads}, "
            f"got {tuple(mask.shape)}"
        )


@contextmanager
def mask_heads(model: nn.Module, masks: Mapping[str, Tensor]) -> Iterator[None]:
    """Multiply each head's output by a mask while the block runs.

    The mask of module ``name`` scales head ``h``'s slice of the concatenated heads
    ``(b, s, h * d_h)`` that enter ``out_proj``; 0 removes the head, a tensor that requires
    grad gives ``∂L/∂ξ`` (Michel et al. 2019, eq. 2). Hooks are removed on exit.

    Args:
        model: a model with :class:`~qkv.attn.MultiHeadAttention` modules.
        masks: module name -> ``(h,)`` or ``(b, h)`` float multipliers.

    Raises:
        ValueError: unknown module names or masks of the wrong shape.
    """
    mods = select_modules(model, list(masks))
    handles = []
    try:
        for name, mask in masks.items():
            m = mods[name]
            _check_mask(name, m, mask)

            def hook(
                _mod: nn.Module,
                args: tuple[Any, ...],
                m: MultiHeadAttention = m,
                mask: Tensor = mask,
            ) -> tuple[Any, ...]:
                x = args[0]  # (b, s, h * d_h)
                b, s, _ = x.shape
                xi = mask.to(x.dtype)
                xi = xi.view(1, 1, -1, 1) if xi.ndim == 1 else xi.view(b, 1, -1, 1)
                x = (x.view(b, s, m.n_heads, m.head_dim) * xi).view(b, s, -1)
                return (x, *args[1:])

            handles.append(m.out_proj.register_forward_pre_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class HeadImportance:
    """Head importance scores.

    Attributes:
        scores: module name -> ``(h,)`` importance of each head.
        method: ``"gradient"`` or ``"ablation"``.
        loss: mean loss of the unmasked model over the batches.
        normalized: whether each layer's scores were divided by their L2 norm.
    """

    scores: dict[str, Tensor]
    method: Method
    loss: float
    normalized: bool

    def ranking(self) -> list[tuple[str, int, float]]:
        """Every head as ``(layer, head, score)``, least important first."""
        rows = [(n, h, float(s)) for n, t in self.scores.items() for h, s in enumerate(t)]
        return sorted(rows, key=lambda r: r[2])


def head_importance(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, B], Tensor],
    batches: Iterable[B],
    *,
    method: Method = "gradient",
    layers: Iterable[LayerSelector] | None = None,
    normalize: bool = False,
) -> HeadImportance:
    """Importance of every attention head (Michel et al. 2019).

    ``"gradient"``: ``I_h = mean_batches |∂L/∂ξ_h|`` at ``ξ = 1`` (eq. 3), one forward and
    backward pass per batch; parameter ``.grad`` s are not touched.
    ``"ablation"``: ``I_h = mean_batches (L(ξ_h = 0) - L)``, one forward pass per head and
    batch, without gradients.

    Put the model in ``eval()`` first for deterministic scores (dropout).

    Args:
        model: the model.
        loss_fn: ``loss_fn(model, batch) -> scalar loss``.
        batches: the data; iterated once (materialized for the ablation method).
        method: ``"gradient"`` or ``"ablation"``.
        layers: which attention modules (as in :func:`~qkv.interp.record_attention`).
        normalize: divide each layer's scores by their L2 norm (the paper's sec. 4.2).

    Returns:
        A :class:`HeadImportance`.

    Raises:
        ValueError: an unknown method, no batches, or a loss that is not a scalar.
    """
    if method not in ("gradient", "ablation"):
        raise ValueError(f"method must be 'gradient' or 'ablation', got {method!r}")
    mods = select_modules(model, layers)
    data = list(batches)
    if not data:
        raise ValueError("batches is empty: head importance needs at least one batch")
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")

    def ones() -> dict[str, Tensor]:
        return {n: torch.ones(m.n_heads, device=dev, requires_grad=True) for n, m in mods.items()}

    def scalar(loss: Tensor) -> Tensor:
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r}")
        return loss.reshape(())

    scores = {n: torch.zeros(m.n_heads, device=dev) for n, m in mods.items()}
    base = 0.0
    if method == "gradient":
        for batch in data:
            masks = ones()
            with mask_heads(model, masks):
                loss = scalar(loss_fn(model, batch))
            grads = torch.autograd.grad(loss, list(masks.values()), allow_unused=True)
            for n, g in zip(masks, grads):
                if g is not None:
                    scores[n] += g.detach().abs()
            base += float(loss.detach())
    else:
        with torch.no_grad():
            base_losses = [float(scalar(loss_fn(model, batch))) for batch in data]
            for n, m in mods.items():
                for h in range(m.n_heads):
                    xi = torch.ones(m.n_heads, device=dev)
                    xi[h] = 0.0
                    with mask_heads(model, {n: xi}):
                        for batch, bl in zip(data, base_losses):
                            scores[n][h] += float(scalar(loss_fn(model, batch))) - bl
        base = sum(base_losses)
    scores = {n: s / len(data) for n, s in scores.items()}
    if normalize:
        scores = {n: s / s.norm().clamp(min=1e-20) for n, s in scores.items()}
    return HeadImportance(scores=scores, method=method, loss=base / len(data), normalized=normalize)
