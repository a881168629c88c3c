"""The asr task's hybrid CTC/attention objective and CTC best-path decoding, on hand-built
batches (no speech synthesis needed)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import qkv.models as M
from qkv.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, train_tokenizer
from qkv.generation import generate
from qkv.tasks import TaskError, TaskOptions, get_task
from qkv.tasks.speech._asr_decoding import LM_ORDER
from qkv.tasks.speech.asr import has_ctc_head


def _model(ctc_head=True, vocab=20):
    torch.manual_seed(0)
    cfg = M.WhisperConfig(d_model=32, n_heads=4, d_ff=48, n_encoder_layers=1,
                          n_decoder_layers=1, vocab_size=vocab, max_len=12, n_mels=80,
                          max_frames=64, conv_strides=[2, 2], ctc_head=ctc_head,
                          pad_token_id=PAD_ID)  # fmt: skip
    return M.build(cfg)


def _batch():
    torch.manual_seed(1)
    texts = [[5, 6, 6, 7], [8, 9]]
    frames = torch.tensor([40, 23])
    mask = torch.arange(40)[None] < frames[:, None]
    src = torch.randn(2, 40, 80) * mask[..., None]
    tgt_in = torch.tensor([[BOS_ID, 5, 6, 6, 7], [BOS_ID, 8, 9, PAD_ID, PAD_ID]])
    tgt_out = torch.tensor([[5, 6, 6, 7, EOS_ID], [8, 9, EOS_ID, PAD_ID, PAD_ID]])
    batch = {"src": src, "src_padding_mask": mask, "tgt_in": tgt_in, "tgt_out": tgt_out,
             "tgt_padding_mask": tgt_in != PAD_ID}  # fmt: skip
    return texts, batch


@pytest.mark.parametrize("weight", [0.3, 0.5])
def test_hybrid_loss_against_each_utterance_alone(weight):
    """Training minimises (1 - λ) CE + λ CTC; the CTC term equals the sum of each unpadded
    utterance's own CTC loss (targets without BOS/EOS, blank = pad id)."""
    task = get_task("asr", TaskOptions(extra={"ctc_weight": weight}))
    model = _model().train()
    texts, batch = _batch()
    torch.manual_seed(3)
    out = task.loss(model, batch)
    torch.manual_seed(3)  # the same dropout masks
    logits, log_probs, enc_mask = model(batch["src"], batch["tgt_in"],
                                        src_padding_mask=batch["src_padding_mask"],
                                        tgt_padding_mask=batch["tgt_padding_mask"], ctc=True)  # fmt: skip
    ce = F.cross_entropy(logits.flatten(0, 1), batch["tgt_out"].flatten(), ignore_index=PAD_ID,
                         reduction="sum")  # fmt: skip
    ctc = sum(
        F.ctc_loss(
            log_probs[i, : int(enc_mask[i].sum())],
            torch.tensor(t),
            torch.tensor([int(enc_mask[i].sum())]),
            torch.tensor([len(t)]),
            blank=PAD_ID,
            reduction="sum",
        )
        for i, t in enumerate(texts)
    )
    assert out.n == 8  # 4 + 1 and 2 + 1 target tokens
    assert float(out.loss_sum.detach()) == pytest.approx(
        float(((1 - weight) * ce + weight * ctc).detach()), rel=1e-5
    )
    assert out.logs["ctc"] == pytest.approx(float(ctc), rel=1e-5)
    # evaluation reports the decoder's cross entropy as the loss, the CTC sum beside it
    model.eval()
    with torch.no_grad():
        ev = task.loss(model, batch)
        ce_eval = F.cross_entropy(model(batch["src"], batch["tgt_in"],
                                        src_padding_mask=batch["src_padding_mask"],
                                        tgt_padding_mask=batch["tgt_padding_mask"]).flatten(0, 1),
                                  batch["tgt_out"].flatten(), ignore_index=PAD_ID, reduction="sum")  # fmt: skip
    assert float(ev.loss_sum) == pytest.approx(float(ce_eval), rel=1e-5)
    assert task.metrics(float(ev.loss_sum), ev.n, ev.logs)["ctc_loss"] == pytest.approx(
        ev.logs["ctc"] / 8
    )


