"""Scenes: determinism, shapes, and captions and answers checked against the layout read
back from the pixels (each non-empty cell matched to the pool image it holds)."""

from __future__ import annotations

import re

import pytest
import torch

from qkv.data.scenes import (
    CAPTION_TEMPLATES,
    DIGITS,
    FASHION,
    NUMBER_WORDS,
    QUESTION_KINDS,
    Scene,
    SceneExamples,
    SceneItem,
    SceneSpec,
    Vocabulary,
    cell_name,
    class_prompts,
    scene_captions,
    scene_questions,
)
from qkv.tasks.vision._items import item_pools
from qkv.tasks.vision.fashion_mnist import FASHION_MNIST_DIR

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def pools() -> dict:
    return item_pools("digits", None, 0, "test")


def scenes(pools: dict, split: str, n: int, grid: int = 2, seed: int = 0) -> SceneExamples:
    images, labels, scale = pools[split]
    return SceneExamples(images, labels, n, seed, SceneSpec(grid=grid), DIGITS, scale)


def layout_from_pixels(scene: Scene, pool: tuple) -> dict[tuple[int, int], int]:
    """``{(row, col): label}`` of the non-empty cells, each matched to its pool image."""
    images, labels, scale = pool
    pixels = (images.float() / scale).clamp(0, 1)
    side = images.shape[-1]
    out = {}
    for r in range(scene.grid):
        for c in range(scene.grid):
            cell = scene.image[0, r * side : (r + 1) * side, c * side : (c + 1) * side]
            if cell.abs().sum() == 0:
                continue
            match = (pixels == cell).flatten(1).all(1).nonzero()[:, 0]
            assert len(match) >= 1, f"cell {(r, c)} is no pool image"
            found = {int(labels[m]) for m in match}
            assert len(found) == 1
            out[(r, c)] = found.pop()
    return out


def test_same_seed_same_scene_and_slices_keep_scenes(pools: dict) -> None:
    a, b = scenes(pools, "train", 6), scenes(pools, "train", 6)
    for i in range(6):
        assert torch.equal(a[i].image, b[i].image) and a[i].captions == b[i].captions
        assert a[i].questions == b[i].questions and a[i].caption == b[i].caption
    assert torch.equal(a[2:5][1].image, a[3].image) and a[2:5][1].items == a[3].items
    other = scenes(pools, "train", 6, seed=1)
    assert any(not torch.equal(a[i].image, other[i].image) for i in range(6))


@pytest.mark.parametrize("grid", [2, 3])
def test_shapes_items_and_empty_cells(pools: dict, grid: int) -> None:
    data = scenes(pools, "train", 40, grid)
    assert data.image_size == 8 * grid
    counts = set()
    for s in data:
        assert s.image.shape == (1, 8 * grid, 8 * grid) and s.image.dtype == torch.float32
        assert 0 <= float(s.image.min()) and float(s.image.max()) <= 1
        assert 1 <= len(s.items) <= grid * grid - 1
        cells = [(i.row, i.col) for i in s.items]
        assert cells == sorted(cells) and len(set(cells)) == len(cells)
        counts.add(len(s.items))
        assert s.caption in s.captions and len(s.captions) == len(CAPTION_TEMPLATES)
    assert len(counts) > 1  # the number of items varies


def check_caption(template: str, caption: str, layout: dict, grid: int) -> None:
    """Parse a caption back and compare it with the layout."""
    names = "|".join(re.escape(n) for n in DIGITS.names)
    cells = {cell_name(r, c, grid): (r, c) for r in range(grid) for c in range(grid)}
    thing = rf"an? ({names})"
    if template == "count":
        head, _, caption = caption.partition(": ")
        n = NUMBER_WORDS.index(head.split()[0])
        assert n == len(layout)
        template = "positions"
    if template == "positions":
        found = re.findall(rf"{thing} in the ([a-z ]+?)(?:,|$| and )", caption)
        assert {cells[c]: DIGITS.names.index(x) for x, c in found} == layout
        assert len(found) == len(layout)
    elif template == "relations":
        seen = {}
        for clause in re.split(r", and |, ", caption):
            m = re.fullmatch(rf"{thing} (above|left of|in the) (?:{thing}|([a-z ]+))", clause)
            assert m, clause
            a, word, b, cell = m.groups()
            if word == "in the":
                seen[cells[cell]] = DIGITS.names.index(a)
                continue
            pairs = [
                (p, q)
                for p in layout
                for q in [(p[0] + 1, p[1]) if word == "above" else (p[0], p[1] + 1)]
                if q in layout
                and layout[p] == DIGITS.names.index(a)
                and layout[q] == DIGITS.names.index(b)
            ]
            assert pairs, clause
        assert all(layout[c] == label for c, label in seen.items())
        n_things = len(re.findall(thing, caption))
        assert n_things == len(layout)
    else:
        found = []
        for part in re.split(r", (?=in the \w+ row)", caption):
            row_word, rest = re.fullmatch(r"in the (\w+) row (.*)", part).groups()
            r = (
                ("top", "middle", "bottom").index(row_word)
                if grid == 3
                else ("top", "bottom").index(row_word)
            )
            for x, side in re.findall(rf"{thing} (on the left|on the right|in the middle)", rest):
                c = {"on the left": 0, "in the middle": 1, "on the right": grid - 1}[side]
                found.append(((r, c), DIGITS.names.index(x)))
        assert dict(found) == layout and len(found) == len(layout)


