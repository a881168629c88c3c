"""``text2text``: one T5-shaped model, several tasks, text in and text out (Raffel et al. 2020).

Every example is a pair of strings; the task is named by a prefix of the input (T5, sec. 2.4)::

    summarize: <a Debian package's long description>      ->  its one-line synopsis
    translate German to English: <a German sentence>       ->  its English translation
    classify: <a Debian package's long description>       ->  its section (libs, net, ...)

* no data: the Debian package descriptions (:mod:`qkv.data.debian`, split by a seeded hash of
  the *source package*) for ``summarize`` and ``classify`` (the 20 most frequent sections
  of the corpus are the classes, the other packages are left out of ``classify``), and the
  German -> English pairs of the ``translate`` task's ``corpus`` (default ``"debian"``: the
  same packages' German descriptions, split by the same seeded hash of the source package,
  so no package of a held-out split is trained on by any task; ``"ding"``: the Ding
  dictionary's sentences), split exactly as ``translate`` splits them
  (:class:`~qkv.tasks.text.translate.TranslateTask`, same seed, same held-out pairs).
* ``--data mix.tsv``: ``PREFIX: input<TAB>target`` lines with the prefixes above; each task's
  lines are split into train/valid/test on their own (seeded).

``tasks`` restricts the mixture (``"summarize"``, or ``"summarize,translate"``): the
single-task baselines are this same task with one entry, so that the multitask model and its
baselines share the model, the recipe and the held-out examples, and differ only in what
they are trained on. Each task's held-out examples do not depend on the mixture.

**Mixing** (T5, sec. 3.5.2): examples-proportional with an artificial limit ``K``
(``mix_cap``, default 2**15): task ``m`` with ``e_m`` training examples is drawn
with rate ``min(e_m, K) / sum_n min(e_n, K)``. One epoch of the training split holds every
example of the task that the cap limits most once and the others repeated (whole copies,
then a seeded sample) to reach their rate, so no example is dropped. ``mix_cap=0`` is pure
examples-proportional mixing; a cap at or below the smallest task is equal mixing.

**Evaluation** decodes the held-out inputs of all tasks in mixed batches and scores each
output against its own task's references, routed by the prefix: ``summarize_rougeL`` (and
ROUGE-1/2, rouge-score), ``translate_bleu`` and ``translate_chrf`` (sacrebleu; the
alternative translations of a sentence are all references), ``classify_accuracy`` (exact
match with the section name; an answer that is no section name counts wrong, and
``classify_invalid`` is their share), plus each task's teacher-forced loss. The headline
``score`` is the mean of the tasks' headline metrics (ROUGE-L, BLEU, accuracy; 0-100). The
held-out splits interleave the tasks, so ``--eval-limit N`` takes about ``N / tasks`` of each.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from qkv.data import debian, metrics
from qkv.data.tokenizers import Tokenizer
from qkv.layers.mode import evaluating
from qkv.models import TransformerConfig
from qkv.tasks._common import check_positive, sized_config
from qkv.tasks.base import SPLITS, Split, TaskError, split_sizes
from qkv.tasks.options import (
    DataOption,
    OptionsLike,
    SeedOption,
    SizeOptions,
    TextOptions,
    option,
)
from qkv.tasks.text._seq2seq import Pair, Seq2SeqTask
from qkv.tasks.text._text2text_data import (
    PREFIXES,
    TASK_NAMES,
    by_source,
    cap_sources,
    interleave,
    mix,
    parse_tasks,
    read_mixture_tsv,
    task_of,
)
from qkv.tasks.text.translate import TranslateTask
from qkv.training.evaluate import evaluate_sums
from qkv.training.objectives import Seq2SeqObjective

#: The default mixture: every task.
ALL_TASKS = ",".join(TASK_NAMES)
#: Each task's headline metric (its key in :meth:`Text2TextTask.evaluate` is ``task_metric``).
HEADLINES: dict[str, str] = {
    "summarize": "rougeL",
    "translate": "bleu",
    "classify": "accuracy",
}
#: Classes of ``classify`` on the Debian corpus: its most frequent sections.
N_SECTIONS = 20
#: Values of ``corpus``: the translate task's corpora of German -> English pairs.
CORPORA: tuple[str, ...] = ("debian", "ding", "debian,ding")
#: Values of ``loss_per``: what the training loss averages over.
LOSS_PER: tuple[str, ...] = ("token", "example")
#: Default ``mix_cap`` (``K`` of examples-proportional mixing).
MIX_CAP = 2**15
#: Characters of an input shown in a sample line.
SAMPLE_CHARS = 100


class Text2TextTask(Seq2SeqTask):
    """Several text-to-text tasks at once, named by input prefixes, on one T5-shaped model.

    Options: ``data`` (a TSV of ``PREFIX: input<TAB>target``), ``seed`` (splits, mixing),
    ``n_train`` / ``n_valid`` / ``n_test`` (per task; defaults all / 200 / 500), ``max_len``
    (default 64 tokens), ``tokenizer`` (default ``"bpe"``), ``vocab_size`` (default 4,000;
    docs/recipes.md), ``tasks`` (the mixture, default all three), ``mix_cap`` (``K``,
    default 2**15; 0: no cap), ``corpus`` (translate's data: ``debian`` or ``ding``),
    ``loss_per`` (``token`` or ``example``: what the training loss averages over).
    """

    @dataclass
    class Options(TextOptions, SizeOptions, SeedOption, DataOption):
        """text2text's options (one tokenizer for every task: no ``shared_vocab``)."""

        data: str | None = option(
            None,
            "a TSV file of 'PREFIX: input<TAB>target' lines (prefixes: summarize:, ...)",
            shown="Debian's descriptions, their German translations and sections",
        )
        tasks: str = option(
            ALL_TASKS,
            "the tasks of the mixture, comma-separated, among summarize, translate and "
            "classify (one name: its single-task baseline)",
        )
        mix_cap: int = option(
            MIX_CAP,
            "examples-proportional mixing with each task's size capped at K (T5, sec. "
            "3.5.2); 0: no cap",
        )
        loss_per: str = option(
            "token",
            "what the training loss averages over: token (every target token counts once, "
            "so a task with long targets outweighs one with one-word labels) or example "
            "(each target's mean, every example counting once); evaluation is per token",
        )
        corpus: str = option(
            "debian",
            "without --data, the translate task's pairs: debian (Debian's German package "
            "descriptions, the other tasks' domain) or ding (trans-de-en's sentences)",
        )

    options: Options
    name = "text2text"
    headline = "score"
    default_max_len = 64
    default_tokenizer = "bpe"
    default_vocab_size = 4000
    default_eval_sizes: ClassVar[dict[str, int]] = {"valid": 200, "test": 500}
    #: The model: the ``t5-micro`` preset (T5's shape at the width and depth of the
    #: ``summarize`` task's model), sized to the vocabulary, in batches of at most 2,048
    #: tokens (translate's): 0.60 s a step on one quiet thread, where ``t5-mini`` with 16,000
    #: ids at 128 tokens and batches of 64 took 12.3 s (docs/recipes.md).
    default_preset: ClassVar[str] = "t5-micro"
    recipe: ClassVar[dict[str, Any]] = {
        "optimizer": "adamw",
        "lr": 1e-3,
        "schedule": "cosine",
        "warmup": 300,
        "weight_decay": 0.01,
        "batch_size": 64,
        "batch_tokens": 2048,
        "label_smoothing": 0.1,
        "eval_every": 1000,
        "eval_limit": 300,
    }

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        self.tasks = parse_tasks(self.options.tasks)
        cap = self.options.mix_cap
        check_positive(self.name, "mix_cap", cap, minimum=0)
        self.mix_cap: int | None = cap or None
        if self.options.corpus not in CORPORA:
            raise TaskError(
                f"task 'text2text': corpus must be one of {', '.join(CORPORA)}, "
                f"got {self.options.corpus!r}"
            )
        if self.options.loss_per not in LOSS_PER:
            raise TaskError(
                f"task 'text2text': loss_per must be one of {', '.join(LOSS_PER)}, "
                f"got {self.options.loss_per!r}"
            )
        self._objective = Seq2SeqObjective(per_example=self.options.loss_per == "example")
        self.rates: dict[str, float] = {}
        self._by_task: dict[str, dict[str, list[Pair]]] | None = None

    def split_options(self) -> dict[str, Any]:
        """As :meth:`Task.split_options`, without the mixture (``tasks``, ``mix_cap``): a
        task's held-out examples do not depend on it, so a multitask run and its single-task
        baselines compare in one table (nor on ``loss_per``, which only trains)."""
        out = super().split_options()
        return {k: v for k, v in out.items() if k not in ("tasks", "mix_cap", "loss_per")}

    # -- data ----------------------------------------------------------------------------
    def task_examples(self, split: Split) -> dict[str, list[Pair]]:
        """Each task's examples of a split, before mixing (held-out ones as scored).

        Raises:
            TaskError: unreadable data, or a task of the mixture without examples.
        """
        if self._by_task is None:
            self._by_task = self._read_tasks()
        return {t: self._by_task[t][split] for t in self.tasks}

    def _read_tasks(self) -> dict[str, dict[str, list[Pair]]]:
        o = self.options
        if o.data is not None:
            by_task = self._split_user_data(read_mixture_tsv(o.data))
        else:
            by_task = self._builtin()
        caps = {"train": o.n_train, "valid": o.n_valid, "test": o.n_test}
        for t in self.tasks:
            if not by_task[t]["train"]:
                raise TaskError(f"task 'text2text': no training examples for {t!r}")
            for split in SPLITS:
                cap = caps[split] if caps[split] is not None else self.default_eval_sizes.get(split)
                by_task[t][split] = cap_sources(by_task[t][split], cap)
        return by_task

    def _split_user_data(self, pairs: dict[str, list[Pair]]) -> dict[str, dict[str, list[Pair]]]:
        out: dict[str, dict[str, list[Pair]]] = {}
        for t in self.tasks:
            runs = by_source(sorted(pairs[t], key=lambda p: p.src))
            random.Random(f"{self.options.seed}:{t}").shuffle(runs)
            what = f"text2text data {self.options.data} ({t})"
            sizes = split_sizes(len(runs), self.options, valid=200, test=500, what=what)
            start, out[t] = 0, {}
            for split in ("test", "valid", "train"):
                out[t][split] = [p for r in runs[start : start + sizes[split]] for p in r]
                start += sizes[split]
        return out

    def _builtin(self) -> dict[str, dict[str, list[Pair]]]:
        out: dict[str, dict[str, list[Pair]]] = {}
        seed = self.options.seed
        if "summarize" in self.tasks or "classify" in self.tasks:
            try:
                records = debian.read_corpus()
            except debian.DebianCorpusError as e:
                raise TaskError(
                    f"task 'text2text' ({', '.join(self.tasks)}) reads Debian's descriptions: {e}"
                ) from e
            parts: dict[str, list[debian.PackageDescription]] = {s: [] for s in SPLITS}
            for r in records:
                parts[debian.split_of(r.source, seed)].append(r)
            for split, part in parts.items():
                random.Random(f"{seed}:{split}").shuffle(part)
            counts = Counter(r.section for r in records)
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:N_SECTIONS]
            sections = {s for s, _ in top}
            out["summarize"] = {
                s: [Pair(PREFIXES["summarize"] + r.text, r.synopsis) for r in parts[s]]
                for s in SPLITS
            }
            out["classify"] = {
                s: [
                    Pair(PREFIXES["classify"] + r.text, r.section)
                    for r in parts[s]
                    if r.section in sections
                ]
                for s in SPLITS
            }
        if "translate" in self.tasks:
            pairs = TranslateTask(TranslateTask.Options(seed=seed, corpus=self.options.corpus))
            out["translate"] = {
                s: [Pair(PREFIXES["translate"] + p.src, p.tgt) for p in pairs.examples(s)]
                for s in SPLITS
            }
        return out

    def _make_splits(self) -> dict[str, list[Pair]]:
        by_split = {s: self.task_examples(s) for s in SPLITS}
        train, self.rates = mix(by_split["train"], self.mix_cap, self.options.seed)
        held = {s: interleave(list(by_split[s].values())) for s in ("valid", "test")}
        return {"train": train, **held}

    def labels(self) -> list[str]:
        """The class names of ``classify`` (its training targets), sorted."""
        return sorted({p.tgt for p in self.task_examples("train").get("classify", [])})

    # -- tokenizer and model -------------------------------------------------------------
    def _train_tokenizers(self, train: Sequence[Pair]) -> tuple[Tokenizer, Tokenizer]:
        # one vocabulary over every distinct text of the tasks' training examples (the
        # mixture's repeats and the two Debian tasks' shared inputs would skew the counts)
        texts = {x for pairs in self.task_examples("train").values() for p in pairs for x in p}
        return super()._train_tokenizers([Pair(t, "") for t in sorted(texts)])

    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """The ``t5-micro`` preset (or ``preset``, or ``base``) sized to the vocabulary and
        ``max_len``; a ``d_model`` override rescales T5's output by ``d_model ** -0.5``.

        Raises:
            TaskError: a preset of another model family, or sizes that do not fit.
        """
        if base is None and preset is None:
            preset = self.default_preset
        if "d_model" in overrides and "output_scale" not in overrides:
            overrides["output_scale"] = overrides["d_model"] ** -0.5
        sizes = {
            "vocab_size": self.src_tokenizer.vocab_size,
            "max_len": self.max_len + 1,
            "pad_token_id": 0,
        }
        return sized_config(self, "seq2seq", preset, {}, sizes, overrides, base)

    # -- evaluation ----------------------------------------------------------------------
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
        """Each task's metrics on (the first ``limit`` pairs of) a split, decoded in mixed
        batches and routed to their task by the input's prefix.

        Returns:
            ``score`` (the mean of the tasks' headline metrics) first, then per task
            ``summarize_rougeL``, ``summarize_rouge1``, ``summarize_rouge2``,
            ``translate_bleu``, ``translate_chrf``, ``classify_accuracy``,
            ``classify_invalid`` (0-100) and ``TASK_loss``; and ``loss`` over all tasks.

        Raises:
            TaskError: the split is empty.
        """
        pairs = self.examples(split)[:limit]
        if not pairs:
            raise TaskError(f"task {self.name!r}: split {split!r} has no examples to evaluate")
        refs: dict[str, list[str]] = {}
        for p in pairs:
            refs.setdefault(p.src, []).append(p.tgt)
        sources = list(refs)
        with evaluating(model):
            hyps = self.generate_texts(
                model, sources, batch_size=batch_size, beam_size=beam_size, progress=progress
            )
        scores: dict[str, float] = {}
        total = n_total = 0.0
        for t in self.tasks:
            mine = [i for i, s in enumerate(sources) if task_of(s) == t]
            if not mine:
                continue
            h, r = [hyps[i] for i in mine], [refs[sources[i]] for i in mine]
            scores |= {f"{t}_{k}": v for k, v in self.task_scores(t, h, r).items()}
            loss, n, _ = evaluate_sums(
                model, self, [p for p in pairs if task_of(p.src) == t], batch_size=batch_size
            )
            scores[f"{t}_loss"] = loss / max(n, 1)
            total, n_total = total + loss, n_total + n
        heads = [scores[f"{t}_{HEADLINES[t]}"] for t in self.tasks if f"{t}_loss" in scores]
        return {"score": sum(heads) / len(heads), **scores, "loss": total / max(n_total, 1)}

    def task_scores(self, task: str, hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
        """One task's metrics of its outputs (0-100): ROUGE-1/2/L F (rouge-score, stemmed) for
        ``summarize``, BLEU and chrF (sacrebleu) for ``translate``, exact-match accuracy and
        the share of answers that are no class name for ``classify``."""
        if task == "summarize":
            return metrics.rouge(hyps, refs)
        if task == "translate":
            return {"bleu": metrics.bleu(hyps, refs), "chrf": metrics.chrf(hyps, refs)}
        names = set(self.labels())
        invalid = 100.0 * sum(h.strip() not in names for h in hyps) / len(hyps)
        return {"accuracy": metrics.exact_match(hyps, refs), "invalid": invalid}

    def samples(self, model: nn.Module, k: int = 2) -> list[str]:
        """``k`` validation inputs of each task (shortened), the output and the reference."""
        pairs = [p for ps in self.task_examples("valid").values() for p in ps[:k]]
        hyps = self.generate_texts(model, [p.src for p in pairs])
        return [
            f"{_shorten(p.src)}  ->  {h!r}  (reference: {p.tgt!r})" for p, h in zip(pairs, hyps)
        ]

    def predict(self, model: nn.Module, inputs: Sequence[str], **generate_kwargs: Any) -> list[str]:
        """Outputs for prefixed inputs (``"summarize: ..."``; see :data:`PREFIXES`).

        Raises:
            TaskError: an input without the prefix of a task the model was trained on.
        """
        for x in inputs:
            if task_of(x) not in self.tasks:
                known = ", ".join(repr(PREFIXES[t]) for t in self.tasks)
                raise TaskError(f"text2text input must start with one of {known}: {x[:60]!r}")
        return self.generate_texts(model, list(inputs), **generate_kwargs)


def _shorten(text: str, n: int = SAMPLE_CHARS) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


__all__ = [
    "HEADLINES",
    "MIX_CAP",
    "PREFIXES",
    "TASK_NAMES",
    "Text2TextTask",
    "mix",
    "parse_tasks",
    "read_mixture_tsv",
    "task_of",
]
