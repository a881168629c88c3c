"""Train above a frozen prefix without recomputing it: its outputs for every training
example, computed once (``TrainConfig.cache_frozen``, ``qkv train --cache-frozen``).

When the embeddings and the first ``k`` layers of a model are frozen (``--freeze
embed,encoder.layers.0,...``), each training step recomputes their forward pass on inputs
it has seen before, for the same result. The cache keeps each example's states (its real
tokens only) as the first epoch computes them (without gradients, as every step does for
frozen layers); from the second epoch on, a step runs only the layers above on the cached
states. The steps are the same steps (the same loss and gradients up to float rounding:
the tests show it); the first epoch costs what it costs without the cache, each later one
the unfrozen part's forward and backward only. A run shorter than an epoch gains nothing.

That is exact only where the prefix gives the same output every time it runs in training
mode: no dropout in it, no augmentation of the batches. :func:`build_prefix_cache` checks
both (it runs the prefix twice on one batch in training mode, and asks the objective
whether it augments) and refuses otherwise, naming why.

A model offers the split with three methods (``EncoderModel`` has them): ``split_points()``
(module names whose outputs chain the forward, in order), ``forward_prefix(ids, *, depth,
padding_mask)`` and ``forward_from(states, *, depth, padding_mask)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from qkv.training.evaluate import to_device
from qkv.training.objective import Batch, Objective


def frozen_depth(model: nn.Module, frozen: Sequence[str]) -> int:
    """How many of the model's ``split_points()``, from the first, are wholly frozen.

    Args:
        model: a model with ``split_points()`` (0 for one without).
        frozen: the names of the frozen parameters
            (:func:`~qkv.training.finetune.freeze_modules`).

    Returns:
        The depth of the frozen prefix: 0 (nothing to cache), 1 (the embeddings), ...
    """
    split_points = getattr(model, "split_points", None)
    if split_points is None:
        return 0
    names = [n for n, _ in model.named_parameters()]
    done = set(frozen)
    depth = 0
    for point in split_points():
        own = [n for n in names if n.startswith(point + ".")]
        if not own or any(n not in done for n in own):
            break
        depth += 1
    return depth


class Suffix(nn.Module):
    """The model after its frozen prefix: ``forward(states, padding_mask=...)`` runs
    ``model.forward_from`` (what a step calls in place of the whole model)."""

    def __init__(self, model: nn.Module, depth: int) -> None:
        super().__init__()
        self.model, self.depth = model, depth

    def forward(self, states: Tensor, *, padding_mask: Tensor | None = None) -> Any:
        """``(b, s, d)`` cached states -> the model's output."""
        return self.model.forward_from(states, depth=self.depth, padding_mask=padding_mask)


class PrefixCache:
    """The frozen prefix's output for each training example (its real tokens' states),
    kept as the first epoch computes it: later epochs read it instead of running the
    prefix again.

    Args:
        depth: the prefix: :func:`frozen_depth`.
        n: the number of training examples (indexed as the trainer indexes them).
        names: the prefix's modules, for the log.
    """

    def __init__(self, depth: int, n: int, names: Sequence[str] = ()) -> None:
        self.depth, self.names = depth, list(names)
        self.states: list[Tensor | None] = [None] * n
        #: examples whose states were computed, and those read from the cache
        self.computed = self.reused = 0

    @property
    def nbytes(self) -> int:
        """Bytes the cached states take."""
        return sum(t.numel() * t.element_size() for t in self.states if t is not None)

    def note(self) -> str:
        """What the run's header says about the cache."""
        return (
            f"frozen prefix ({', '.join(self.names)}) cached as the first epoch computes "
            f"it; later epochs run only the layers above"
        )

    def fill(self, model: nn.Module, indices: Sequence[int], batch: Batch) -> Batch:
        """``batch`` (collated from the training examples at ``indices``, on the model's
        device) with its ``inputs`` replaced by the prefix's ``(b, s, d)`` states: read
        from the cache when every example is in it, else computed (without gradients, in
        the model's mode: as the step without the cache would) and kept. Padded positions
        read zeros from the cache, which no real token attends to and the pooling skips.
        """
        mask = _real(batch)
        parts = [self.states[i] for i in indices]
        if all(p is not None for p in parts):
            self.reused += len(parts)
            flat = torch.cat(parts)  # type: ignore[arg-type]  # (n real, d)
            states = flat.new_zeros(*mask.shape, flat.shape[-1])  # (b, s, d)
            states[mask] = flat
            return {**batch, "inputs": states}
        with torch.no_grad():
            states = model.forward_prefix(  # type: ignore[operator]
                batch["inputs"], depth=self.depth, padding_mask=batch.get("padding_mask")
            )  # (b, s, d)
        # the real tokens only, as one compact tensor and a view per example
        for i, part in zip(indices, states[mask].split(mask.sum(-1).tolist())):
            self.states[i] = part
        self.computed += len(indices)
        return {**batch, "inputs": states}


