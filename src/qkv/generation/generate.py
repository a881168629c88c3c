"""``generate``: one entry point for greedy, beam and sampled decoding of qkv models."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Any

import torch
from torch import Tensor

from qkv.generation._stepper import Stepper, check_source
from qkv.generation.beam import beam_search
from qkv.generation.config import GenerationConfig
from qkv.generation.ctc import CTCPrefixScorer
from qkv.generation.greedy import decode_loop
from qkv.generation.lexicon import Lexicon
from qkv.generation.ngram import NGramLM, NGramScorer
from qkv.generation.protocols import Decodable, Generative, is_encoder_decoder
from qkv.generation.sampling import greedy_choice, sample
from qkv.layers.head import OutputHead

#: Position kinds with a table of ``max_len`` rows: decoding past it is an error.
BOUNDED_POSITIONS = ("learned", "sinusoidal")


@dataclass
class Generated:
    """Decoded continuations, as lists and as padded tensors.

    Attributes:
        tokens: new tokens per input row, EOS excluded (a language model's prompt is not
            repeated).
        scores: per row, the summed log probability (greedy/sample) or the length-penalized
            beam score.
        logits: per decoding step, ``(b, vocab)`` float32 logits (greedy/sample with
            ``return_logits=True``).
        ids: ``(b, n)`` long, :attr:`tokens` right-padded with ``pad_id`` to the longest
            row ``n`` (on ``device``).
        lengths: ``(b,)`` long, the length of each row of :attr:`tokens`.

    Args:
        pad_id: the filler of :attr:`ids` (default 0; ``generate`` passes its ``pad_id``).
        device: where :attr:`ids` and :attr:`lengths` live (default the CPU;
            ``generate`` passes the inputs' device).
    """

    tokens: list[list[int]]
    scores: list[float]
    logits: list[Tensor] = field(default_factory=list)
    pad_id: InitVar[int] = 0
    device: InitVar[torch.device | str | None] = None
    ids: Tensor = field(init=False)
    lengths: Tensor = field(init=False)

    def __post_init__(self, pad_id: int, device: torch.device | str | None) -> None:
        n = max((len(row) for row in self.tokens), default=0)
        rows = [row + [pad_id] * (n - len(row)) for row in self.tokens]
        self.ids = torch.tensor(rows, dtype=torch.long, device=device).view(len(rows), n)
        self.lengths = torch.tensor(
            [len(row) for row in self.tokens], dtype=torch.long, device=device
        )


@torch.inference_mode()
def generate(
    model: Generative,
    inputs: Tensor,
    config: GenerationConfig | None = None,
    *,
    padding_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    lm: NGramLM | None = None,
    lexicon: Lexicon | None = None,
    **overrides: Any,
) -> Generated:
    """Continue a batch of prompts (a causal LM such as ``DecoderLM``) or translate a batch
    of sources (an encoder-decoder such as ``Seq2SeqTransformer``).

    ``generate(model, ids, max_new_tokens=5, strategy="beam")`` and
    ``generate(model, ids, GenerationConfig(max_new_tokens=5, strategy="beam"))`` are the
    same call; keywords override the fields of ``config`` (default
    :class:`GenerationConfig()`) and are validated like them. The model methods
    ``model.generate(ids, ...)`` call this.

    Args:
        model: a causal LM or an encoder-decoder (see :mod:`qkv.generation.protocols`),
            put in eval mode for the call (its mode is restored after).
        inputs: ``(b, s)`` prompt or source ids, right-padded; or, for an encoder-decoder
            that reads images or features, a float source: an image batch ``(b, c, H, W)``
            (``Captioner``) or log-mel frames ``(b, t, n_mels)`` (``Whisper``).
        config: the decoding settings (:class:`GenerationConfig`).
        padding_mask: ``(b, s)`` bool, True = real token; default all real.
        generator: RNG for sampling (else ``config.seed``, else the global RNG).
        lm: an external language model over the decoder's token ids for shallow fusion,
            weighted by ``config.lm_weight`` (run-time state like ``generator``, not a
            setting); None, or ``lm_weight`` 0: none.
        lexicon: a word list fused with ``lm`` (:class:`~qkv.generation.lexicon.Lexicon`):
            a hypothesis pays its penalty once per word off the list, weighted as the
            language model's log-probabilities; only with ``lm``.
        **overrides: fields of :class:`GenerationConfig` (``max_new_tokens``,
            ``strategy``, ``beam_size``, ``temperature``, ``eos_id``, ...).

    Returns:
        :class:`Generated`. Decoding runs under ``torch.inference_mode``, so its tensors are
        inference tensors (``.clone()`` them outside it to use them with autograd).

    Raises:
        TypeError: a ``config`` that is not a :class:`GenerationConfig`, keywords that are not
            settings, or a model without ``make_cache``.
        ValueError: invalid settings (named, with their values), bad shapes, both ``seed``
            and ``generator``, or prompt + ``max_new_tokens`` past the model's learned or
            sinusoidal position table (``config.max_len``).
    """
    if config is None:
        config = GenerationConfig()
    elif not isinstance(config, GenerationConfig):
        raise TypeError(f"config must be a GenerationConfig or None, got {type(config).__name__}")
    cfg = config.merged(**overrides)
    if lexicon is not None and lm is None:
        raise ValueError("a lexicon is fused with a language model: give lm too")
    if not isinstance(model, Decodable):
        raise TypeError(
            f"generate needs a model with make_cache (a causal LM or an encoder-decoder), "
            f"got {type(model).__name__}"
        )
    source_mask = check_source(model, inputs, padding_mask)
    check_capacity(model, inputs, source_mask, cfg.max_new_tokens)
    if cfg.strategy == "sample" and cfg.seed is not None:
        if generator is not None:
            raise ValueError(f"give a generator or config.seed ({cfg.seed}), not both")
        generator = torch.Generator(device=inputs.device).manual_seed(cfg.seed)
    was_training = model.training
    model.train(False)
    heads = _decoding_heads(model, cfg.max_new_tokens)
    for head in heads:
        head.prepare_decoding()
    # joint CTC/attention decoding is a beam search; greedy is its one-beam case
    fused = lm is not None and cfg.lm_weight > 0
    beam = cfg.strategy == "beam" or cfg.ctc_prefix_weight > 0 or fused
    beam_size = cfg.beam_size if cfg.strategy == "beam" else 1
    try:
        stepper = Stepper(
            model,
            inputs,
            padding_mask,
            cfg.max_new_tokens,
            bos_id=cfg.bos_id,
            use_cache=cfg.use_cache,
            beams=beam_size if beam else 1,
        )
        out = {"pad_id": cfg.pad_id, "device": inputs.device}
        if beam:
            toks, scores = beam_search(
                stepper,
                beam_size=beam_size,
                max_new_tokens=cfg.max_new_tokens,
                eos_id=cfg.eos_id,
                alpha=cfg.length_penalty,
                early_stopping=cfg.early_stopping,
                ctc=ctc_scorer(model, stepper, cfg) if cfg.ctc_prefix_weight > 0 else None,
                ctc_weight=cfg.ctc_prefix_weight,
                lm=NGramScorer(lm, stepper.batch_size, inputs.device, lexicon=lexicon)
                if fused
                else None,
                lm_weight=cfg.lm_weight,
            )
            return Generated(toks, scores, **out)  # type: ignore[arg-type]
        if cfg.strategy == "sample":

            def choose(logits: Tensor) -> Tensor:
                return sample(
                    logits, generator, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p
                )
        else:
            choose = greedy_choice
        toks, scores, logits = decode_loop(
            stepper,
            choose,
            max_new_tokens=cfg.max_new_tokens,
            eos_id=cfg.eos_id,
            pad_id=cfg.pad_id,
            keep_logits=cfg.return_logits,
            # a greedy row's tokens do not depend on the other rows (sampling's draws do,
            # through the generator), so finished rows can leave the batch
            drop_finished=cfg.strategy == "greedy",
        )
        return Generated(toks, scores, logits, **out)  # type: ignore[arg-type]
    finally:
        for head in heads:
            head.release_decoding()
        model.train(was_training)


def ctc_scorer(model: object, stepper: Stepper, cfg: GenerationConfig) -> CTCPrefixScorer:
    """The CTC prefix scorer of the stepper's rows (``b * k``, one per beam): the model's
    ``ctc_log_probs`` of the encoded source, the real positions from its ``source_mask``
    of the source's padding mask (the identity without one), ``pad_id`` as the blank.

    Raises:
        TypeError: a model without ``ctc_log_probs`` (no encoder-decoder with a CTC head).
    """
    head = getattr(model, "ctc_log_probs", None)
    if not callable(head) or stepper.memory is None:
        raise TypeError(
            f"ctc_prefix_weight ({cfg.ctc_prefix_weight}) needs an encoder-decoder with a CTC "
            f"head (ctc_log_probs), got {type(model).__name__}"
        )
    log_probs = head(stepper.memory)  # (b*k, s_src, V)
    n, s_src = log_probs.shape[:2]
    if stepper.src_padding_mask is None:
        lengths = torch.full((n,), s_src, dtype=torch.long, device=log_probs.device)
    else:
        to_positions = getattr(model, "source_mask", lambda m: m)
        lengths = to_positions(stepper.src_padding_mask).sum(-1)  # (b*k,)
    return CTCPrefixScorer(log_probs, lengths, blank=cfg.pad_id, eos_id=cfg.eos_id)


def check_capacity(
    model: object, inputs: Tensor, padding_mask: Tensor, max_new_tokens: int
) -> None:
    """Refuse a decode that would run past the model's position table.

    Learned and sinusoidal positions are a table of ``config.max_len`` rows; RoPE, ALiBi,
    relative biases and no positions have no hard limit. A language model feeds its
    longest prompt (``n_p`` real tokens) and all new tokens but the last, so it needs
    ``n_p + max_new_tokens - 1 <= max_len``; an encoder-decoder needs the source
    ``s_src <= max_len`` and ``max_new_tokens <= max_len`` (BOS at position 0). Models
    without a ``config`` with ``pos`` and ``max_len`` are not checked.

    Args:
        model: the model (its ``config.pos`` and ``config.max_len`` are read).
        inputs: ``(b, s)`` prompt or source ids.
        padding_mask: ``(b, s)`` bool, True = real token.
        max_new_tokens: the decoding budget.

    Raises:
        ValueError: naming the lengths and ``max_len``.
    """
    cfg = getattr(model, "config", None)
    pos, max_len = getattr(cfg, "pos", None), getattr(cfg, "max_len", None)
    if pos not in BOUNDED_POSITIONS or not isinstance(max_len, int):
        return
    longest = int(padding_mask.sum(-1).max()) if inputs.numel() else 0
    table = f"the model's {pos} positions stop at max_len ({max_len})"
    if is_encoder_decoder(model):
        if inputs.is_floating_point():  # source features (audio): the encoder checks them
            longest = 0
        if longest > max_len:
            raise ValueError(f"the source has {longest} tokens, but {table}")
        if max_new_tokens > max_len:
            raise ValueError(
                f"max_new_tokens ({max_new_tokens}) needs decoder positions up to "
                f"{max_new_tokens - 1}, but {table}"
            )
        return
    if longest > max_len:
        raise ValueError(f"the prompt has {longest} tokens, but {table}")
    if longest + max_new_tokens - 1 > max_len:
        raise ValueError(
            f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) needs "
            f"{longest + max_new_tokens - 1} positions (the last new token is never fed "
            f"back), but {table}; lower max_new_tokens to at most {max_len - longest + 1}"
        )


def _decoding_heads(model: Decodable, max_new_tokens: int) -> list[OutputHead]:
    """The output heads worth a decoding copy of their weight: on the CPU (whose BLAS is
    slow on a few rows times a transposed matrix; see :class:`OutputHead`), and when enough
    steps repay the copy."""
    if max_new_tokens < 8:
        return []
    return [m for m in model.modules() if isinstance(m, OutputHead) and m.weight.is_cpu]
