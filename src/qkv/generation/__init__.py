"""Autoregressive decoding: greedy, beam search (GNMT length penalty) and sampling, with
KV caches, for ``DecoderLM`` and ``Seq2SeqTransformer``."""

from qkv.generation.beam import beam_search, length_penalty
from qkv.generation.generate import Generated, generate
from qkv.generation.sampling import filter_logits, greedy_choice, sample

__all__ = [
    "Generated",
    "beam_search",
    "filter_logits",
    "generate",
    "greedy_choice",
    "length_penalty",
    "sample",
]
