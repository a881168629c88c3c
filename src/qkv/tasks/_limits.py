"""Refuse generated data that will not fit in memory, before generating any of it.

The generated tasks (copy, reverse, synthetic, listops) hold every example in Python lists
of strings or ids. The sizes here are those of CPython's objects (``sys.getsizeof`` of an
empty one plus a pointer per item or a byte per ASCII character), so an estimate is the
memory the examples will take, not a guess; :func:`check_generated` compares it with the
free memory (:func:`qkv.models.memory.check_memory`).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Mapping

from qkv.models.memory import DEFAULT_FRACTION, MemoryLimitError, check_memory
from qkv.tasks.base import TaskError

#: Bytes of a pointer: one slot of a list, a tuple, or (about half of one) of a set or dict.
POINTER = struct.calcsize("P")


def str_bytes(n_chars: int) -> int:
    """Bytes of an ASCII string of ``n_chars`` characters."""
    return sys.getsizeof("") + n_chars


def list_bytes(n_items: int) -> int:
    """Bytes of a list of ``n_items`` small ints (the ints themselves are shared)."""
    return sys.getsizeof([]) + POINTER * n_items


def tuple_bytes(n_items: int) -> int:
    """Bytes of a tuple of ``n_items`` items (the items not included)."""
    return sys.getsizeof(()) + POINTER * n_items


def text_pair_bytes(src_chars: int, tgt_chars: int) -> int:
    """Bytes one ``(source, target)`` text pair costs a sequence-to-sequence task: the pair
    and its two strings, a slot in its split's list and two in the set of sources drawn,
    and, once encoded, an id list per side (a character tokenizer's one id per character,
    the most any tokenizer gives) under a ``(side, text)`` key in the task's cache.

    Args:
        src_chars: characters of the source (a mean over the examples).
        tgt_chars: characters of the target.
    """
    pair = tuple_bytes(2) + str_bytes(src_chars) + str_bytes(tgt_chars) + 3 * POINTER
    encoded = list_bytes(src_chars) + list_bytes(tgt_chars) + 2 * (tuple_bytes(2) + 3 * POINTER)
    return pair + encoded


def check_generated(
    task: str,
    sizes: Mapping[str, int],
    example_bytes: int,
    *,
    fraction: float = DEFAULT_FRACTION,
) -> None:
    """Refuse split sizes whose examples will not fit in the free host memory.

    Args:
        task: the task's name, for the message.
        sizes: examples per split (``{"train": 20000, ...}``).
        example_bytes: the estimate of one example (e.g. :func:`text_pair_bytes`).
        fraction: share of the free memory the examples may take.

    Raises:
        TaskError: the examples do not fit, in one line with the estimate and the memory
            available (the :class:`~qkv.models.memory.MemoryLimitError` is its cause).
    """
    n = sum(sizes.values())
    parts = ", ".join(f"n_{k}={v:,}" for k, v in sizes.items())
    try:
        check_memory(
            n * example_bytes,
            f"{n:,} examples ({parts}) of ~{example_bytes:,} bytes each",
            fraction=fraction,
        )
    except MemoryLimitError as e:
        raise TaskError(
            f"task {task!r}: {e}; ask for fewer examples (n_train, n_valid, n_test) or "
            f"shorter ones (max_len)"
        ) from e


__all__ = [
    "POINTER",
    "check_generated",
    "list_bytes",
    "str_bytes",
    "text_pair_bytes",
    "tuple_bytes",
]