def test_without_a_head_or_weight_the_loss_is_cross_entropy():
    _, batch = _batch()
    plain = get_task("asr", TaskOptions(extra={"ctc_weight": 0}))
    hybrid = get_task("asr")
    model = _model(ctc_head=False).eval()
    with torch.no_grad():
        assert "ctc" not in hybrid.loss(model, batch).logs  # no head: plain cross entropy
        assert "ctc" not in plain.loss(_model().eval(), batch).logs  # weight 0
    assert has_ctc_head(_model()) and not has_ctc_head(model)
    assert has_ctc_head(torch.compile(_model()))


@pytest.mark.parametrize("bad", [1.0, -0.1, "0.3", True])
def test_ctc_weight_errors_name_the_value(bad):
    with pytest.raises(TaskError, match=r"ctc_weight must be in \[0, 1\), got"):
        get_task("asr", TaskOptions(extra={"ctc_weight": bad}))


class _Scripted:
    """Duck-typed model whose CTC head 'predicts' a fixed id path."""

    def __init__(self, paths):
        self.paths = torch.tensor(paths)

    def encode(self, feats, mask):
        return feats

    def source_mask(self, mask):
        return mask

    def ctc_log_probs(self, memory):
        return F.one_hot(self.paths, 20).float().log()


def test_ctc_best_path_merges_repeats_and_drops_blanks_and_padding():
    b = PAD_ID
    paths = [[b, 5, 5, b, 5, 6, 6, b, EOS_ID], [7, 7, b, 7, 9, 9, 9, 8, 8]]
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4])
    task = get_task("asr")
    got = task.ctc_greedy(_Scripted(paths), torch.zeros(2, 9, 1), mask)
    assert got == [[5, 5, 6], [7, 7, 9]]


def _signals():
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(n, generator=g) * 0.1).numpy() for n in (4000, 2500, 3300)]


def test_transcribe_decodes_jointly_with_the_tasks_weight():
    """With a CTC head, transcripts are joint CTC/attention decodes at the task's
    ``ctc_prefix_weight`` (what ``generate`` gives with that weight), a given weight wins,
    and 0 is the attention decoder's own greedy decode."""
    task = get_task("asr", TaskOptions(max_len=8, extra={"ctc_prefix_weight": 0.4,
                                                         "lm_weight": 0.0}))  # fmt: skip
    task._tok = train_tokenizer("char", ["abc def", "ghi jkl mno pqrs"])
    model = _model().eval()
    signals = _signals()
    kw = {"bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": PAD_ID, "max_new_tokens": 9}
    for weight, given in ((0.4, {}), (0.8, {"ctc_prefix_weight": 0.8}),
                          (0.0, {"ctc_prefix_weight": 0.0})):  # fmt: skip
        got = task.transcribe(model, signals, **given)
        for x, text in zip(signals, got):
            feats, mask = task.features([x])
            want = generate(model, feats, padding_mask=mask, ctc_prefix_weight=weight, **kw)
            assert text == task.tokenizer.decode(want.tokens[0])
    plain = []
    for x in signals:
        feats, mask = task.features([x])
        plain.append(
            task.tokenizer.decode(generate(model, feats, padding_mask=mask, **kw).tokens[0])
        )
    assert task.transcribe(model, signals, ctc_prefix_weight=0.0) == plain


def test_transcribe_fuses_the_transcripts_ngram_at_the_tasks_weight():
    """The default decoding adds the n-gram of the training transcripts (a checkpoint's, here
    set by hand: no corpus is read) at the task's ``lm_weight``: what ``generate`` gives with
    that model; a given weight wins, 0 is none."""
    texts = ["abc def", "bad face", "cab fed"]
    task = get_task("asr", TaskOptions(max_len=8))  # lm_weight 0.4, ctc_prefix_weight 0.5
    task._tok = train_tokenizer("char", texts)
    task._transcripts = texts
    vocab = task.tokenizer.vocab_size
    model = _model(vocab=vocab).eval()
    lm = task.language_model(vocab)
    assert (lm.order, lm.vocab_size) == (LM_ORDER, vocab)
    enc = task.tokenizer.encode
    assert lm.score(enc("abc def")) > lm.score(enc("eeee aaaa")) + 5.0  # it knows the texts
    signals = _signals()
    kw = {"bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": PAD_ID, "max_new_tokens": 9,
          "ctc_prefix_weight": 0.5, "lm": lm}  # fmt: skip
    for weight, given in ((0.4, {}), (1.0, {"lm_weight": 1.0}), (0.0, {"lm_weight": 0.0})):
        got = task.transcribe(model, signals, beam_size=2, **given)
        for x, text in zip(signals, got):
            feats, mask = task.features([x])
            want = generate(model, feats, padding_mask=mask, strategy="beam", beam_size=2,
                            lm_weight=weight, **kw)  # fmt: skip
            assert text == task.tokenizer.decode(want.tokens[0])
    for bad in (-0.1, 1.5, True):
        with pytest.raises(TaskError, match=r"lm_weight must be in \[0, 1\], got"):
            get_task("asr", TaskOptions(extra={"lm_weight": bad}))