def build_prefix_cache(
    model: nn.Module,
    frozen: Sequence[str],
    examples: Sequence[Any] | None,
    objective: Objective,
    device: torch.device,
    *,
    world_size: int = 1,
) -> PrefixCache:
    """Check that the frozen prefix may be cached, and cache it.

    Raises:
        ValueError: why it may not (named): a model without ``split_points()`` or with no
            frozen prefix, an iterable of batches (not indexable examples), several
            processes, an objective that augments its batches, or a prefix whose output
            differs between two runs in training mode (dropout in it).
    """
    what = "cache_frozen"
    if not getattr(model, "split_points", None) or not model.split_points():  # type: ignore[operator]
        raise ValueError(
            f"{what}: {type(model).__name__} cannot run in two parts (no split_points()); "
            f"leave cache_frozen off"
        )
    depth = frozen_depth(model, frozen)
    if depth == 0:
        first = model.split_points()[:2]  # type: ignore[operator]
        raise ValueError(
            f"{what}: nothing to cache: freeze a prefix of the model, its first modules "
            f"{', '.join(first)}... in order (e.g. freeze={first[0]})"
        )
    if examples is None:
        raise ValueError(f"{what}: needs a sequence of training examples, not an iterable")
    if world_size > 1:
        raise ValueError(f"{what}: runs in one process only (world size {world_size})")
    if getattr(objective, "augment", None) is not None:
        raise ValueError(
            f"{what}: the objective augments its batches, so the frozen layers' output "
            f"changes from epoch to epoch: leave cache_frozen off"
        )
    probe = to_device(
        objective.collate([examples[i] for i in range(min(8, len(examples)))]), device
    )
    if not _deterministic(model, depth, probe, device):
        raise ValueError(
            f"{what}: the frozen layers ({', '.join(model.split_points()[:depth])}) give "  # type: ignore[operator]
            f"different outputs on two runs in training mode (dropout in them): set the "
            f"model's dropouts to 0 ({_dropout_hint(model)}) or leave cache_frozen off"
        )
    names = model.split_points()[:depth]  # type: ignore[operator]
    return PrefixCache(depth, len(examples), names)


def _deterministic(model: nn.Module, depth: int, batch: Batch, device: torch.device) -> bool:
    """Whether the prefix gives the same output twice in training mode (RNGs left as
    they were)."""
    was = model.training
    model.train()
    try:
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            runs = [
                model.forward_prefix(  # type: ignore[operator]
                    batch["inputs"], depth=depth, padding_mask=batch.get("padding_mask")
                )
                for _ in range(2)
            ]
    finally:
        model.train(was)
    return bool(torch.equal(runs[0], runs[1]))


def _dropout_hint(model: nn.Module) -> str:
    """The ``--model`` settings that turn the model's dropouts off (those its config has
    above 0)."""
    config = getattr(model, "config", None)
    names = [
        n
        for n in ("dropout", "attn_dropout", "ff_dropout")
        if isinstance(getattr(config, n, None), float) and getattr(config, n) > 0
    ]
    return " ".join(f"--model {n}=0" for n in names) or "its dropout settings"


def _real(batch: Batch) -> Tensor:
    """``(b, s)`` bool, True = real token (all of them without a ``padding_mask``)."""
    mask = batch.get("padding_mask")
    if mask is None:
        ids = batch["inputs"]
        return torch.ones(ids.shape[:2], dtype=torch.bool, device=ids.device)
    return mask


__all__ = ["PrefixCache", "Suffix", "build_prefix_cache", "frozen_depth"]
