"""Autoregressive decoding: greedy, beam search (GNMT length penalty) and sampling, with
preallocated KV caches, for any causal LM or encoder-decoder (``DecoderLM``,
``Seq2SeqTransformer``, or anything with their methods: :mod:`qkv.generation.protocols`).

* :func:`generate` with a :class:`GenerationConfig` (or its fields as keywords) does the
  whole job and returns :class:`Generated` (lists and padded tensors);
* :func:`prefill` and :func:`decode_one_token` are its two model calls, for hand-written
  loops (gpt-fast's shape); :func:`sample`, :func:`greedy_choice`, :func:`filter_logits`
  choose tokens; :func:`beam_search` ranks with :func:`length_penalty`;
* :class:`CTCPrefixScorer` scores hypotheses with a CTC head's prefix probabilities for joint
  CTC/attention beam search (``GenerationConfig.ctc_prefix_weight``);
* :class:`NGramLM` is an interpolated Kneser-Ney n-gram over token ids for shallow fusion
  (``generate(..., lm=...)`` with ``GenerationConfig.lm_weight``), and a :class:`Lexicon`
  (``generate(..., lexicon=...)``) a word list fused with it.
"""

from qkv.generation.beam import beam_search, length_penalty
from qkv.generation.config import STRATEGIES, GenerationConfig
from qkv.generation.ctc import CTCPrefixScorer
from qkv.generation.generate import Generated, check_capacity, generate
from qkv.generation.lexicon import Lexicon
from qkv.generation.ngram import NGramLM, NGramScorer
from qkv.generation.protocols import (
    Cache,
    CausalLM,
    Decodable,
    EncoderDecoder,
    Generative,
    is_encoder_decoder,
)
from qkv.generation.sampling import filter_logits, greedy_choice, sample
from qkv.generation.steps import decode_one_token, prefill

__all__ = [
    "STRATEGIES",
    "CTCPrefixScorer",
    "Cache",
    "CausalLM",
    "Decodable",
    "EncoderDecoder",
    "Generated",
    "GenerationConfig",
    "Generative",
    "Lexicon",
    "NGramLM",
    "NGramScorer",
    "beam_search",
    "check_capacity",
    "decode_one_token",
    "filter_logits",
    "generate",
    "greedy_choice",
    "is_encoder_decoder",
    "length_penalty",
    "prefill",
    "sample",
]
