"""``evaluating(model)``: run a model in evaluation mode without gradients, then put every
module back exactly as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode (no dropout) and no gradients for the block's duration.

    Every submodule's own ``training`` flag is restored afterwards (``model.train(was)``
    would set them all alike, losing e.g. a frozen, always-eval submodule).

    >>> with evaluating(model):            # doctest: +SKIP
    ...     logits = model(ids)

    Args:
        model: the module.

    Yields:
        ``model``, in eval mode.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for m, was in modes:
            m.training = was
