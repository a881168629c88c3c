"""The memory a training step's activations take, checked before the first step: a batch
of 60,000 sequences reached the allocator (and the OOM killer) instead of a clear refusal.

The estimate is Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", section 4.1): a Transformer layer keeps ``s * b * d * (34 + 5 * h * s /
d)`` bytes of activations for the backward pass with 16-bit activations (twice that in
float32); with activation checkpointing a layer keeps only its input (``2 * s * b * d``
bytes at 16 bits) and one layer at a time is recomputed whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from qkv.models.memory import check_memory
from qkv.training.config import TrainConfig

#: Bytes per token, per layer and per unit of width that a layer keeps at 16 bits
#: (Korthikanti et al. 2022, eq. 1: 34 s b d + 5 a s^2 b).
BYTES_PER_WIDTH = 34
#: Bytes per attention score a layer keeps at 16 bits (the same equation's 5 a s^2 b).
BYTES_PER_SCORE = 5
#: Examples collated to measure a batch's padded length.
SAMPLE = 64


def layer_count(config: Any) -> int:
    """The Transformer layers of a model config (encoder and decoder together)."""
    names = ("n_layers", "n_encoder_layers", "n_decoder_layers")
    return sum(int(getattr(config, n, 0) or 0) for n in names)


def sequence_length(task: Any, examples: Sequence[Any]) -> int | None:
    """The longest padded token sequence of a batch of the first :data:`SAMPLE` examples
    (None: the task's batches hold no token ids, e.g. images)."""
    if not examples:
        return None
    batch = task.collate(list(examples[:SAMPLE]))
    lengths = [
        t.shape[1]
        for t in (batch.values() if isinstance(batch, dict) else ())
        if isinstance(t, torch.Tensor) and t.dim() == 2 and not t.is_floating_point()
    ]
    return max(lengths, default=None)


def activation_bytes(
    batch: int, length: int, width: int, heads: int, layers: int, *, bits16: bool, recompute: bool
) -> int:
    """Bytes of activations a training step keeps (the module docstring's estimate).

    Args:
        batch: sequences in a micro-batch on one process.
        length: tokens per sequence (padded).
        width: ``d_model``.
        heads: attention heads.
        layers: Transformer layers.
        bits16: activations in 16 bits (bf16 autocast) rather than float32.
        recompute: activation checkpointing.
    """
    per_layer = length * batch * (BYTES_PER_WIDTH * width + BYTES_PER_SCORE * heads * length)
    total = (
        per_layer + (layers - 1) * 2 * length * batch * width if recompute else per_layer * layers
    )
    return total if bits16 else 2 * total


def check_activations(
    task: Any, model_config: Any, config: TrainConfig, device: torch.device, world: int = 1
) -> None:
    """Refuse, before training, a batch whose activations do not fit in the device's free
    memory (:func:`qkv.models.memory.check_memory`).

    Nothing is checked for a model config without ``d_model`` and ``n_heads``, a task whose
    batches hold no token ids, or a device whose memory cannot be measured.

    Raises:
        qkv.models.MemoryLimitError: the estimate, in GiB, with how it was made and what to
            lower.
    """
    width, heads = getattr(model_config, "d_model", None), getattr(model_config, "n_heads", None)
    layers = layer_count(model_config)
    if not isinstance(width, int) or not isinstance(heads, int) or layers < 1:
        return
    examples = task.examples("train")
    length = sequence_length(task, examples)
    if length is None:
        return
    accum = config.grad_accum * world
    if config.batch_tokens:
        batch = max(1, config.batch_tokens // accum // length)
    else:
        batch = max(1, config.batch_size // accum)
    bits16 = device.type == "cuda" and config.amp != "off"
    need = activation_bytes(
        batch,
        length,
        width,
        heads,
        layers,
        bits16=bits16,
        recompute=config.activation_checkpointing,
    )
    check_memory(
        need,
        f"activations of a step: micro-batch {batch:,} x length {length:,} x d_model {width} "
        f"x {layers} layers x ({BYTES_PER_WIDTH} + {BYTES_PER_SCORE} x {heads} heads x length "
        f"/ d_model) bytes{'' if bits16 else ' x 2 (float32)'}",
        device=device,
        hint="lower --batch-size (or raise --grad-accum), --max-len or the model, or pass "
        "--activation-checkpointing",
    )


__all__ = ["activation_bytes", "check_activations", "layer_count", "sequence_length"]
