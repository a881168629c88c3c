"""record_text: raw text through a task's tokenizer into a record with token strings."""

from __future__ import annotations

import pytest

from qkv.data.tokenizers import CharTokenizer
from qkv.tasks.viz import record_text


class CharTask:
    """The part of a task that record_text uses: a tokenizer."""

    def __init__(self) -> None:
        self.tokenizer = CharTokenizer.train(["hello world"])


@pytest.mark.parametrize("family", ["lm", "bert"])
def test_record_text_single_stack_models(family, tiny):
    model = getattr(tiny, family)(vocab_size=max(50, CharTask().tokenizer.vocab_size))
    tr = record_text(model, CharTask(), "hello", heads=[0])
    assert tr.tokens == list("hello") and tr.target_tokens is None
    (entry,) = [e for e in tr.record.values() if e.layer_index == 0]
    assert entry.weights.shape == (1, 1, 5, 5)


def test_record_text_rejects_models_that_do_not_read_text(tiny):
    with pytest.raises(ValueError, match="must be a Seq2SeqTransformer, DecoderLM or EncoderModel"):
        record_text(tiny.vit(), CharTask(), "hello")
    with pytest.raises(ValueError, match="has no tokenizer"):
        record_text(tiny.lm(), object(), "hello")
