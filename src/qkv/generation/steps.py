"""The two model calls of incremental decoding, in gpt-fast's shape: ``prefill`` a prefix
into the KV cache, then ``decode_one_token`` per step.

For a language model (:class:`~qkv.generation.protocols.CausalLM`) the prefix is the prompt;
for an encoder-decoder (:class:`~qkv.generation.protocols.EncoderDecoder`) it is the decoder's
start (usually one BOS), decoded against ``memory = model.encode(src, src_padding_mask)``.
Both return the model's logits unchanged (its dtype); choosing a token is
:mod:`qkv.generation.sampling`'s job.

>>> import torch, qkv.models as M
>>> lm = M.from_preset("gpt2-tiny", vocab_size=11).eval()
>>> cache = lm.make_cache(1, 8)
>>> logits = prefill(lm, torch.tensor([[3, 4, 5]]), cache=cache)  # (1, 3, 11)
>>> nxt = logits[:, -1].argmax(-1)  # (1,)
>>> decode_one_token(lm, nxt, cache=cache).shape
torch.Size([1, 11])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from qkv.generation.protocols import Generative, is_encoder_decoder


def prefill(
    model: Generative,
    inputs: Tensor,
    *,
    cache: Any,
    padding_mask: Tensor | None = None,
    positions: Tensor | None = None,
    memory: Tensor | None = None,
    src_padding_mask: Tensor | None = None,
) -> Tensor:
    """Run a prefix through the model, filling ``cache`` with its keys and values.

    With ``cache=None`` this is the plain uncached forward of the prefix (what decoding
    without a cache re-runs every step).

    Args:
        model: a causal LM or an encoder-decoder.
        inputs: ``(b, s)`` long: the prompt (LM) or the decoder prefix (encoder-decoder).
        cache: from ``model.make_cache(b, max_len)``, updated in place; or None.
        padding_mask: ``(b, s_total)`` bool, True = real token, over cached + new tokens
            (left-padded prompts); None: all real.
        positions: ``(s,)`` or ``(b, s)`` long positions of the new tokens; None: the
            model's default (cached + ``arange(s)``, or from ``padding_mask``).
        memory: ``(b, s_src, d)`` encoder output (encoder-decoders only, required there).
        src_padding_mask: ``(b, s_src)`` bool, True = real source token (encoder-decoders).

    Returns:
        logits ``(b, s, vocab)`` in the model's dtype.

    Raises:
        ValueError: ``memory`` missing for an encoder-decoder, or given for a causal LM.
    """
    if is_encoder_decoder(model):
        if memory is None:
            raise ValueError("an encoder-decoder needs memory = model.encode(src, mask)")
        return model.decode(  # type: ignore[union-attr]
            inputs,
            memory,
            src_padding_mask=src_padding_mask,
            tgt_padding_mask=padding_mask,
            cache=cache,
            positions=positions,
        )  # (b, s, vocab)
    if memory is not None or src_padding_mask is not None:
        raise ValueError(
            f"memory/src_padding_mask are for encoder-decoders; {type(model).__name__} "
            f"has no encode/decode"
        )
    return model(inputs, padding_mask=padding_mask, positions=positions, cache=cache)  # type: ignore[operator]


def decode_one_token(
    model: Generative,
    token: Tensor,
    *,
    cache: Any,
    positions: Tensor | None = None,
    padding_mask: Tensor | None = None,
    memory: Tensor | None = None,
    src_padding_mask: Tensor | None = None,
) -> Tensor:
    """Feed one new token per row after :func:`prefill`; the cache grows by one.

    Args:
        model: the model :func:`prefill` ran.
        token: ``(b,)`` long, the token each row appends.
        cache: the cache :func:`prefill` filled (required).
        positions: ``(b,)`` long position of each row's token; None: the cache length.
        padding_mask: ``(b, s_total)`` bool over cached tokens + this one; None: all real.
        memory, src_padding_mask: as in :func:`prefill` (encoder-decoders).

    Returns:
        next-token logits ``(b, vocab)`` in the model's dtype.

    Raises:
        ValueError: no cache, or ``token``/``positions`` not ``(b,)``.
    """
    if cache is None:
        raise ValueError("decode_one_token needs the cache prefill filled; got cache=None")
    if token.ndim != 1:
        raise ValueError(f"token must be (b,), got shape {tuple(token.shape)}")
    if positions is not None and positions.shape != token.shape:
        raise ValueError(
            f"positions must be (b,) like token {tuple(token.shape)}, got {tuple(positions.shape)}"
        )
    logits = prefill(
        model,
        token[:, None],  # (b, 1)
        cache=cache,
        padding_mask=padding_mask,
        positions=None if positions is None else positions[:, None],  # (b, 1)
        memory=memory,
        src_padding_mask=src_padding_mask,
    )  # (b, 1, vocab)
    return logits[:, -1]  # (b, vocab)