def test_transcribe_with_oov_penalty_fuses_the_texts_words_as_a_lexicon():
    """``oov_penalty`` > 0: the n-gram's text's words become a lexicon fused with the
    n-gram, and the transcripts are what ``generate`` gives with that lexicon; the option
    is refused when negative, infinite, or with a BPE tokenizer."""
    texts = ["abc def", "bad face", "cab fed"]
    task = get_task("asr", TaskOptions(max_len=8, extra={"oov_penalty": 3.0}))
    task._tok = train_tokenizer("char", texts)
    task._transcripts = texts
    vocab = task.tokenizer.vocab_size
    model, enc = _model(vocab=vocab).eval(), task.tokenizer.encode
    lex = task.lexicon(vocab)
    assert lex is not None and lex.penalty == 3.0 and lex is task.lexicon(vocab)
    assert {tuple(enc(w)) for w in ("abc", "def", "bad", "face", "cab", "fed")} == lex.words
    assert lex.word_ends == tuple(sorted((enc(" ")[0], EOS_ID)))
    kw = {"bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": PAD_ID, "max_new_tokens": 9,
          "ctc_prefix_weight": 0.5, "lm": task.language_model(vocab), "lm_weight": 0.4}  # fmt: skip
    signals = _signals()
    got = task.transcribe(model, signals, beam_size=2)
    for x, text in zip(signals, got):
        feats, mask = task.features([x])
        want = generate(model, feats, padding_mask=mask, strategy="beam", beam_size=2,
                        lexicon=lex, **kw)  # fmt: skip
        assert text == task.tokenizer.decode(want.tokens[0])
    # a given penalty wins (the eval flag's path); 0 decodes with the n-gram alone
    assert task.lexicon(vocab, 5.0).penalty == 5.0 and task.lexicon(vocab, 0.0) is None
    feats, mask = task.features([signals[0]])
    plain = generate(model, feats, padding_mask=mask, strategy="beam", beam_size=2, **kw)
    alone = task.transcribe(model, signals[:1], beam_size=2, oov_penalty=0.0)
    assert alone == [task.tokenizer.decode(plain.tokens[0])]
    off = get_task("asr", TaskOptions(max_len=8))
    off._tok, off._transcripts = task._tok, texts
    assert off.oov_penalty == 0.0 and off.lexicon(vocab) is None  # the default: none
    for bad in (-1.0, float("inf"), True):
        with pytest.raises(TaskError, match="oov_penalty must be a finite number >= 0, got"):
            get_task("asr", TaskOptions(extra={"oov_penalty": bad}))
    with pytest.raises(TaskError, match="oov_penalty 2.0 needs the char tokenizer"):
        get_task("asr", TaskOptions(extra={"oov_penalty": 2.0, "tokenizer": "bpe"}))


def test_joint_decoding_needs_a_ctc_head():
    task = get_task("asr", TaskOptions(max_len=8))
    task._tok = train_tokenizer("char", ["abc def"])
    task._transcripts = ["abc def"]  # the default decoding fuses their n-gram
    headless = _model(ctc_head=False, vocab=task.tokenizer.vocab_size).eval()
    signals = _signals()[:1]
    assert isinstance(task.transcribe(headless, signals)[0], str)  # the default: attention alone
    with pytest.raises(TaskError, match="ctc_prefix_weight 0.3 needs a CTC head"):
        task.transcribe(headless, signals, ctc_prefix_weight=0.3)
    for bad in (-0.1, 1.5, True):
        with pytest.raises(TaskError, match=r"ctc_prefix_weight must be in \[0, 1\], got"):
            get_task("asr", TaskOptions(extra={"ctc_prefix_weight": bad}))
