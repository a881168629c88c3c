"""``asr``'s decoding helpers: its weights' checks, the CTC head (whether a model has one,
its best path), and its external language model: an interpolated Kneser-Ney
character n-gram (:class:`~qkv.generation.ngram.NGramLM`) for shallow fusion in beam
search (``lm_weight``).

The decoder hears letters; the n-gram knows which words they spell and where words end.
Its text (:func:`lm_corpus`) is the training split's transcripts and the other English
sentences of Ding's dictionary, the corpus's source: none of them a valid or test
sentence or holding one. A checkpoint keeps that text (``transcripts.json``), so decoding
a sound file needs no corpus. With ``oov_penalty`` > 0 the text's words are also a lexicon
(:class:`~qkv.generation.lexicon.Lexicon`): a word spelled outside them pays the penalty
once, in the n-gram's log-probability.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from qkv.data import audio, ding
from qkv.data.audio import Utterance
from qkv.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, CharTokenizer, Tokenizer
from qkv.generation.ctc import ctc_best_path
from qkv.generation.lexicon import Lexicon
from qkv.generation.ngram import NGramLM
from qkv.tasks.base import TaskError

#: The n-gram's order: it reads the last ``LM_ORDER - 1`` characters (9 against 5, 7 and 12
#: on the valid split of the timed run: ``docs/speech.md``).
LM_ORDER = 9
#: The checkpoint file that keeps the n-gram's text (:func:`lm_corpus`).
TRANSCRIPTS_FILE = "transcripts.json"


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model inside a ``torch.compile`` or DDP wrapper (or the model itself)."""
    for wrapper in ("_orig_mod", "module"):
        model = getattr(model, wrapper, model)
    return model


def has_ctc_head(model: nn.Module) -> bool:
    """Whether ``model`` (or the model inside a ``torch.compile`` or DDP wrapper) is a
    :class:`~qkv.models.Whisper` with a CTC head."""
    return getattr(_unwrapped(model), "ctc_head", None) is not None


def decoder_vocab(model: nn.Module) -> int:
    """The size of the decoder's output vocabulary (what the n-gram must score)."""
    return int(_unwrapped(model).config.vocab_size)


def ctc_greedy(model: nn.Module, feats: Tensor, mask: Tensor) -> list[list[int]]:
    """Best-path CTC decoding: the head's most likely id per encoder position, repeats
    merged, blanks (the pad id) and other special ids dropped.

    Returns:
        one token-id list per input.
    """
    log_probs = model.ctc_log_probs(model.encode(feats, mask))  # (b, s_src, V)
    return ctc_best_path(log_probs, model.source_mask(mask), (PAD_ID, BOS_ID, EOS_ID))


def check_weight(name: str, value: Any, *, below_one: bool = False) -> float:
    """A weight option: a number in ``[0, 1]`` (``[0, 1)`` with ``below_one``).

    Raises:
        TaskError: naming the option and the value.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0.0 <= value <= 1.0 or (below_one and value == 1.0):
        span = "[0, 1)" if below_one else "[0, 1]"
        raise TaskError(f"task 'asr': {name} must be in {span}, got {value!r}")
    return float(value)


def lm_corpus(examples: Callable[[str], Sequence[Utterance]]) -> list[str]:
    """The n-gram's text from a task's splits (``examples(split)``): the training
    transcripts, then Ding's other English sentences
    (:func:`qkv.data.audio.language_model_texts`: never a valid or test sentence, nor one
    holding it)."""
    held = [u.text for split in ("valid", "test") for u in examples(split)]
    train = [u.text for u in examples("train")]
    return audio.language_model_texts(ding.read_ding(ding.DING_PATH), train, held)


def transcript_lm(
    texts: Sequence[str],
    tokenizer: Tokenizer,
    vocab_size: int | None = None,
    order: int = LM_ORDER,
) -> NGramLM:
    """The n-gram of ``texts`` over the tokenizer's ids, scoring ``vocab_size`` ids (the
    decoder's; default the tokenizer's).

    Raises:
        TaskError: no transcripts.
    """
    if not texts:
        raise TaskError("task 'asr': lm_weight > 0 needs training transcripts, and there are none")
    return NGramLM(
        [tokenizer.encode(t) for t in texts],
        vocab_size=max(tokenizer.vocab_size, vocab_size or 0),
        order=order,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
    )


def check_penalty(value: Any, tokenizer_kind: str) -> float:
    """``oov_penalty``: a finite number >= 0, and 0 unless the tokenizer spells characters
    (a BPE piece holds parts of two words, so no token ends a word).

    Raises:
        TaskError: naming the option and the value.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0.0 <= value < float("inf"):
        raise TaskError(f"task 'asr': oov_penalty must be a finite number >= 0, got {value!r}")
    if value > 0 and tokenizer_kind != "char":
        raise TaskError(
            f"task 'asr': oov_penalty {value} needs the char tokenizer (got "
            f"{tokenizer_kind!r}): give --oov-penalty 0"
        )
    return float(value)


def lexicon_words(texts: Sequence[str]) -> list[str]:
    """The lexicon's words: those of the n-gram's ``texts`` (:func:`lm_corpus`), sorted."""
    return sorted({w for t in texts for w in t.split()})


def transcript_lexicon(
    words: Sequence[str], tokenizer: Tokenizer, vocab_size: int, penalty: float
) -> Lexicon:
    """``words`` as a :class:`~qkv.generation.lexicon.Lexicon` over the character
    tokenizer's ids (``vocab_size``: the n-gram's), the space and EOS ending a word.

    Raises:
        TaskError: a tokenizer that is not a character one, or no words.
    """
    if not isinstance(tokenizer, CharTokenizer):
        raise TaskError(f"task 'asr': a lexicon needs the char tokenizer, not {tokenizer.kind!r}")
    if not words:
        raise TaskError("task 'asr': oov_penalty > 0 needs a lexicon, and it has no words")
    (space,) = tokenizer.encode(" ")
    return Lexicon(
        (tokenizer.encode(w) for w in words),
        vocab_size=vocab_size,
        word_ends=(space, EOS_ID),
        penalty=penalty,
    )


def save_transcripts(directory: Path, texts: Sequence[str]) -> None:
    """Write the n-gram's text beside the tokenizer (one JSON list; the lexicon is its
    words)."""
    (Path(directory) / TRANSCRIPTS_FILE).write_text(
        json.dumps(list(texts), ensure_ascii=False), encoding="utf-8"
    )


def load_transcripts(directory: Path) -> list[str] | None:
    """The transcripts :func:`save_transcripts` wrote, or None for a checkpoint saved
    before they were kept.

    Raises:
        TaskError: a damaged file (named).
    """
    path = Path(directory) / TRANSCRIPTS_FILE
    if not path.is_file():
        return None
    try:
        texts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TaskError(f"{path}: not a readable transcript list ({e})") from e
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise TaskError(f"{path}: must hold a JSON list of strings")
    return texts


__all__ = [
    "LM_ORDER",
    "TRANSCRIPTS_FILE",
    "check_penalty",
    "check_weight",
    "ctc_greedy",
    "decoder_vocab",
    "has_ctc_head",
    "lexicon_words",
    "lm_corpus",
    "load_transcripts",
    "save_transcripts",
    "transcript_lexicon",
    "transcript_lm",
]
