"""``translate``: translation on your own sentence pairs, on Debian's translated package
descriptions (many languages into English; the default), or German -> English from the Ding
dictionary.

* ``--data pairs.tsv``: one ``source<TAB>target`` pair per line (UTF-8; blank lines are
  skipped). A line without exactly one tab is an error naming the file and line.
* ``--corpus debian --pair de-en`` (the default without ``--data``): the package
  descriptions Debian's translators wrote
  (:mod:`qkv.data.debian_parallel`; ``make data`` fetches German, French and Italian):
  synopses, paragraphs and, where both sides split alike, sentences. ``--pair de,fr,it-en``
  trains one model on several languages into English; each language's valid and test
  pairs are also scored on their own (``bleu_de``, ``bleu_fr``, ...). Splits follow the
  source package, so no package is in two splits.
* ``--corpus ding``: the ~16,000 German -> English example
  sentences of the Debian package ``trans-de-en`` (``/usr/share/trans/de-en``, parsed by
  :mod:`qkv.data.ding`). ``--corpus debian,ding`` mixes both (``de-en`` only), and scores
  Ding's held-out sentences on their own too (``bleu_ding``).

Ding and ``--data`` pairs are grouped by source sentence; the distinct sources are shuffled
with ``seed`` and split into test, valid and train (so a source never appears in two splits;
its alternative translations all serve as references). ``n_valid``/``n_test`` cap each
corpus's (and each language's) held-out pairs. Tokens are a shared byte-level BPE (default
4,000 ids) trained on the training split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from qkv.data import debian_parallel, ding, metrics
from qkv.data.debian import DebianCorpusError
from qkv.tasks._common import check_positive, read_text_file
from qkv.tasks.base import TaskError, split_sizes
from qkv.tasks.options import DataOption, SeedOption, SizeOptions, TextOptions, option
from qkv.tasks.text._seq2seq import Pair, Seq2SeqTask, SharedVocabOption

#: The longest side of a ``--data`` line pair, in characters: longer ones are skipped (and
#: counted in the run's log). Sentences are far shorter (the default ``max_len`` keeps 64
#: tokens of each side), and training the tokenizer on one line costs the square of its
#: length: 2 x 120,000 characters took 16 s, 2 x 1 MB six minutes.
MAX_LINE_CHARS = 2_000


def read_tsv(path: str | Path) -> list[tuple[str, str]]:
    """Read ``source<TAB>target`` lines.

    Raises:
        TaskError: a missing or empty file (naming the path), or a line without exactly one
            tab or with an empty side (naming the path and line number).
    """
    text = read_text_file(path, "translation data")
    pairs = []
    for i, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise TaskError(
                f"{path}, line {i}: expected 'source<TAB>target' (one tab), found "
                f"{len(cols) - 1} tabs in {line[:80]!r}"
            )
        src, tgt = cols[0].strip(), cols[1].strip()
        if not src or not tgt:
            side = "source" if not src else "target"
            raise TaskError(f"{path}, line {i}: empty {side} in {line[:80]!r}")
        pairs.append((src, tgt))
    if not pairs:
        raise TaskError(f"translation data file {path} has no sentence pairs")
    return pairs


class TranslateTask(Seq2SeqTask):
    """Sentence-pair translation from a TSV file, Debian's translated package descriptions
    or the Ding German-English dictionary.

    Options: ``data`` (TSV path), ``seed`` (split), ``n_train``/``n_valid``/``n_test``
    (defaults: all / 500 / 500, at most 5% each for small data), ``max_len`` (default 64
    tokens, longer sentences are truncated), ``tokenizer`` (default ``"bpe"``),
    ``vocab_size`` (default 4,000), ``shared_vocab`` (default True),
    ``reverse`` (swap source and target, e.g. English -> German),
    ``dictionary`` (with the Ding dictionary: add this many of its word and phrase
    pairs to the training split, the ones sharing words with the training sentences first;
    never one whose side is a valid or test sentence; 0 = none), ``corpus`` and ``pair``
    (without ``data``: see the module docstring).
    """

    @dataclass
    class Options(SharedVocabOption, TextOptions, SizeOptions, SeedOption, DataOption):
        """translate's options."""

        data: str | None = option(
            None,
            "a TSV file of source<TAB>target pairs",
            shown="--corpus: Debian's German-English package descriptions",
        )
        reverse: bool = option(False, "swap the two sides (Ding: English -> German)")
        dictionary: int = option(
            0,
            "the Ding data only: add N of the dictionary's word and phrase pairs to the "
            "training data",
        )
        corpus: str = option(
            "debian",
            "without --data: ding (trans-de-en's sentences), debian (Debian's translated "
            "package descriptions) or both, comma-separated",
        )
        pair: str = option(
            "de-en",
            "source and target languages: de-en, or several sources into English "
            "(debian): de,fr,it-en",
        )

    options: Options
    groups: dict[str, str]  # held-out source -> its language or corpus (several only)
    measured = (
        "bleu is sacreBLEU's corpus BLEU (0-100: the modified 4-gram precision of the "
        "outputs against the references, with a brevity penalty), here on the 500 held-out "
        "test pairs of packages never seen in training; chrf is sacreBLEU's character "
        "F-score. Debian de-en, the default recipe, --max-time 30m on 2 threads alone "
        "(2026-12-07; docs/recipes.md): test BLEU 22.4 greedy, 23.8 with --beam-size 4 "
        "(chrF 49.9 / 50.9). Three test pairs (source | reference | output, beams of 4):"
        "\n\nDie Werkzeuge können zwischen verschiedenen Formaten konvertieren, mehrere "
        "Bilder zu einem verbinden, Kommentare hinzufügen, Bilder deformieren, Thumbnails "
        "erzeugen oder die Farbpalette verändern. | They can convert between formats, "
        "concatenate several images into one, annotate and distort them, create thumbnails "
        "or manipulate the colormap. | The tools can convert between different formats, "
        "multiple images to a combined pictures, deformed images, deforming, thumbnails or "
        "the color."
        "\n\nDer Daemon führt die notwendige Initialisierung des Geräts durch und steuert "
        "die LEDs entsprechend den verschiedenen Fehlerzuständen. | This daemon provides the "
        "necessary initialisation to the device and also stimulates the LEDs depending on "
        "various fault conditions. | The daemon adds the daemon, and control the labor of "
        "the LED corresponding the same error."
        "\n\nNachträglich säubert es den Verzeichnis-Baum und korrigiert Dateirechte sowie "
        "Zeitstempel der gepatchten Dateien. | Afterwards it will clean up the directory "
        "tree plus fix up the permissions and even the timestamps on the patched files. | "
        "Note precision the directory tree, and catches the file, and catches, as well as "
        "the files."
    )
    name = "translate"
    default_max_len = 64
    default_tokenizer = "bpe"
    default_vocab_size = 4000
    default_eval_sizes: ClassVar[dict[str, int]] = {"valid": 500, "test": 500}
    # Recipe, chosen by measurement (docs/recipes.md; valid BLEU and loss after 10 min on
    # one thread). On the Ding sentences a CPU run is limited by steps, so the smaller model
    # wins at equal time (d 128: 988 steps, loss 4.24; d 192: 644 steps, 4.43; d 256 with
    # the Noam schedule: 245 steps, 4.92); batches by tokens waste less on padding; AdamW
    # with cosine decay. The dictionary's word pairs (--dictionary) cost sentence steps
    # and lost at this budget (loss 5.05 against 4.43). On Debian's de-en descriptions,
    # dropout 0.1 and lr 3e-3 beat 0.2 and 2e-3 (valid BLEU 10.5 against 7.4); lr 5e-3
    # (loss 4.79 against 4.41 at steps 1,000-1,200) and 8,000 BPE ids (924 steps, BLEU 6.0)
    # lost.
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 128,
        "n_heads": 4,
        "d_ff": 512,
        "n_encoder_layers": 3,
        "n_decoder_layers": 3,
        "dropout": 0.1,
        "norm_placement": "pre",
    }
    recipe: ClassVar[dict[str, Any]] = {
        "batch_tokens": 2048,
        "optimizer": "adamw",
        "lr": 3e-3,
        "schedule": "cosine",
        "warmup": 200,
        "weight_decay": 0.01,
    }

    def corpora(self) -> tuple[list[str], list[str]]:
        """The corpora (``["ding"]``, ``["debian"]`` or both) and source languages asked for.

        Raises:
            TaskError: an unknown corpus, a malformed pair, or a pair a corpus lacks.
        """
        corpora = [c.strip() for c in self.options.corpus.split(",")]
        if len(set(corpora)) < len(corpora) or not set(corpora) <= {"ding", "debian"}:
            raise TaskError(
                f"corpus must be ding, debian or both comma-separated, got {self.options.corpus!r}"
            )
        src, sep, tgt = self.options.pair.rpartition("-")
        langs = [x.strip() for x in src.split(",")] if sep else []
        try:
            langs = [debian_parallel.check_lang(x) for x in langs]
        except ValueError:
            langs = []
        if not langs or tgt != "en" or "en" in langs or len(set(langs)) < len(langs):
            raise TaskError(
                f"pair must be SOURCE-en with one or more comma-separated source languages "
                f"(de-en, de,fr,it-en), got {self.options.pair!r}"
            )
        if "ding" in corpora and langs != ["de"]:
            raise TaskError(
                f"corpus ding is German -> English: pair de-en, not {self.options.pair!r}"
            )
        return corpora, langs

    def read_pairs(self) -> list[tuple[str, str]]:
        """All pairs of ``--data`` or of the Ding sentences, in file order (reversed if asked).

        Raises:
            TaskError: unreadable data, or no ``--data`` and no ``trans-de-en`` package.
        """
        if self.options.data is not None:
            pairs = read_tsv(self.options.data)
            # a sentence pair is short: a longer line is a document that max_len would cut
            # anyway, after the tokenizer's training grew with the square of its length
            kept = [p for p in pairs if max(map(len, p)) <= MAX_LINE_CHARS]
            self.long_lines = len(pairs) - len(kept)
            if not kept:
                raise TaskError(
                    f"{self.options.data}: every line pair has a side longer than "
                    f"{MAX_LINE_CHARS:,} characters; translation reads sentence pairs"
                )
            pairs = kept
        else:
            if not ding.DING_PATH.is_file():
                raise TaskError(
                    f"task 'translate' reads the German-English dictionary "
                    f"{ding.DING_PATH}, which is missing: `apt-get install trans-de-en`, or "
                    f"use --corpus debian, or --data pairs.tsv (source<TAB>target per line)"
                )
            pairs = ding.read_ding(ding.DING_PATH)
            if not pairs:
                raise TaskError(f"no sentence pairs found in {ding.DING_PATH}")
        if self.options.reverse:
            pairs = [(t, s) for s, t in pairs]
        return pairs

    def data_note(self) -> str | None:
        """How many line pairs of ``--data`` were skipped for their length."""
        if self.options.data is None:
            return None
        self.examples("train")  # reads the data (once)
        n = getattr(self, "long_lines", 0)
        if not n:
            return None
        return (
            f"skipped {n:,} line pair(s) of {self.options.data} with a side longer than "
            f"{MAX_LINE_CHARS:,} characters (sentence pairs, not documents)"
        )

    def _make_splits(self) -> dict[str, list[Pair]]:
        self.groups = {}
        if self.options.data is not None:
            return self._shuffled_splits(self.read_pairs(), f"translation data {self.options.data}")
        corpora, langs = self.corpora()
        out: dict[str, list[Pair]] = {"train": [], "valid": [], "test": []}
        if "debian" in corpora:
            for lang in langs:
                for split, pairs in self._debian_splits(lang).items():
                    out[split] += pairs
        if "ding" in corpora:
            ding_splits = self._shuffled_splits(
                self.read_pairs(), f"translation data {ding.DING_PATH}"
            )
            for split in ("valid", "test"):
                self.groups.update(dict.fromkeys((p.src for p in ding_splits[split]), "ding"))
            for split, pairs in ding_splits.items():
                out[split] += pairs
        if len(set(self.groups.values())) < 2:
            self.groups = {}  # one corpus, one language: no per-group scores
        return out

    def _debian_splits(self, lang: str) -> dict[str, list[Pair]]:
        """One language's Debian pairs by split, capped by n_train (in corpus order) and
        n_valid/n_test (a seeded sample)."""
        try:
            corpus = debian_parallel.read_pairs(lang)
        except DebianCorpusError as e:
            raise TaskError(
                f"task 'translate' --corpus debian: {e}; or `make data`, or use --corpus ding "
                f"(apt-get install trans-de-en) or --data pairs.tsv"
            ) from None
        except ValueError as e:
            raise TaskError(f"task 'translate' --pair {self.options.pair}: {e}") from None
        seed = self.options.seed
        out: dict[str, list[Pair]] = {}
        for split in ("train", "valid", "test"):
            pairs = debian_parallel.split_pairs(corpus.pairs, split, seed=seed)  # type: ignore[arg-type]
            texts = [(p.source, p.target) for p in pairs]
            if self.options.reverse:
                texts = [(t, s) for s, t in texts]
            if split == "train" and self.options.n_train is not None:
                texts = texts[: self.options.n_train]
            if split != "train":
                cap = getattr(self.options, f"n_{split}")
                cap = self.default_eval_sizes[split] if cap is None else cap
                random.Random(seed).shuffle(texts)
                texts = texts[:cap]
                self.groups.update(dict.fromkeys((s for s, _ in texts), lang))
            out[split] = [Pair(s, t) for s, t in texts]
        if not out["train"]:
            raise TaskError(f"task 'translate': Debian has no {lang}-en training pairs")
        return out

    def _shuffled_splits(self, pairs: list[tuple[str, str]], what: str) -> dict[str, list[Pair]]:
        groups: dict[str, list[str]] = {}
        for s, t in pairs:
            if t not in groups.setdefault(s, []):
                groups[s].append(t)
        sources = list(groups)
        random.Random(self.options.seed).shuffle(sources)
        sizes = split_sizes(
            len(sources),
            self.options,
            valid=self.default_eval_sizes["valid"],
            test=self.default_eval_sizes["test"],
            what=what,
        )
        out: dict[str, list[Pair]] = {}
        start = 0
        for split in ("test", "valid", "train"):
            part = sources[start : start + sizes[split]]
            start += sizes[split]
            out[split] = [Pair(s, t) for s in part for t in groups[s]]
        out["train"] += self._dictionary_pairs(out)
        return out

    def _group_scores(
        self, sources: list[str], hyps: list[str], refs: list[list[str]]
    ) -> dict[str, float]:
        """BLEU and chrF of each language (and of Ding) on its own, when there are several."""
        if self._splits is None:
            self._splits = self._make_splits()
        if not self.groups:
            return {}
        out: dict[str, float] = {}
        for group in sorted(set(self.groups.values())):
            idx = [i for i, s in enumerate(sources) if self.groups.get(s) == group]
            if idx:
                h = [self._metric_text(hyps[i]) for i in idx]
                r = [[self._metric_text(x) for x in refs[i]] for i in idx]
                out[f"bleu_{group}"] = metrics.bleu(h, r)
                out[f"chrf_{group}"] = metrics.chrf(h, r)
        return out

    def _dictionary_pairs(self, splits: dict[str, list[Pair]]) -> list[Pair]:
        """Up to ``dictionary`` word/phrase pairs of the Ding dictionary for the
        training split: pairs whose German words occur in the training sentences first
        (they teach the vocabulary the sentences use), then the rest, each group in a seeded
        random order; none whose German or English side is a held-out sentence."""
        n = self.options.dictionary
        if not n:
            return []
        if self.options.data is not None:
            raise TaskError("dictionary adds Ding dictionary phrases: not with --data")
        check_positive(self.name, "dictionary", n)
        held = {x for split in ("valid", "test") for p in splits[split] for x in p}
        phrases = [p for p in ding.read_ding_phrases(ding.DING_PATH) if not held & set(p)]
        if self.options.reverse:
            phrases = [(t, s) for s, t in phrases]
        src_words = {w.lower() for p in splits["train"] for w in p.src.split()}
        rng = random.Random(self.options.seed + 1)
        rng.shuffle(phrases)
        related = [p for p in phrases if any(w.lower() in src_words for w in p[0].split())]
        others = [p for p in phrases if not any(w.lower() in src_words for w in p[0].split())]
        return [Pair(s, t) for s, t in (related + others)[:n]]


__all__ = ["MAX_LINE_CHARS", "TranslateTask", "read_tsv"]
