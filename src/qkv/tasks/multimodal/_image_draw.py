"""Drawing images with a text-to-image model, and the classifier that judges them:
:func:`sample_image_tokens` (image codes after a caption, with or without a KV cache) and
:func:`load_classifier` (a ``fashion-mnist`` or ``digits`` checkpoint)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from qkv import models
from qkv.generation import decode_one_token, prefill, sample
from qkv.tasks._common import read_task_file
from qkv.tasks.base import TaskError
from qkv.training import checkpoint as ckpt


@torch.inference_mode()
def sample_image_tokens(
    model: nn.Module,
    prompt: Tensor,
    n_tokens: int,
    codes: tuple[int, int],
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Tensor:
    """Draw ``n_tokens`` image tokens after each prompt, one at a time.

    With ``use_cache`` the prompt is prefilled into a preallocated KV cache and each new token
    is one :func:`~qkv.generation.decode_one_token` call; without, the whole sequence is
    re-run every step (the readable reference, tested equal).

    Args:
        model: a causal LM (``DecoderLM``), in eval mode.
        prompt: ``(b, s)`` caption ids ending with the image marker (no padding).
        n_tokens: image tokens to draw.
        codes: ``[lo, hi)``, the ids of image codes: only those may be drawn.
        temperature: softmax temperature.
        top_k: keep the ``k`` most likely codes (None: all).
        generator: the random source.
        use_cache: decode with the KV cache.

    Returns:
        ``(b, n_tokens)`` ids in ``[lo, hi)``.
    """
    b, s = prompt.shape
    lo, hi = codes
    cache = model.make_cache(b, s + n_tokens) if use_cache else None  # type: ignore[operator]
    logits = prefill(model, prompt, cache=cache)[:, -1]  # (b, vocab)
    seq, out = prompt, []
    for t in range(n_tokens):
        restricted = torch.full_like(logits, float("-inf"), dtype=torch.float32)
        restricted[:, lo:hi] = logits[:, lo:hi].float()
        tok = sample(restricted, generator, temperature=temperature, top_k=top_k)  # (b,)
        out.append(tok)
        if t == n_tokens - 1:
            break
        if use_cache:
            logits = decode_one_token(model, tok, cache=cache)  # (b, vocab)
        else:
            seq = torch.cat([seq, tok[:, None]], dim=1)  # (b, s + t + 1)
            logits = prefill(model, seq, cache=None)[:, -1]  # (b, vocab)
    return torch.stack(out, dim=1)  # (b, n_tokens)


def load_classifier(directory: str | Path, task: str) -> nn.Module:
    """An image classifier trained with qkv's ``task`` (``fashion-mnist`` or ``digits``).

    Returns:
        The model, in eval mode.

    Raises:
        TaskError: not a checkpoint of that task (named), or damaged files.
    """
    try:
        d = ckpt.check_checkpoint(directory)
        info = read_task_file(d)
        if info["name"] != task:
            raise TaskError(
                f"classifier {directory} was trained on task {info['name']!r}; judging these "
                f"items needs a {task!r} classifier"
            )
        model = models.build(ckpt.read_model_config(d))
        ckpt.load_weights(model, d)
    except ckpt.CheckpointError as e:
        raise TaskError(f"classifier: {e}") from None
    return model.eval()


__all__ = ["load_classifier", "sample_image_tokens"]
