"""``GenerationConfig``: every decoding setting in one validated, JSON-able dataclass.

>>> cfg = GenerationConfig(strategy="beam", beam_size=5, max_new_tokens=32)
>>> cfg.merged(beam_size=2).beam_size
2
>>> GenerationConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from qkv._checks import check_bool, check_int, check_number

Strategy = Literal["greedy", "beam", "sample"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


def _help(text: str, *, flag: str | None = None) -> dict[str, Any]:
    """Field metadata read by the command line (``qkv generate``'s flags)."""
    return {"help": text, "group": "decoding", "flag": flag}


@dataclass(frozen=True)
class GenerationConfig:
    """How :func:`qkv.generation.generate` decodes. Every field is validated on
    construction (and on :meth:`merged`), with errors naming the field and its value.

    Args:
        strategy: ``"greedy"`` (argmax), ``"beam"`` (beam search with the GNMT length
            penalty) or ``"sample"`` (temperature / top-k / top-p sampling).
        max_new_tokens: the most tokens generated per row (>= 1).
        beam_size: beams per row (``strategy="beam"``; >= 1).
        length_penalty: GNMT ``alpha`` (``lp = ((5 + |Y|) / 6) ** alpha``; 0 ranks by raw
            log probability). Finite and >= 0: the stopping bound of
            ``early_stopping=False`` relies on ``lp`` growing with length.
        early_stopping: beam search stops a row once it has ``beam_size`` finished
            hypotheses (True, as GNMT and Hugging Face) or once no live beam can beat the
            worst finished one (False).
        ctc_prefix_weight: joint CTC/attention decoding (Watanabe et al. 2017) of a model with a
            CTC head (``ctc_log_probs``, e.g. :class:`~qkv.models.Whisper` trained with one):
            beam search ranks ``(1 - w) log p_att(h) + w psi_ctc(h)``, ``psi`` the head's
            CTC prefix score (:class:`~qkv.generation.ctc.CTCPrefixScorer`; the blank is
            ``pad_id``). In ``[0, 1]``; 0 (default): the attention decoder alone. Greedy
            decoding with ``ctc_prefix_weight > 0`` is beam search with one beam.
        lm_weight: shallow fusion (Gulcehre et al. 2015): ``beta >= 0``, the weight of an
            external language model's log-probability added at each step of beam search
            (the ``lm`` given to :func:`~qkv.generation.generate`, e.g. an
            :class:`~qkv.generation.ngram.NGramLM`). 0 (default): none. Greedy decoding
            with an ``lm`` and ``lm_weight > 0`` is beam search with one beam.
        temperature: logits are divided by it before sampling (finite, > 0).
        top_k: sample among the ``top_k`` most likely tokens only (None: all).
        top_p: nucleus sampling: the smallest set of most likely tokens whose mass reaches
            ``top_p``, in ``(0, 1]`` (None: all).
        bos_id: the first decoder token of encoder-decoder models.
        eos_id: the stop token, excluded from the output; None: every row runs to
            ``max_new_tokens`` (a language model on running text has no EOS; beam search
            then finishes every beam at the budget).
        pad_id: filler of :attr:`Generated.ids <qkv.generation.Generated.ids>` after a row
            has finished.
        use_cache: decode with preallocated KV caches (``prefill`` once, then
            ``decode_one_token``), or re-run the whole prefix every step (the readable
            reference the cache is tested against; same tokens, logits equal to 1e-5).
        return_logits: keep every step's ``(b, vocab)`` logits (greedy and sample only).
        seed: with ``strategy="sample"``, the seed of a fresh ``torch.Generator`` made on
            every call (the same config then draws the same tokens); None: the global RNG,
            or the ``generator`` passed to :func:`~qkv.generation.generate` (giving both is
            an error). A generator is run-time state, not a setting, so it is not a field.

    Raises:
        ValueError: a field of the wrong type or out of range (named, with its value).
    """

    strategy: Strategy = field(
        default="greedy", metadata=_help("greedy, beam (beam search) or sample")
    )
    max_new_tokens: int = field(default=64, metadata=_help("the most new tokens per input"))
    beam_size: int = field(default=4, metadata=_help("beams per input (--strategy beam)"))
    length_penalty: float = field(
        default=0.6, metadata=_help("GNMT alpha of beam search (0 = raw log probability)")
    )
    early_stopping: bool = field(
        default=True,
        metadata=_help("beam search stops an input once it has --beam-size finished beams"),
    )
    ctc_prefix_weight: float = field(
        default=0.0,
        metadata=_help(
            "joint CTC/attention decoding: weight of the CTC head's prefix score "
            "(a model with a CTC head; 0 = attention alone)",
        ),
    )
    lm_weight: float = field(
        default=0.0,
        metadata=_help(
            "shallow fusion: weight of an external language model's log-probability "
            "(asr: an n-gram of the training transcripts; 0 = none)",
        ),
    )
    temperature: float = field(
        default=1.0, metadata=_help("divide the logits by this before sampling")
    )
    top_k: int | None = field(
        default=None, metadata=_help("sample among the K most likely tokens only")
    )
    top_p: float | None = field(
        default=None, metadata=_help("nucleus sampling: the smallest set with this much mass")
    )
    bos_id: int = field(default=1, metadata=_help("first decoder token of encoder-decoders"))
    eos_id: int | None = field(default=2, metadata=_help("stop token (none: run to the budget)"))
    pad_id: int = field(default=0, metadata=_help("filler after an input has finished"))
    use_cache: bool = field(
        default=True,
        metadata=_help("decode with KV caches (--no-cache re-runs the prefix)", flag="--cache"),
    )
    return_logits: bool = field(default=False, metadata=_help("keep every step's logits"))
    seed: int | None = field(
        default=None, metadata=_help("seed of sampling (same seed, same tokens)")
    )

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"strategy must be 'greedy', 'beam' or 'sample', got {self.strategy!r}"
            )
        check_int("max_new_tokens", self.max_new_tokens, 1)
        check_int("beam_size", self.beam_size, 1)
        check_number("length_penalty", self.length_penalty)
        if self.length_penalty < 0:
            raise ValueError(f"length_penalty must be >= 0, got {self.length_penalty!r}")
        check_number("ctc_prefix_weight", self.ctc_prefix_weight)
        if not 0.0 <= self.ctc_prefix_weight <= 1.0:
            raise ValueError(f"ctc_prefix_weight must be in [0, 1], got {self.ctc_prefix_weight!r}")
        if self.ctc_prefix_weight > 0 and self.strategy == "sample":
            raise ValueError(
                f"ctc_prefix_weight ({self.ctc_prefix_weight}) scores beam or greedy decoding, not "
                f"strategy='sample'"
            )
        check_number("lm_weight", self.lm_weight)
        if self.lm_weight < 0:
            raise ValueError(f"lm_weight must be >= 0, got {self.lm_weight!r}")
        if self.lm_weight > 0 and self.strategy == "sample":
            raise ValueError(
                f"lm_weight ({self.lm_weight}) scores beam or greedy decoding, not "
                f"strategy='sample'"
            )
        check_number("temperature", self.temperature)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        check_int("top_k", self.top_k, 1, optional=True)
        if self.top_p is not None:
            check_number("top_p", self.top_p)
            if not 0.0 < self.top_p <= 1.0:
                raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        check_int("bos_id", self.bos_id, 0)
        check_int("eos_id", self.eos_id, 0, optional=True)
        check_int("pad_id", self.pad_id, 0)
        check_int("seed", self.seed, 0, optional=True)
        for name in ("early_stopping", "use_cache", "return_logits"):
            check_bool(name, getattr(self, name))
        if self.return_logits and self.strategy == "beam":
            raise ValueError(
                "return_logits=True keeps greedy or sampled steps' logits; beam search "
                "(strategy='beam') does not return them"
            )

    def merged(self, **overrides: Any) -> GenerationConfig:
        """A copy with ``overrides`` applied (and validated).

        Raises:
            TypeError: keywords that are not fields (named, with the valid ones).
            ValueError: an invalid value.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(
                f"unknown generation settings {unknown}; valid settings: {sorted(names)}"
            )
        return dataclasses.replace(self, **overrides) if overrides else self

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-serializable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationConfig:
        """Inverse of :meth:`to_dict`; missing fields take their defaults.

        Raises:
            TypeError: unknown keys (named).
        """
        return cls().merged(**d)
