"""``asr``: speech recognition on synthetic speech of real English sentences.

The corpus is :func:`qkv.data.audio.speech_corpus`: sentences of the Debian package
``trans-de-en`` (the English side of :mod:`qkv.data.ding`) spoken by ``espeak-ng`` with
random accents, voice variants, speeds and pitches, gain and noise; the valid and test
splits hold out voice variants the training split never hears, and their sentences. **The
speech is synthetic, the text is real** (``docs/speech.md``).

The model is :class:`~qkv.models.Whisper` on Whisper's log-mel features
(:class:`~qkv.layers.log_mel.LogMel`), trained by teacher forcing on character (or BPE)
transcripts with SpecAugment (:class:`~qkv.layers.spec_augment.SpecAugment`) and, by
default, an auxiliary CTC loss on the encoder (hybrid CTC/attention, Watanabe et al. 2017),
decoded by greedy or beam search (joint with the CTC head, fused with an n-gram of English
text; or the CTC head's greedy path), scored by word and character error rates
(``jiwer``) with the decoding's real-time factor.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from qkv.data import audio, ding, metrics
from qkv.data.audio import SAMPLE_RATE, SpeechError, SpeechSettings, Utterance
from qkv.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Tokenizer,
    TokenizerFileError,
    train_tokenizer,
)
from qkv.generation import Lexicon, NGramLM, generate
from qkv.layers.log_mel import LogMel
from qkv.layers.mode import evaluating
from qkv.layers.spec_augment import SpecAugment
from qkv.models import TransformerConfig
from qkv.tasks._common import (
    batched,
    check_choice,
    check_positive,
    model_device,
    pad_ids,
    sized_config,
    write_task_file,
)
from qkv.tasks.base import DECODING, SPLITS, Split, Task, TaskError
from qkv.tasks.options import OptionsLike, SeedOption, SizeOptions, TextOptions, option
from qkv.tasks.speech._asr_decoding import (
    check_penalty,
    check_weight,
    ctc_greedy,
    decoder_vocab,
    has_ctc_head,
    lexicon_words,
    lm_corpus,
    load_transcripts,
    save_transcripts,
    transcript_lexicon,
    transcript_lm,
)
from qkv.tasks.speech._asr_loss import hybrid_loss, hybrid_metrics
from qkv.tasks.speech._asr_measured import MEASURED
from qkv.tasks.speech.viz import report_for_speech
from qkv.training.evaluate import evaluate_sums
from qkv.training.objective import Batch, LossOutput
from qkv.training.objectives import Seq2SeqObjective

#: Longest input, in mel frames (Whisper's 30 s).
MAX_FRAMES = 3000


class ASRTask(Task):
    """Speech recognition: log-mel frames -> transcript.

    Options (:class:`ASRTask.Options`, each with its help): the corpus (``seed``,
    ``n_train``/``n_valid``/``n_test`` utterances, ``max_len``: sentences of up to
    ``max_len - 4`` characters are spoken, ``workers``, ``cache_dir``), the ``tokenizer``,
    SpecAugment (``augment``), the CTC loss's weight (``ctc_weight``), and decoding: joint
    CTC/attention (``ctc_prefix_weight``, :class:`~qkv.generation.ctc.CTCPrefixScorer`) and
    shallow fusion with an n-gram of English text (``lm_weight``,
    :mod:`qkv.tasks.speech._asr_decoding`). Each default is measured in ``docs/speech.md``.
    """

    @dataclass
    class Options(TextOptions, SizeOptions, SeedOption):
        """asr's options."""

        tokenizer: str | None = option(
            None, "tokenizer kind", choices=("char", "bpe"), shown="char"
        )
        augment: bool = option(True, "SpecAugment's time and frequency masks on training audio")
        ctc_weight: float = option(0.5, "weight W of the auxiliary CTC loss, (1 - W) CE + W "
                                   "CTC; 0 trains the decoder alone and builds no CTC head")  # fmt: skip
        ctc_prefix_weight: float = option(
            0.5,
            "joint CTC/attention decoding: weight W of the CTC head's prefix score in greedy "
            "and beam decoding, (1 - W) log p_att + W log p_ctc; 0 decodes with the "
            "attention decoder alone",
        )
        lm_weight: float = option(
            0.4,
            "shallow fusion: weight W of a character 9-gram of the transcripts and Ding's "
            "other sentences in beam and greedy decoding, + W log p_lm; 0 decodes without it",
        )
        oov_penalty: float = option(0.0, "lexicon: a word missing from the n-gram's text "
                                    "costs P of its log-probability, once per word (char "
                                    "tokenizer, with lm_weight; 4 with 8 beams: docs/speech.md)")  # fmt: skip
        workers: int = option(2, "espeak-ng processes that synthesise the speech")
        cache_dir: str | None = option(
            None, "where the synthesised speech is cached", shown="~/.cache/qkv/asr"
        )

    options: Options
    measured = MEASURED  # the timed run's numbers and samples, for --help
    name = "asr"
    kind = "seq2seq"
    names_inputs = True
    decoding = tuple(sorted(DECODING))  # every setting, ctc_prefix_weight included
    eval_beam = True
    default_beam = 8  # test WER 37.2 with one beam, 19.6 with 8 (docs/speech.md)
    viz_target = True
    headline: ClassVar[str] = "wer"
    default_sizes: ClassVar[dict[str, int]] = {"n_train": 11900, "n_valid": 200, "n_test": 300}
    recipe: ClassVar[dict[str, Any]] = {
        "batch_size": 32,
        "optimizer": "adamw",
        "lr": 2e-3,  # over 1e-3: lower valid loss at equal steps (docs/speech.md, "Recipe")
        "schedule": "cosine",
        "warmup": 200,
        "weight_decay": 0.01,
        "label_smoothing": 0.1,
        "eval_every": 500,
        "eval_limit": 100,
    }
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 144,
        "n_heads": 4,
        "d_ff": 576,
        "n_encoder_layers": 4,
        "n_decoder_layers": 2,
        "dropout": 0.0,  # 30 min: valid WER 18.6 vs 29.8 at 0.1 (docs/speech.md)
        "conv_strides": [2, 2],
    }

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        o = self.options
        self.tokenizer_kind = o.tokenizer or "char"
        check_choice(self.name, "tokenizer", self.tokenizer_kind, ("char", "bpe"))
        self.max_len = o.max_len if o.max_len is not None else 64
        check_positive(self.name, "max_len", self.max_len, minimum=8)
        for opt in ("n_train", "n_valid", "n_test"):
            if getattr(o, opt) is not None:
                check_positive(self.name, opt, getattr(o, opt), minimum=1)
        self.ctc_weight = check_weight("ctc_weight", o.ctc_weight, below_one=True)
        self.ctc_prefix_weight = check_weight("ctc_prefix_weight", o.ctc_prefix_weight)
        self.lm_weight = check_weight("lm_weight", o.lm_weight)
        self.oov_penalty = check_penalty(o.oov_penalty, self.tokenizer_kind)
        self.workers = o.workers
        check_positive(self.name, "workers", self.workers)
        self.front_end = LogMel()
        self.spec_augment = SpecAugment() if o.augment else None
        self._splits: dict[str, list[Utterance]] | None = None
        self._tok: Tokenizer | None = None
        self._transcripts: list[str] | None = None  # the n-gram's text: a checkpoint's, lm_corpus
        self._lm: NGramLM | None = None  # language_model()
        self._lexicon: Lexicon | None = None  # lexicon()
        self._objective = Seq2SeqObjective()

    # -- data ----------------------------------------------------------------------------
    def settings(self) -> SpeechSettings:
        """The corpus settings the options describe."""
        o = self.options
        n = {k: getattr(o, k) if getattr(o, k) is not None else v
             for k, v in self.default_sizes.items()}  # fmt: skip
        return SpeechSettings(seed=o.seed, max_chars=self.max_len - 4, **n)

    def _make_splits(self) -> dict[str, list[Utterance]]:
        if not ding.DING_PATH.is_file():
            raise TaskError(
                f"task 'asr' speaks the English sentences of {ding.DING_PATH}, which is "
                f"missing: `apt-get install trans-de-en`"
            )
        s = self.settings()
        sentences = audio.usable_sentences(ding.read_ding(ding.DING_PATH), s.max_chars)
        try:
            return audio.speech_corpus(
                sentences, s, cache_dir=self.options.cache_dir, workers=self.workers
            )
        except SpeechError as e:
            raise TaskError(f"task 'asr': {e}") from e

    def examples(self, split: Split) -> list[Utterance]:
        """The utterances of a split.

        Raises:
            TaskError: an unknown split, or no ``trans-de-en``/``espeak-ng``.
        """
        check_choice(self.name, "split", split, SPLITS)
        if self._splits is None:
            self._splits = self._make_splits()
        return self._splits[split]

    @property
    def tokenizer(self) -> Tokenizer:
        """The transcript tokenizer (trained on the training transcripts, or loaded)."""
        if self._tok is None:
            texts = [u.text for u in self.examples("train")]
            vocab = self.options.vocab_size or (1000 if self.tokenizer_kind == "bpe" else None)
            try:
                self._tok = train_tokenizer(self.tokenizer_kind, texts, vocab_size=vocab)
            except ValueError as e:
                raise TaskError(f"task 'asr': {e}") from e
        return self._tok

    def language_model(self, vocab_size: int | None = None) -> NGramLM:
        """The n-gram over ``vocab_size`` ids of the checkpoint's text (or ``lm_corpus``)."""
        if self._lm is None or self._lm.vocab_size < (vocab_size or 0):
            text = self._lm_text()  # the lexicon below is over the n-gram's ids
            self._lm, self._lexicon = transcript_lm(text, self.tokenizer, vocab_size), None
        return self._lm

    def lexicon(self, vocab: int | None = None, penalty: float | None = None) -> Lexicon | None:
        """The lexicon (:func:`lexicon_words`) at ``penalty`` (``oov_penalty``); None at 0."""
        lm, p = self.language_model(vocab), self.oov_penalty if penalty is None else penalty
        if p > 0 and (self._lexicon is None or self._lexicon.penalty != p):
            words = lexicon_words(self._lm_text())
            self._lexicon = transcript_lexicon(words, self.tokenizer, lm.vocab_size, p)
        return self._lexicon if p > 0 else None

    def _lm_text(self) -> list[str]:
        """The n-gram's text: the checkpoint's, or :func:`lm_corpus` (made once)."""
        self._transcripts = self._transcripts or lm_corpus(self.examples)
        return self._transcripts

    def features(self, signals: Sequence[Any]) -> tuple[Tensor, Tensor]:
        """Log-mel features of mono 16 kHz signals, right-padded.

        Returns:
            ``(b, t, n_mels)`` features and the ``(b, t)`` frame mask (True = real).
        """
        lengths = torch.tensor([len(x) for x in signals])
        wave = torch.zeros(len(signals), int(lengths.max()))
        for i, x in enumerate(signals):
            wave[i, : len(x)] = torch.as_tensor(x, dtype=torch.float32)
        feats = self.front_end(wave, lengths)  # (b, t, n_mels)
        frames = lengths // self.front_end.hop
        mask = torch.arange(feats.shape[1])[None] < frames[:, None]  # (b, t)
        return feats, mask

    def collate(self, examples: Sequence[Utterance]) -> Batch:
        """Teacher-forcing batch: ``src`` ``(b, t, n_mels)`` features with
        ``src_padding_mask``; ``tgt_in`` = ``[BOS] + transcript``, ``tgt_out`` =
        ``transcript + [EOS]``, ``tgt_padding_mask`` (as
        :class:`~qkv.training.objectives.Seq2SeqObjective`)."""
        src, mask = self.features([u.audio for u in examples])
        tgt = [self.tokenizer.encode(u.text)[: self.max_len] for u in examples]
        tgt_in, tgt_mask = pad_ids([[BOS_ID, *t] for t in tgt])
        tgt_out, _ = pad_ids([[*t, EOS_ID] for t in tgt])
        return {"src": src, "src_padding_mask": mask, "tgt_in": tgt_in, "tgt_out": tgt_out,
                "tgt_padding_mask": tgt_mask}  # fmt: skip

    def length(self, example: Utterance) -> int:
        """Frames plus target tokens (for batching by tokens)."""
        return len(example.audio) // self.front_end.hop + len(example.text) + 1

    def n_tokens(self, batch: Batch) -> int:
        """Real frames plus target tokens."""
        return self._objective.n_tokens(batch)

    # -- model ---------------------------------------------------------------------------
    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """A :class:`~qkv.models.WhisperConfig` sized to the tokenizer, ``max_len`` and 80
        mels (up to 30 s of audio), from :attr:`default_model` or a pretrained ``base``."""
        sizes: dict[str, Any] = {
            "vocab_size": self.tokenizer.vocab_size,
            "max_len": self.max_len + 1,
            "pad_token_id": PAD_ID,
            "n_mels": self.front_end.n_mels,
            "max_frames": MAX_FRAMES,
            "ctc_head": self.ctc_weight > 0,
        }
        return sized_config(self, "whisper", preset, self.default_model, sizes, overrides, base)

    # -- objective and metrics -----------------------------------------------------------
    def augment(self, batch: Batch) -> Batch:
        """Training-time augmentation (the trainer calls it on training batches only):
        SpecAugment's masks on the features, drawn from torch's RNG (so a resumed run
        masks exactly as an uninterrupted one); ``augment = False`` turns it off."""
        if self.spec_augment is None:
            return batch
        frames = batch["src_padding_mask"].sum(-1)
        return {**batch, "src": self.spec_augment.train()(batch["src"], frames)}

    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        """Teacher-forced cross entropy summed over the transcript tokens; with a CTC head
        and ``ctc_weight`` λ > 0, training minimises ``(1 - λ) CE + λ CTC`` (the CTC
        negative log-likelihood of each transcript, summed, the pad id as blank), while
        evaluation reports the cross entropy as ``loss`` and the CTC sum as ``ctc``."""
        if not (self.ctc_weight > 0 and has_ctc_head(model)):
            return self._objective.loss(model, batch, label_smoothing=label_smoothing)
        return hybrid_loss(model, batch, self.ctc_weight, label_smoothing=label_smoothing)

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        """:func:`~qkv.tasks.speech._asr_loss.hybrid_metrics`."""
        return hybrid_metrics(self._objective.metrics(loss_sum, n, logs), n, logs)

    def ctc_greedy(self, model: nn.Module, feats: Tensor, mask: Tensor) -> list[list[int]]:
        """The CTC head's best path (:func:`~qkv.tasks.speech._asr_decoding.ctc_greedy`)."""
        return ctc_greedy(model, feats, mask)

    @torch.no_grad()
    def transcribe(
        self,
        model: nn.Module,
        signals: Sequence[Any],
        *,
        batch_size: int = 32,
        progress: bool = False,
        ctc: bool = False,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Transcripts of mono 16 kHz signals with :func:`qkv.generation.generate`
        (greedy unless ``beam_size > 1``; with a CTC head, joint CTC/attention decoding;
        fused with :meth:`language_model` and :meth:`lexicon`; at the task's
        ``ctc_prefix_weight``, ``lm_weight`` and ``oov_penalty`` unless given), or the CTC
        head's best path (``ctc``), by length.

        Raises:
            TaskError: ``ctc`` or ``ctc_prefix_weight > 0`` on a model without a CTC head.
        """
        head = has_ctc_head(model)
        weight = generate_kwargs.pop("ctc_prefix_weight", self.ctc_prefix_weight if head else 0.0)
        if (ctc or weight > 0) and not head:
            what = "ctc" if ctc else f"ctc_prefix_weight {weight}"
            raise TaskError(f"task 'asr': {what} needs a CTC head (trained with ctc_weight 0)")
        lm_weight = generate_kwargs.pop("lm_weight", self.lm_weight)
        oov = generate_kwargs.pop("oov_penalty", None)  # None: the task's
        kw = {"bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": PAD_ID,
              "max_new_tokens": self.max_len + 1, "ctc_prefix_weight": weight,
              "lm_weight": lm_weight, **generate_kwargs}  # fmt: skip
        if lm_weight > 0 and not ctc:
            kw["lm"] = self.language_model(decoder_vocab(model))
            kw["lexicon"] = self.lexicon(decoder_vocab(model), oov)
        if kw.get("beam_size", 1) > 1:
            kw.setdefault("strategy", "beam")
        device = model_device(model)
        order = sorted(range(len(signals)), key=lambda i: len(signals[i]))
        out = [""] * len(signals)
        chunks = batched(order, batch_size)
        bar = tqdm(chunks, total=-(-len(order) // batch_size), desc="transcribe", leave=False,
                   disable=not progress)  # fmt: skip
        with evaluating(model):
            for chunk in bar:
                feats, mask = self.features([signals[i] for i in chunk])
                feats, mask = feats.to(device), mask.to(device)
                if ctc:
                    tokens = self.ctc_greedy(model, feats, mask)
                else:
                    tokens = generate(model, feats, padding_mask=mask, **kw).tokens
                for i, toks in zip(chunk, tokens):
                    out[i] = self.tokenizer.decode(toks)
        return out

    def evaluate(
        self,
        model: nn.Module,
        split: Split = "valid",
        *,
        batch_size: int = 32,
        limit: int | None = None,
        beam_size: int = 1,
        progress: bool = False,
        ctc_prefix_weight: float | None = None,
        lm_weight: float | None = None,
        oov_penalty: float | None = None,
    ) -> dict[str, float]:
        """Word and character error rates of the decoded transcripts, with the teacher-forced
        loss and the decoding speed; ``ctc_prefix_weight``, ``lm_weight`` and ``oov_penalty``
        override the task's decoding settings (:meth:`transcribe`).

        Returns:
            ``wer`` (the headline, 0-100, lower is better), ``cer``, ``loss`` (nats per
            target token), ``ppl``, ``audio_seconds`` (of the evaluated utterances),
            ``decode_seconds`` and ``rtf`` (real-time factor: decoding time / audio time);
            with a CTC head also ``ctc_loss`` and ``ctc_wer``/``ctc_cer`` of its greedy path.

        Raises:
            TaskError: the split is empty.
        """
        utts = self.examples(split)[:limit]
        if not utts:
            raise TaskError(f"task 'asr': split {split!r} has no examples to evaluate")
        total, n, logs = evaluate_sums(model, self, utts, batch_size=batch_size, progress=progress)
        start = time.perf_counter()
        joint = {k: v for k, v in (("ctc_prefix_weight", ctc_prefix_weight), ("lm_weight", lm_weight),
                                   ("oov_penalty", oov_penalty)) if v is not None}  # fmt: skip
        hyps = self.transcribe(
            model, [u.audio for u in utts], batch_size=batch_size, progress=progress,
            beam_size=beam_size, **joint,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        refs = [u.text for u in utts]
        audio_s = sum(u.seconds for u in utts)
        loss = total / max(n, 1)
        out = {
            "wer": metrics.word_error_rate(hyps, refs),
            "cer": metrics.char_error_rate(hyps, refs),
            "loss": loss,
            "ppl": metrics.perplexity(loss),
            "audio_seconds": audio_s,
            "decode_seconds": seconds,
            "rtf": seconds / audio_s,
        }
        if has_ctc_head(model):
            ctc_hyps = self.transcribe(model, [u.audio for u in utts], batch_size=batch_size,
                                       ctc=True)  # fmt: skip
            out["ctc_loss"] = logs.get("ctc", 0.0) / max(n, 1)
            out["ctc_wer"] = metrics.word_error_rate(ctc_hyps, refs)
            out["ctc_cer"] = metrics.char_error_rate(ctc_hyps, refs)
        return out

    def samples(self, model: nn.Module, k: int = 3) -> list[str]:
        """``k`` validation utterances: voice, reference and greedy transcript."""
        utts = self.examples("valid")[:k]
        hyps = self.transcribe(model, [u.audio for u in utts])
        return [f"[{u.voice}] {u.text!r}  ->  {h!r}" for u, h in zip(utts, hyps)]

    def read_input(self, source: str) -> Any:
        """An input signal: a sound file (:func:`qkv.data.audio.read_wav`) or ``SPLIT:N``,
        the ``N``-th utterance of a split.

        Raises:
            TaskError: a missing or unreadable file, one over 30 s (refused unread), or a bad SPLIT:N.
        """
        split, _, index = source.partition(":")
        if split in SPLITS and index.isdigit():
            utts = self.examples(split)  # type: ignore[arg-type]
            if int(index) >= len(utts):
                raise TaskError(f"{source}: split {split!r} has {len(utts)} utterances")
            return utts[int(index)].audio
        if not os.path.lexists(source):
            raise TaskError(f"input {source!r} is neither a sound file nor SPLIT:N")
        x = audio.read_wav(source, max_seconds=MAX_FRAMES * self.front_end.hop / SAMPLE_RATE)
        if len(x) // self.front_end.hop > MAX_FRAMES:
            raise TaskError(f"{source}: {len(x) / SAMPLE_RATE:.1f} s is longer than 30 s")
        return x

    def pictures(
        self,
        model: nn.Module,
        source: str,
        out: str | Path,
        *,
        target: str | None = None,
        question: str | None = None,
        png_dir: str | Path | None = None,
        title: str | None = None,
    ) -> Path:
        """The cross-attention alignment of the transcript to the sound (see :meth:`Task.pictures`)."""
        return report_for_speech(
            model, self, source, out, target=target, png_dir=png_dir, title=title
        )

    def predict(self, model: nn.Module, inputs: Sequence[str], **generate_kwargs: Any) -> list[str]:
        """Transcribe sound files (or ``SPLIT:N`` utterances)."""
        return self.transcribe(model, [self.read_input(s) for s in inputs], **generate_kwargs)

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write ``task.json``, ``tokenizer.json`` and the n-gram's text (``lm_corpus``)."""
        write_task_file(self, Path(directory), {"tokenizer": self.tokenizer_kind})
        self.tokenizer.save(directory)
        save_transcripts(directory, self._lm_text())

    def load(self, directory: Path) -> None:
        """Read the tokenizer written by :meth:`save` (no audio is made).

        Raises:
            TaskError: a missing or damaged tokenizer file (named).
        """
        try:
            self._tok = Tokenizer.load(directory)
        except (FileNotFoundError, TokenizerFileError) as e:
            raise TaskError(f"task 'asr': {e}") from e
        self._transcripts = load_transcripts(directory)


__all__ = ["MAX_FRAMES", "ASRTask", "has_ctc_head"]
