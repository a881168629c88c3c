"""``generate``: one entry point for greedy, beam and sampled decoding of qkv models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from qkv.generation._stepper import Stepper
from qkv.generation.beam import beam_search
from qkv.generation.greedy import decode_loop
from qkv.generation.sampling import filter_logits, greedy_choice, sample
from qkv.layers.head import OutputHead


@dataclass
class Generated:
    """Decoded continuations.

    Attributes:
        tokens: new tokens per input row, EOS excluded.
        scores: per row, the summed log probability (greedy/sample) or the length-penalized
            beam score.
        logits: per decoding step, ``(b, vocab)`` float32 logits (greedy/sample with
            ``return_logits=True``).
    """

    tokens: list[list[int]]
    scores: list[float]
    logits: list[Tensor] = field(default_factory=list)


@torch.inference_mode()
def generate(
    model: nn.Module,
    inputs: Tensor,
    *,
    padding_mask: Tensor | None = None,
    max_new_tokens: int = 64,
    strategy: Literal["greedy", "beam", "sample"] = "greedy",
    beam_size: int = 4,
    length_penalty: float = 0.6,
    early_stopping: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    bos_id: int = 1,
    eos_id: int | None = 2,
    pad_id: int = 0,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
) -> Generated:
    """Continue a batch of prompts (``DecoderLM``) or translate a batch of sources
    (``Seq2SeqTransformer``).

    Args:
        model: a qkv ``DecoderLM`` or ``Seq2SeqTransformer`` (put in eval mode here).
        inputs: ``(b, s)`` prompt or source ids, right-padded.
        padding_mask: ``(b, s)`` bool, True = real token; default all real.
        max_new_tokens: the most tokens generated per row.
        strategy: ``"greedy"``, ``"beam"`` or ``"sample"``.
        beam_size, length_penalty, early_stopping: beam search settings (GNMT alpha).
        temperature, top_k, top_p: sampling filters.
        bos_id: first decoder token of seq2seq models.
        eos_id: stop token (None: always run ``max_new_tokens``).
        pad_id: filler after a row has finished.
        use_cache: use KV caches (identical tokens, logits equal to 1e-5, much faster).
        generator: RNG for sampling.
        return_logits: keep each step's logits (greedy/sample). Decoding runs under
            ``torch.inference_mode``, so they are inference tensors (``.clone()`` them
            outside it to use them with autograd).

    Returns:
        :class:`Generated`.

    Raises:
        ValueError: bad shapes, an unknown strategy, or bad sampling settings.
    """
    if strategy not in ("greedy", "beam", "sample"):
        raise ValueError(f"strategy must be 'greedy', 'beam' or 'sample', got {strategy!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    was_training = model.training
    model.eval()
    heads = _decoding_heads(model, max_new_tokens)
    for head in heads:
        head.prepare_decoding()
    try:
        stepper = Stepper(
            model, inputs, padding_mask, max_new_tokens, bos_id=bos_id, use_cache=use_cache
        )
        if strategy == "beam":
            if eos_id is None:
                raise ValueError("beam search needs an eos_id")
            toks, scores = beam_search(
                stepper,
                beam_size=beam_size,
                max_new_tokens=max_new_tokens,
                eos_id=eos_id,
                alpha=length_penalty,
                early_stopping=early_stopping,
            )
            return Generated(toks, scores)
        if strategy == "sample":
            filter_logits(torch.zeros(1, 2), temperature=temperature, top_k=top_k, top_p=top_p)

            def choose(logits: Tensor) -> Tensor:
                return sample(logits, generator, temperature=temperature, top_k=top_k, top_p=top_p)
        else:
            choose = greedy_choice
        toks, scores, logits = decode_loop(
            stepper,
            choose,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            pad_id=pad_id,
            keep_logits=return_logits,
        )
        return Generated(toks, scores, logits)
    finally:
        for head in heads:
            head.release_decoding()
        model.train(was_training)


def _decoding_heads(model: nn.Module, max_new_tokens: int) -> list[OutputHead]:
    """The output heads worth a decoding copy of their weight: on the CPU (whose BLAS is
    slow on a few rows times a transposed matrix; see :class:`OutputHead`), and when enough
    steps repay the copy."""
    if max_new_tokens < 8:
        return []
    return [m for m in model.modules() if isinstance(m, OutputHead) and m.weight.is_cpu]