def answer(question: str, layout: dict, grid: int) -> str:
    """The answer to a question, worked out from the layout alone."""
    cells = {cell_name(r, c, grid): (r, c) for r in range(grid) for c in range(grid)}
    name = DIGITS.names
    if m := re.fullmatch(r"what is in the (.+)\?", question):
        label = layout.get(cells[m[1]])
        return "nothing" if label is None else name[label]
    if m := re.fullmatch(r"where is the (\w+)\?", question):
        (cell,) = [c for c, label in layout.items() if name[label] == m[1]]
        return cell_name(*cell, grid)
    if m := re.fullmatch(r"how many (.+) are there\?", question):
        groups = dict(DIGITS.groups)
        group = groups[m[1]] if m[1] in groups else (DIGITS.plurals.index(m[1]),)
        return str(sum(label in group for label in layout.values()))
    if m := re.fullmatch(r"is there an? (\w+)\?", question):
        return "yes" if name.index(m[1]) in layout.values() else "no"
    m = re.fullmatch(r"what is (left of|right of|above|below) the (\w+)\?", question)
    assert m, question
    (cell,) = [c for c, label in layout.items() if name[label] == m[2]]
    dr, dc = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}[m[1]]
    target = (cell[0] + dr, cell[1] + dc)
    assert 0 <= target[0] < grid and 0 <= target[1] < grid
    label = layout.get(target)
    return "nothing" if label is None else name[label]


@pytest.mark.parametrize("grid", [2, 3])
def test_captions_and_answers_are_true_to_the_pixels(pools: dict, grid: int) -> None:
    kinds = set()
    for s in scenes(pools, "test", 30, grid):
        layout = layout_from_pixels(s, pools["test"])
        assert layout == {(i.row, i.col): i.label for i in s.items}
        for template, caption in zip(CAPTION_TEMPLATES, s.captions):
            check_caption(template, caption, layout, grid)
        for q in s.questions:
            assert q.answer == answer(q.text, layout, grid), q
            kinds.add(q.kind)
        assert len({q.text for q in s.questions}) == len(s.questions)
        assert sum(q.kind == "what" for q in s.questions) == grid * grid
    assert kinds == set(QUESTION_KINDS)


def test_hand_worked_scene_text() -> None:
    # a sneaker (7) in the top left, a bag (8) in the top right, a shirt (6) below the sneaker
    items = [SceneItem(7, 0, 0, 0), SceneItem(8, 0, 1, 1), SceneItem(6, 1, 0, 2)]
    captions = scene_captions(items, 2, FASHION)
    questions = scene_questions(items, 2, FASHION, torch.Generator().manual_seed(0))
    scene = Scene(torch.zeros(1, 8, 8), tuple(items), 2, captions[0], captions, questions)
    assert scene.captions == (
        "a sneaker in the top left, a bag in the top right and a shirt in the bottom left",
        "a sneaker above a shirt, and a bag in the top right",
        "three things: a sneaker in the top left, a bag in the top right and a shirt in the "
        "bottom left",
        "in the top row a sneaker on the left and a bag on the right, in the bottom row a "
        "shirt on the left",
    )
    qa = {q.text: q.answer for q in scene.questions}
    assert qa["what is in the bottom right?"] == "nothing"
    assert qa["how many shoes are there?"] == "1" and qa["how many tops are there?"] == "1"
    assert qa["what is left of the bag?"] == "sneaker" and qa["what is below the bag?"] == "nothing"
    assert qa["where is the shirt?"] == "bottom left" and qa["is there a bag?"] == "yes"


def test_class_prompts_and_vocabulary_errors() -> None:
    assert class_prompts(FASHION)[7] == "a photo of a sneaker"
    assert class_prompts(DIGITS, "the digit {}")[8] == "the digit eight"
    assert FASHION.article(8) == "a bag" and DIGITS.article(8) == "an eight"
    with pytest.raises(ValueError, match="needs a '\\{\\}'"):
        class_prompts(FASHION, "a photo")
    with pytest.raises(ValueError, match="one plural per name"):
        Vocabulary(("a",), ())
    with pytest.raises(ValueError, match="grid must be one of"):
        SceneSpec(grid=4)
    with pytest.raises(ValueError, match=r"max_items \(5\) <= grid \* grid \(4\)"):
        SceneSpec(grid=2, max_items=5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        SceneExamples(torch.zeros(2, 4, 4), torch.tensor([0, 10]), 1, 0)


def test_split_pools_share_no_image(pools: dict) -> None:
    def keys(split: str) -> set[bytes]:
        return {img.numpy().tobytes() for img in pools[split][0]}

    train, test = keys("train"), keys("test")
    assert not train & test
    for s in scenes(pools, "test", 30):
        assert set(layout_from_pixels(s, pools["test"])) == {(i.row, i.col) for i in s.items}


# 17 s: reads the whole Fashion-MNIST files
@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_fashion_scenes_take_train_and_test_items_from_their_files() -> None:
    p = item_pools("fashion-mnist", None, 0, "test")
    assert len(p["train"][0]) == 55000 and len(p["test"][0]) == 10000
    train = SceneExamples(*p["train"][:2], 20, 0, scale=255.0)
    test = SceneExamples(*p["test"][:2], 20, 1, scale=255.0)
    assert train.image_size == 56
    for data, pool in ((train, p["train"]), (test, p["test"])):
        for s in data:
            layout = layout_from_pixels(s, pool)
            assert layout == {(i.row, i.col): i.label for i in s.items}
            assert s.captions[0].startswith(FASHION.article(s.items[0].label))
