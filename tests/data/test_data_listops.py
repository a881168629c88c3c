"""ListOps: labels checked by an independent evaluator of the printed expressions,
determinism, lengths, vocabulary and errors."""

from __future__ import annotations

import random
import statistics

import pytest

from qkv.data import listops


def _evaluate_text(text: str) -> int:
    """Independent evaluator: a stack machine over the space-separated tokens."""
    ops = {
        "[MIN": min,
        "[MAX": max,
        "[MED": lambda xs: int(statistics.median(xs)),  # LRA: int(np.median(xs))
        "[SM": lambda xs: sum(xs) % 10,
    }
    stack: list[tuple[str, list[int]]] = [("root", [])]
    for tok in text.split():
        if tok in ops:
            stack.append((tok, []))
        elif tok == "]":
            op, args = stack.pop()
            stack[-1][1].append(ops[op](args))
        else:
            stack[-1][1].append(int(tok))
    assert len(stack) == 1 and len(stack[0][1]) == 1, text
    return stack[0][1][0]


def _depth(text: str) -> int:
    depth = best = 0
    for tok in text.split():
        depth += tok.startswith("[")
        depth -= tok == "]"
        best = max(best, depth)
    return best


def test_labels_match_an_independent_evaluator():
    data = listops.listops_dataset(300, 5, 120, seed=1, max_depth=6, max_args=5)
    for ids, label in data:
        assert label == _evaluate_text(listops.decode(ids))
    long = listops.listops_dataset(5, 500, 2000, seed=2)
    for ids, label in long:
        assert 500 <= len(ids) <= 2000
        assert label == _evaluate_text(listops.decode(ids))
    assert {label for _, label in data} == set(range(10))  # every class occurs


def test_operators_by_hand():
    assert listops.apply_op("[MED", [1, 4]) == 2  # mean of the middle two, rounded down
    assert listops.apply_op("[MED", [9, 1, 4]) == 4
    assert listops.apply_op("[MED", [3, 8, 1, 9]) == 5
    assert listops.apply_op("[SM", [9, 8, 7]) == 4
    tree = ("[MAX", [4, 3, ("[MIN", [2, 3]), 1, 0, ("[MED", [1, 5, 8, 9, 2])])
    text = "[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]"
    assert " ".join(listops.tree_tokens(tree)) == text
    assert listops.evaluate(tree) == _evaluate_text(text) == 5
    for _ in range(200):  # MED agrees with the statistics module on random lists
        xs = [random.randrange(10) for _ in range(random.randint(2, 9))]
        assert listops.apply_op("[MED", xs) == int(statistics.median(xs))


def test_seed_gives_identical_data_and_lengths_are_respected():
    a = listops.listops_dataset(50, 20, 60, seed=7)
    assert a == listops.listops_dataset(50, 20, 60, seed=7)
    assert a != listops.listops_dataset(50, 20, 60, seed=8)
    assert all(20 <= len(ids) <= 60 for ids, _ in a)
    assert len({tuple(ids) for ids, _ in a}) == 50  # unique, as in LRA
    assert listops.listops_dataset(50, 20, 60, seed=7)[:10] == listops.listops_dataset(
        10, 20, 60, seed=7
    )
    shallow = listops.listops_dataset(30, 4, 200, seed=3, max_depth=3, max_args=4)
    assert all(_depth(listops.decode(ids)) <= 2 for ids, _ in shallow)


def test_vocabulary_round_trip():
    assert len(listops.VOCAB) == len(set(listops.VOCAB)) == 17
    assert listops.VOCAB[listops.PAD_ID] == "<pad>" and listops.VOCAB[listops.CLS_ID] == "<cls>"
    text = "[SM 1 [MIN 2 3 ] ]"
    ids = listops.encode(text)
    assert listops.decode(ids) == text
    assert listops.decode([listops.PAD_ID, *ids, listops.PAD_ID]) == text
    assert listops.encode(text.split()) == ids
    with pytest.raises(ValueError, match=r"unknown ListOps token '\('; the vocabulary is"):
        listops.encode("( [MAX 1 2 ] )")


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"min_len \(10\) must be <= max_len \(5\)"):
        listops.listops_dataset(1, 10, 5)
    with pytest.raises(ValueError, match="max_args must be an int >= 2, got 1"):
        listops.listops_dataset(1, 1, 5, max_args=1)
    with pytest.raises(ValueError, match="n must be an int >= 0, got -1"):
        listops.listops_dataset(-1)
    with pytest.raises(ValueError, match="found only 0 of n=2 trees with 2 <= length <= 3"):
        listops.listops_dataset(2, 2, 3, max_draws=1000)  # lengths 2-3 cannot be printed
    with pytest.raises(ValueError, match="op must be one of"):
        listops.apply_op("[FIRST", [1])
