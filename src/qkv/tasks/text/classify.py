"""``classify``: text classification on your labelled texts, or Debian packages by section.

* ``--data texts.tsv``: one ``label<TAB>text`` line per example (UTF-8; blank lines are
  skipped; the text may itself hold tabs). A line without a tab, with an empty label or an
  empty text is an error naming the file and line; so is a file with a single class.
* ``--corpus debian`` (the default without ``--data``): the long descriptions of Debian's
  packages (synopsis and paragraphs, read at run time from ``/var/lib/apt/lists`` by
  :mod:`qkv.data.debian`) labelled by their ``Section``. The 20 most frequent sections are
  the classes; packages of the other sections are dropped (:meth:`TextClassifyTask.data_note`
  says how many).

Examples are grouped (Debian: by source package, so sibling binaries never straddle train
and test; a TSV file: by text, so a duplicated text never does) and the groups are shuffled
with ``seed`` and split into test, valid and train.

Tokens: a byte-level BPE (default 8,000 ids; or ``word``/``char``) trained on the training
split for a model from scratch; with ``--init-from-hf DIR`` the pretrained model's own
``tokenizer.json`` (WordPiece for BERT/MiniLM: lowercasing, ``[CLS] .. [SEP]``), which is
copied into every checkpoint. The encoder's classification head reads the mean of the
real tokens' final states (``pooling="mean"``), as sentence-transformers' models are
trained to be read.

Metrics: accuracy (0-100, the headline), macro-F1 (0-100, scikit-learn), loss; a per-class
report (:meth:`TextClassifyTask.report`) and a TF-IDF + logistic-regression baseline on the
same split (:func:`qkv.tasks.text.classify_baseline.tfidf_baseline`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from qkv.data import debian
from qkv.data.tokenizers import PAD_ID, Tokenizer, train_tokenizer
from qkv.interop import load_hf_tokenizer
from qkv.layers.mode import evaluating
from qkv.models import TransformerConfig
from qkv.tasks._classify import ClassifyTask
from qkv.tasks._common import (
    batched,
    check_choice,
    check_positive,
    model_device,
    pad_ids,
    read_task_file,
    read_text_file,
    sized_config,
    write_task_file,
)
from qkv.tasks.base import SPLITS, Split, TaskError, split_sizes
from qkv.tasks.options import DataOption, OptionsLike, SeedOption, SizeOptions, TextOptions, option
from qkv.tasks.text.classify_baseline import label_metrics, tfidf_baseline
from qkv.training.evaluate import to_device

CORPORA = ("debian",)
#: Classes of the Debian corpus: its most frequent sections.
N_SECTIONS = 20
TOKENIZERS = ("bpe", "word", "char", "hf")
#: ``tokenizer`` value of a task that reads a pretrained directory's ``tokenizer.json``.
HF_TOKENIZER = "hf"


@dataclass(frozen=True)
class LabelledText:
    """One example: its ``text``, its ``label`` and the ``group`` it is split with."""

    text: str
    label: str
    group: str


def read_labelled_tsv(path: str | Path) -> list[LabelledText]:
    """Read ``label<TAB>text`` lines (grouped by text).

    Raises:
        TaskError: a missing, non-UTF-8 or empty file (naming it), a line without a tab or
            with an empty label or text (naming the file and line), or fewer than 2 classes.
    """
    content = read_text_file(path, "classification data")
    out = []
    for i, line in enumerate(content.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        label, text = label.strip(), text.strip()
        if not tab:
            raise TaskError(
                f"{path}, line {i}: expected 'label<TAB>text', found no tab in {line[:80]!r}"
            )
        if not label or not text:
            side = "label" if not label else "text"
            raise TaskError(f"{path}, line {i}: empty {side} in {line[:80]!r}")
        out.append(LabelledText(text, label, text))
    labels = {r.label for r in out}
    if len(labels) < 2:
        raise TaskError(
            f"classification data file {path} has a single class {labels.pop()!r}: a "
            f"classifier needs at least 2"
        )
    return out


def top_labels(records: Sequence[LabelledText], k: int) -> tuple[list[LabelledText], int]:
    """The records of the ``k`` most frequent labels (ties by name) and how many were dropped."""
    counts = Counter(r.label for r in records)
    keep = {lab for lab, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]}
    kept = [r for r in records if r.label in keep]
    return kept, len(records) - len(kept)


class TextClassifyTask(ClassifyTask):
    """Text classification (see the module docstring).

    Options: ``data`` (TSV path), ``corpus`` (``"debian"``), ``seed`` (split),
    ``n_train``/``n_valid``/``n_test`` (defaults: the rest / 2,000 / 2,000, at most 5% each
    for small data), ``max_len`` (tokens per text, default 128; longer texts are cut),
    ``tokenizer`` (``"bpe"`` default, ``"word"``, ``"char"``; ``"hf"`` is set by
    :meth:`use_pretrained`), ``vocab_size`` (BPE/word, default 8,000).
    """

    @dataclass
    class Options(TextOptions, SizeOptions, SeedOption, DataOption):
        """classify's options."""

        data: str | None = option(None, "a text file of label<TAB>text lines", shown="the corpus")
        corpus: str | None = option(
            None,
            "a named corpus: debian (package descriptions by section); not with --data",
            choices=CORPORA,
            shown="debian",
        )

    options: Options
    name = "classify"
    default_max_len: ClassVar[int] = 128
    default_vocab_size: ClassVar[int] = 8000
    default_eval_size: ClassVar[int] = 2000
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 128,
        "n_heads": 4,
        "d_ff": 512,
        "n_layers": 2,
        "dropout": 0.1,
        "attn_dropout": 0.0,
        "norm_placement": "pre",
        "pos": "learned",
        "type_vocab_size": 0,
        "mlm_head": False,
        "pooler": False,
        "pooling": "mean",
        "embed_norm": False,
    }
    #: The head a pretrained encoder gets (``--init-from-hf``): the mean of the token states,
    #: as sentence-transformers reads all-MiniLM-L6-v2 (its pooler is never trained there).
    pretrained_head: ClassVar[dict[str, Any]] = {
        "pooling": "mean",
        "pooler": False,
        "mlm_head": False,
    }
    recipe: ClassVar[dict[str, Any]] = {
        "optimizer": "adamw",
        "lr": 1e-3,
        "schedule": "cosine",
        "warmup": 100,
        "weight_decay": 0.01,
        "batch_size": 32,
        "steps": 3000,
        "eval_every": 500,
        "eval_limit": 1000,
    }

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        o = self.options
        if o.data is not None and o.corpus is not None:
            raise TaskError(f"task 'classify': pass either data ({o.data}) or corpus, not both")
        check_choice(self.name, "corpus", o.corpus or "debian", CORPORA)
        self.tokenizer_kind = o.tokenizer or "bpe"
        check_choice(self.name, "tokenizer", self.tokenizer_kind, TOKENIZERS)
        self.max_len = o.max_len if o.max_len is not None else self.default_max_len
        check_positive(self.name, "max_len", self.max_len, minimum=2)
        self.vocab_size = o.vocab_size if o.vocab_size is not None else self.default_vocab_size
        check_positive(self.name, "vocab_size", self.vocab_size)
        for opt in ("n_train", "n_valid", "n_test"):
            if getattr(o, opt) is not None:
                check_positive(self.name, opt, getattr(o, opt), minimum=0)
        self.class_names: tuple[str, ...] = ()  # type: ignore[misc]  # from the data
        self.dropped = 0
        self._splits: dict[str, list[LabelledText]] | None = None
        self._tokenizer: Tokenizer | Any | None = None  # a qkv or a ``tokenizers`` tokenizer
        self._examples: dict[str, list[tuple[list[int], int]]] = {}

    def split_options(self) -> dict[str, Any]:
        """As :meth:`Task.split_options`, the corpus named even where it was the default
        (no ``--data``: ``debian``)."""
        out = super().split_options()
        if self.options.data is None:
            out["corpus"] = self.options.corpus or "debian"
        return out

    # -- data ----------------------------------------------------------------------------
    @property
    def source(self) -> str:
        """What the data is, for messages: the file or the corpus name."""
        return str(self.options.data) if self.options.data is not None else "corpus 'debian'"

    def read_records(self) -> list[LabelledText]:
        """Every example of the data source, with the classes chosen (Debian: the top 20
        sections; :attr:`dropped` counts the rest).

        Raises:
            TaskError: unreadable data, or no ``--data`` and no Debian package lists.
        """
        if self.options.data is not None:
            return read_labelled_tsv(self.options.data)
        records = debian_sections()
        kept, self.dropped = top_labels(records, N_SECTIONS)
        return kept

    def splits(self) -> dict[str, list[LabelledText]]:
        """The records of each split (groups shuffled with ``seed``: test, valid, train)."""
        if self._splits is None:
            records = self.read_records()
            groups: dict[str, list[LabelledText]] = {}
            for r in records:
                groups.setdefault(r.group, []).append(r)
            keys = sorted(groups)
            random.Random(self.options.seed).shuffle(keys)
            n = self.default_eval_size
            sizes = split_sizes(len(keys), self.options, valid=n, test=n, what=self.source)
            out, start = {}, 0
            for split in ("test", "valid", "train"):
                part = keys[start : start + sizes[split]]
                start += sizes[split]
                out[split] = [r for k in part for r in groups[k]]
            if not self.class_names:
                self.class_names = tuple(sorted({r.label for r in records}))
            self._splits = out
        return self._splits

    def data_note(self) -> str | None:
        """What the data choice left out, for the run's log (Debian: the smaller sections)."""
        if self.options.data is not None:
            return None
        self.splits()
        return (
            f"classify: Debian's {N_SECTIONS} most frequent sections are the classes; "
            f"{self.dropped:,} packages of other sections dropped"
        )

    @property
    def tokenizer(self) -> Tokenizer | Any:
        """The tokenizer: trained on the training texts on first use, loaded from a
        checkpoint, or a pretrained directory's (:meth:`use_pretrained`)."""
        if self._tokenizer is None:
            if self.tokenizer_kind == HF_TOKENIZER:
                raise TaskError(
                    "task 'classify': tokenizer 'hf' is a pretrained model's: it comes with "
                    "--init-from-hf DIR"
                )
            texts = [r.text for r in self.splits()["train"]]
            vocab = None if self.tokenizer_kind == "char" else self.vocab_size
            try:
                self._tokenizer = train_tokenizer(self.tokenizer_kind, texts, vocab_size=vocab)
            except ValueError as e:
                raise TaskError(f"task 'classify': {e}") from e
            self._examples.clear()
        return self._tokenizer

    def use_pretrained(self, directory: str | Path) -> None:
        """Read texts with the tokenizer of a pretrained model directory (its
        ``tokenizer.json``: WordPiece and lowercasing for BERT and MiniLM, with its
        ``[CLS]``/``[SEP]``), cutting each text to ``max_len`` tokens, specials included.

        Raises:
            TaskError: the directory has no readable ``tokenizer.json``.
        """
        try:
            tok = load_hf_tokenizer(directory)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise TaskError(f"task 'classify': {e}") from e
        self._set_hf_tokenizer(tok)

    def _set_hf_tokenizer(self, tok: Any) -> None:
        tok.no_padding()
        tok.enable_truncation(self.max_len)
        self._tokenizer, self.tokenizer_kind = tok, HF_TOKENIZER
        self.options.tokenizer = HF_TOKENIZER  # saved in task.json: the checkpoint's own file
        self._examples.clear()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, at most ``max_len``."""
        tok = self.tokenizer
        if self.tokenizer_kind == HF_TOKENIZER:
            return [list(e.ids) for e in tok.encode_batch(list(texts))]
        return [ids[: self.max_len] for ids in tok.encode_batch(list(texts))]

    def examples(self, split: Split) -> list[tuple[list[int], int]]:
        """``(token ids, class index)`` examples of a split."""
        check_choice(self.name, "split", split, SPLITS)
        if split not in self._examples:
            _ = self.tokenizer  # training it clears the cache: do that first
            records = self.splits()[split]
            labels = self._class_ids(records)
            ids = self.encode([r.text for r in records])
            self._examples[split] = list(zip(ids, labels))
        return self._examples[split]

    def _class_ids(self, records: Sequence[LabelledText]) -> list[int]:
        """The class index of each record's label.

        Raises:
            TaskError: a label the model has no class for (the data file gained it after
                the checkpoint was trained), named with the file.
        """
        index = {c: i for i, c in enumerate(self.class_names)}
        unknown = sorted({r.label for r in records} - index.keys())
        if unknown:
            raise TaskError(
                f"{self.options.data or self.source}: label {unknown[0]!r} is not one of the "
                f"model's {len(index)} classes ({', '.join(self.class_names)})"
                + (f" ({len(unknown) - 1} more unknown)" if len(unknown) > 1 else "")
                + "; the data gained it after the model was trained: train a new model"
            )
        return [index[r.label] for r in records]

    def collate(self, examples: Sequence[tuple[list[int], int]]) -> dict[str, Tensor]:
        """``inputs`` ``(b, s)`` ids, ``padding_mask`` ``(b, s)`` (True = real), ``labels``."""
        ids, mask = pad_ids([x for x, _ in examples], pad=PAD_ID)
        labels = torch.tensor([y for _, y in examples], dtype=torch.long)
        return {"inputs": ids, "padding_mask": mask, "labels": labels}

    # -- model ---------------------------------------------------------------------------
    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """An :class:`~qkv.models.EncoderConfig` classifier sized to the tokenizer and the
        classes; on a pretrained ``base``, its architecture with :attr:`pretrained_head`."""
        self.splits()
        sizes: dict[str, Any] = {
            "vocab_size": _vocab_size(self.tokenizer),
            "max_len": self.max_len,
            "n_classes": len(self.class_names),
        }
        if self.tokenizer_kind != HF_TOKENIZER:
            sizes["pad_token_id"] = PAD_ID
        if base is not None:
            overrides = {**self.pretrained_head, **overrides}
        return sized_config(self, "encoder", preset, self.default_model, sizes, overrides, base)

    # -- evaluation ----------------------------------------------------------------------
    def predictions(
        self, model: nn.Module, split: Split, *, batch_size: int = 64, limit: int | None = None
    ) -> tuple[list[int], list[int], float]:
        """``(true classes, predicted classes, summed cross entropy)`` on a split."""
        data = self.examples(split)[:limit]
        if not data:
            raise TaskError(f"task 'classify': split {split!r} has no examples to evaluate")
        true, pred, loss = [], [], 0.0
        device = model_device(model)
        with evaluating(model):
            for chunk in batched(data, batch_size):
                batch = to_device(self.collate(chunk), device)
                logits = self.logits(model, batch).float()  # (b, n_classes)
                loss += float(nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
                pred += logits.argmax(-1).tolist()
                true += batch["labels"].tolist()
        return true, pred, loss

    def evaluate(
        self,
        model: nn.Module,
        split: Split = "valid",
        *,
        batch_size: int = 64,
        limit: int | None = None,
        beam_size: int = 1,
        progress: bool = False,
    ) -> dict[str, float]:
        """Accuracy (the headline), macro-F1 (both 0-100, scikit-learn) and the mean cross
        entropy on (the first ``limit`` examples of) a split. ``beam_size`` and ``progress``
        are ignored."""
        true, pred, loss = self.predictions(model, split, batch_size=batch_size, limit=limit)
        return {**label_metrics(true, pred), "loss": loss / len(true)}

    def report(self, model: nn.Module, split: Split = "test", *, batch_size: int = 64) -> str:
        """scikit-learn's per-class precision, recall and F1 on a split, as text."""
        from sklearn.metrics import classification_report

        true, pred, _ = self.predictions(model, split, batch_size=batch_size)
        return str(
            classification_report(
                true,
                pred,
                labels=list(range(len(self.class_names))),
                target_names=list(self.class_names),
                zero_division=0,
            )
        )

    def baseline(self, split: Split = "test", *, limit: int | None = None) -> dict[str, float]:
        """The TF-IDF + logistic-regression baseline trained on the training split, scored
        on (the first ``limit`` texts of) ``split``
        (:func:`~qkv.tasks.text.classify_baseline.tfidf_baseline`)."""
        s = self.splits()
        train, test = s["train"], s[split][:limit]
        return tfidf_baseline(
            [r.text for r in train],
            self._class_ids(train),
            [r.text for r in test],
            self._class_ids(test),
        )

    def samples(self, model: nn.Module, k: int = 3) -> list[str]:
        """Up to ``k`` misclassified valid texts: what the model said, what they are."""
        records = self.splits()["valid"][:256]
        true, pred, _ = self.predictions(model, "valid", limit=256)
        wrong = [i for i, (y, p) in enumerate(zip(true, pred)) if y != p][:k]
        return [
            f"predicted {self.class_names[pred[i]]!r}, is {self.class_names[true[i]]!r}: "
            f"{records[i].text[:120]!r}"
            for i in wrong
        ] or [f"the first {len(true)} valid texts are all classified right"]

    def predict(self, model: nn.Module, inputs: Sequence[str], **_: Any) -> list[str]:
        """The top 3 classes of each text with their probabilities (``"net 0.81, ..."``)."""
        data = [(ids, 0) for ids in self.encode(inputs)]
        return [
            ", ".join(f"{name} {prob:.2f}" for name, prob in top)
            for top in self.top_classes(model, data, k=3)
        ]

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write ``task.json`` (with the class names) and the tokenizer."""
        directory = Path(directory)
        state = {"class_names": list(self.class_names), "max_len": self.max_len}
        write_task_file(self, directory, state)
        if self.tokenizer_kind == HF_TOKENIZER:
            self.tokenizer.save(str(directory / "tokenizer.json"))
        else:
            self.tokenizer.save(directory)

    def load(self, directory: Path) -> None:
        """Read the class names and the tokenizer written by :meth:`save`."""
        directory = Path(directory)
        names = read_task_file(directory)["state"].get("class_names")
        if not (
            isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)
        ):
            raise TaskError(
                f"{directory / 'task.json'}: 'class_names' must be 2+ strings, got {names!r}"
            )
        self.class_names = tuple(names)
        try:
            if self.tokenizer_kind == HF_TOKENIZER:
                self._set_hf_tokenizer(load_hf_tokenizer(directory))
            else:
                self._tokenizer = Tokenizer.load(directory)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise TaskError(f"task 'classify': {e}") from e
        self._examples.clear()


def debian_sections() -> list[LabelledText]:
    """Debian's package descriptions (:func:`qkv.data.debian.read_corpus`) as examples: the
    synopsis and the long description as one text, labelled by section, grouped by source
    package.

    Raises:
        TaskError: no English package lists (the message says how to fetch them).
    """
    try:
        records = debian.read_corpus()
    except debian.DebianCorpusError as e:
        raise TaskError(f"task 'classify' reads Debian's package descriptions: {e}") from e
    return [LabelledText(f"{r.synopsis}. {r.text}", r.section, r.source) for r in records]


def _vocab_size(tok: Tokenizer | Any) -> int:
    return tok.vocab_size if isinstance(tok, Tokenizer) else int(tok.get_vocab_size())


__all__ = [
    "CORPORA",
    "N_SECTIONS",
    "LabelledText",
    "TextClassifyTask",
    "read_labelled_tsv",
    "top_labels",
]
