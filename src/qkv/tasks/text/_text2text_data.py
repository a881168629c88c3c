"""The data side of ``text2text`` (:mod:`qkv.tasks.text.text2text`): the task prefixes, the
``PREFIX: input<TAB>target`` reader and examples-proportional mixing (T5, sec. 3.5.2)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from qkv.tasks._common import read_text_file
from qkv.tasks.base import TaskError
from qkv.tasks.text._seq2seq import Pair

#: Task name -> the prefix its inputs start with (T5's own wording).
PREFIXES: dict[str, str] = {
    "summarize": "summarize: ",
    "translate": "translate German to English: ",
    "classify": "classify: ",
}
TASK_NAMES: tuple[str, ...] = tuple(PREFIXES)


def task_of(text: str) -> str | None:
    """The task whose prefix ``text`` starts with, or None."""
    return next((t for t, p in PREFIXES.items() if text.startswith(p)), None)


def parse_tasks(value: Any) -> tuple[str, ...]:
    """Option ``tasks`` (a comma-separated string or a list of names) as task names, in
    :data:`TASK_NAMES` order.

    Raises:
        TaskError: an unknown or repeated name, or none.
    """
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TaskError(f"task 'text2text': tasks must be a comma-separated string, got {value!r}")
    names = [n.strip() for n in names if n.strip()]
    unknown = sorted(set(names) - set(TASK_NAMES))
    if unknown or not names or len(set(names)) != len(names):
        raise TaskError(
            f"task 'text2text': tasks must be distinct names among {list(TASK_NAMES)}, "
            f"got {value!r}"
        )
    return tuple(t for t in TASK_NAMES if t in names)


def read_mixture_tsv(path: str) -> dict[str, list[Pair]]:
    """``PREFIX: input<TAB>target`` lines by task (file order), prefixes kept in the input.

    Raises:
        TaskError: a missing, empty or non-UTF-8 file, or a line without exactly one tab,
            with an empty side, or without a known prefix (naming the file and line).
    """
    text = read_text_file(path, "text2text data")
    out: dict[str, list[Pair]] = {t: [] for t in TASK_NAMES}
    for i, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 2 or not cols[0].strip() or not cols[1].strip():
            raise TaskError(
                f"{path}, line {i}: expected 'PREFIX: input<TAB>target' (one tab, both sides "
                f"non-empty), got {line[:80]!r}"
            )
        src, tgt = cols[0].strip(), cols[1].strip()
        task = task_of(src + " ")
        if task is None or not src[len(PREFIXES[task]) :].strip():
            known = ", ".join(repr(p) for p in PREFIXES.values())
            raise TaskError(f"{path}, line {i}: the input must start with one of {known}")
        out[task].append(Pair(src, tgt))
    return out


def mix(
    train: dict[str, list[Pair]], cap: int | None, seed: int
) -> tuple[list[Pair], dict[str, float]]:
    """One epoch of examples-proportional mixing with cap ``K`` (T5, sec. 3.5.2).

    Args:
        train: each task's training examples (tasks without examples are left out).
        cap: ``K``; None for no cap.
        seed: seed of the sampled partial copies and of the order.

    Returns:
        The epoch (shuffled) and each task's rate ``min(e_m, K) / sum_n min(e_n, K)``.
    """
    sizes = {t: len(x) for t, x in train.items() if x}
    capped = {t: min(e, cap) if cap else e for t, e in sizes.items()}
    total = sum(capped.values())
    rates = {t: c / total for t, c in capped.items()}
    scale = max(sizes[t] / capped[t] for t in sizes)  # every example at least once
    rng = random.Random(seed)
    epoch: list[Pair] = []
    for t, examples in train.items():
        if not examples:
            continue
        want = round(capped[t] * scale)
        whole, rest = divmod(want, len(examples))
        epoch += examples * whole + rng.sample(examples, rest)
    rng.shuffle(epoch)
    return epoch, rates


def interleave(groups: Sequence[Sequence[Pair]]) -> list[Pair]:
    """Round-robin over lists of pairs, keeping pairs that share a source together."""
    units = [by_source(g) for g in groups]
    out: list[Pair] = []
    for i in range(max((len(u) for u in units), default=0)):
        for u in units:
            if i < len(u):
                out += u[i]
    return out


def by_source(pairs: Sequence[Pair]) -> list[list[Pair]]:
    """Consecutive runs of pairs with the same source (the alternative translations)."""
    runs: list[list[Pair]] = []
    for p in pairs:
        if runs and runs[-1][0].src == p.src:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def cap_sources(pairs: list[Pair], cap: int | None) -> list[Pair]:
    """The pairs of the first ``cap`` distinct sources (all when None)."""
    if cap is None:
        return pairs
    return [p for run in by_source(pairs)[:cap] for p in run]


__all__ = [
    "PREFIXES",
    "TASK_NAMES",
    "by_source",
    "cap_sources",
    "interleave",
    "mix",
    "parse_tasks",
    "read_mixture_tsv",
    "task_of",
]
