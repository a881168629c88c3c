"""ListOps: nested list operations (Nangia & Bowman 2018), as in the Long Range Arena
(Tay et al. 2020), generated deterministically from a seed.

An example is a bracketed prefix expression over the digits 0-9, e.g.
``[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]``, and its label is the value (0-9): a
10-way classification that needs the whole hierarchical structure of a long sequence.

Operators (LRA's ``listops.py``):

* ``[MAX``, ``[MIN``: maximum, minimum of the arguments;
* ``[MED``: ``int(np.median(args))``: for an even count the mean of the two middle
  values rounded down (e.g. ``[MED 1 4 ]`` is 2, not 1);
* ``[SM``: sum modulo 10.

The generator is LRA's: a node at depth ``< max_depth`` is an operator with probability 0.25
(else a digit), an operator has ``randint(2, max_args)`` arguments and a uniformly chosen
operator, and trees are drawn until their token count falls in ``[min_len, max_len]``
(LRA: ``max_depth=10, max_args=10``, lengths strictly between 500 and 2000; here the bounds
are inclusive). Tokens are LRA's without the parentheses of its TSV files (which its input
pipeline strips): operators, digits and ``]``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeAlias

#: ListOps operators, as LRA spells them.
OPERATORS: tuple[str, ...] = ("[MIN", "[MAX", "[MED", "[SM")
#: The closing bracket ending every operator's argument list.
END = "]"
#: Probability that a node above ``max_depth`` is an operator (LRA's ``VALUE_P``).
OPERATOR_P = 0.25
#: The vocabulary: padding, a classification token, operators, ``]`` and the digits.
VOCAB: tuple[str, ...] = ("<pad>", "<cls>", *OPERATORS, END, *(str(i) for i in range(10)))
#: Token -> id.
TOKEN_TO_ID: dict[str, int] = {t: i for i, t in enumerate(VOCAB)}
PAD_ID: int = TOKEN_TO_ID["<pad>"]
CLS_ID: int = TOKEN_TO_ID["<cls>"]
#: Labels are the values 0-9.
NUM_CLASSES = 10

#: A digit, or ``(operator, [arguments])``.
Tree: TypeAlias = "int | tuple[str, list[Tree]]"


def generate_tree(
    rng: random.Random, max_depth: int = 10, max_args: int = 10, depth: int = 1
) -> tuple[Tree, int]:
    """Draw one expression tree (LRA's ``generate_tree``).

    Returns:
        ``(tree, n_tokens)``: the tree and the number of tokens it prints to.
    """
    if depth >= max_depth or rng.random() > OPERATOR_P:
        return rng.randrange(10), 1
    n_args = rng.randint(2, max_args)
    args, length = [], 2  # the operator and its ']'
    for _ in range(n_args):
        sub, sub_len = generate_tree(rng, max_depth, max_args, depth + 1)
        args.append(sub)
        length += sub_len
    return (rng.choice(OPERATORS), args), length


def tree_tokens(tree: Tree) -> list[str]:
    """The token sequence of a tree, e.g. ``['[MAX', '4', '3', ']']``."""
    if isinstance(tree, int):
        return [str(tree)]
    op, args = tree
    out = [op]
    for a in args:
        out.extend(tree_tokens(a))
    out.append(END)
    return out


def apply_op(op: str, values: Sequence[int]) -> int:
    """Value of one operator on its (evaluated) arguments."""
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[MED":
        s = sorted(values)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2
    if op == "[SM":
        return sum(values) % 10
    raise ValueError(f"op must be one of {list(OPERATORS)}, got {op!r}")


def evaluate(tree: Tree) -> int:
    """The value (0-9) of a tree."""
    if isinstance(tree, int):
        return tree
    op, args = tree
    return apply_op(op, [evaluate(a) for a in args])


def encode(tokens: str | Sequence[str]) -> list[int]:
    """Token ids of a token list or a whitespace-separated string.

    Raises:
        ValueError: an unknown token.
    """
    toks = tokens.split() if isinstance(tokens, str) else list(tokens)
    try:
        return [TOKEN_TO_ID[t] for t in toks]
    except KeyError as e:
        raise ValueError(
            f"unknown ListOps token {e.args[0]!r}; the vocabulary is {list(VOCAB)}"
        ) from None


def decode(ids: Sequence[int]) -> str:
    """The space-separated tokens of ``ids``, padding dropped."""
    return " ".join(VOCAB[i] for i in ids if i != PAD_ID)


def listops_dataset(
    n: int,
    min_len: int = 500,
    max_len: int = 2000,
    seed: int = 0,
    *,
    max_depth: int = 10,
    max_args: int = 10,
    unique: bool = True,
    max_draws: int | None = None,
) -> list[tuple[list[int], int]]:
    """``n`` ListOps examples with ``min_len <= len(tokens) <= max_len``.

    Args:
        n: number of examples.
        min_len: fewest tokens per example (no ``<cls>``, no padding).
        max_len: most tokens per example.
        seed: the same seed gives the same examples in the same order.
        max_depth: deepest operator nesting + 1 (LRA: 10).
        max_args: most arguments per operator (LRA: 10; at least 2).
        unique: drop duplicate expressions, as LRA does.
        max_draws: give up after this many trees (default ``1000 * n + 100000``).

    Returns:
        ``[(token_ids, label), ...]`` with ids from :data:`VOCAB`.

    Raises:
        ValueError: bad arguments, or lengths the generator cannot reach in
            ``max_draws`` trees (say which, and how many were found).
    """
    for name, value, low in (
        ("n", n, 0),
        ("min_len", min_len, 1),
        ("max_len", max_len, 1),
        ("max_depth", max_depth, 1),
        ("max_args", max_args, 2),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if min_len > max_len:
        raise ValueError(f"min_len ({min_len}) must be <= max_len ({max_len})")
    rng = random.Random(seed)
    limit = 1000 * n + 100_000 if max_draws is None else max_draws
    out: list[tuple[list[int], int]] = []
    seen: set[tuple[int, ...]] = set()
    draws = 0
    while len(out) < n:
        if draws >= limit:
            raise ValueError(
                f"found only {len(out)} of n={n} trees with {min_len} <= length <= {max_len} "
                f"in {limit} draws (max_depth={max_depth}, max_args={max_args}); widen the "
                f"length range or raise max_depth/max_args"
            )
        draws += 1
        tree, length = generate_tree(rng, max_depth, max_args)
        if not min_len <= length <= max_len:
            continue
        ids = encode(tree_tokens(tree))
        if unique:
            key = tuple(ids)
            if key in seen:
                continue
            seen.add(key)
        out.append((ids, evaluate(tree)))
    return out


__all__ = [
    "CLS_ID",
    "END",
    "NUM_CLASSES",
    "OPERATORS",
    "PAD_ID",
    "TOKEN_TO_ID",
    "VOCAB",
    "apply_op",
    "decode",
    "encode",
    "evaluate",
    "generate_tree",
    "listops_dataset",
    "tree_tokens",
]
