"""What the scene tasks (``clip``, ``vqa``) share: their options, their scenes per split
(:mod:`qkv.data.scenes` over the split item pools of :mod:`qkv.tasks.vision._items`, so that no item
image is in scenes of two splits) and a word tokenizer of the generated text."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from qkv.data.scenes import DIGITS, FASHION, SceneExamples, SceneSpec, Vocabulary
from qkv.data.tokenizers import Tokenizer, WordTokenizer
from qkv.tasks._common import check_choice, check_positive
from qkv.tasks.base import SPLITS, Split, Task, TaskError
from qkv.tasks.vision._image import read_task_image
from qkv.tasks.vision._items import ITEMS, ItemPool, SceneOptions, item_pools

#: default scene counts per item source (train, valid, test); train scenes are drawn on
#: demand, so a large count costs nothing until a scene is read
SCENE_COUNTS: dict[str, dict[str, int]] = {
    "fashion-mnist": {"train": 200_000, "valid": 500, "test": 1000},
    "digits": {"train": 4000, "valid": 200, "test": 200},
}
#: scenes whose text trains the word tokenizer (every template of each)
TOKENIZER_SCENES = 2000


class SceneData:
    """A scene task's data: options ``items`` (``"fashion-mnist"`` or ``"digits"``)
    and ``grid`` (2 or 3), ``n_train`` / ``n_valid`` / ``n_test`` scenes, ``seed``.

    Args:
        task: the task whose options (a :class:`~qkv.tasks.vision._items.SceneOptions`) these are.

    Raises:
        TaskError: an unknown item source or grid, negative counts, or ``--data`` with
            digits.
    """

    def __init__(self, task: Task) -> None:
        o = task.options
        assert isinstance(o, SceneOptions), "a scene task's options are SceneOptions"
        self.task_name = task.name
        self.items = o.items
        check_choice(task.name, "items", self.items, ITEMS)
        grid = o.grid
        check_choice(task.name, "grid", grid, (2, 3))
        if self.items == "digits" and o.data is not None:
            raise TaskError(f"task {task.name!r} with items 'digits' reads no --data")
        for opt in ("n_train", "n_valid", "n_test"):
            if getattr(o, opt) is not None:
                check_positive(task.name, opt, getattr(o, opt), minimum=0)
        self.options = o
        self.spec = SceneSpec(grid=grid)
        self.vocab: Vocabulary = FASHION if self.items == "fashion-mnist" else DIGITS
        self._pools: dict[str, ItemPool] | None = None
        self._splits: dict[str, SceneExamples] = {}

    @property
    def item_size(self) -> int:
        """Side of one item (one grid cell) in pixels."""
        return 28 if self.items == "fashion-mnist" else 8

    @property
    def image_size(self) -> int:
        """Side of a scene in pixels."""
        return self.spec.grid * self.item_size

    def pools(self) -> dict[str, ItemPool]:
        """The item pools of the three splits (read on first use)."""
        if self._pools is None:
            o = self.options
            self._pools = item_pools(self.items, o.data, o.seed, self.task_name)
        return self._pools

    def scenes(self, split: Split) -> SceneExamples:
        """The scenes of a split."""
        check_choice(self.task_name, "split", split, SPLITS)
        if split not in self._splits:
            n = getattr(self.options, f"n_{split}")
            n = SCENE_COUNTS[self.items][split] if n is None else n
            items, labels, scale = self.pools()[split]
            seed = self.options.seed * 3 + SPLITS.index(split)
            self._splits[split] = SceneExamples(
                items, labels, n, seed, self.spec, self.vocab, scale
            )
        return self._splits[split]

    def read_image(self, source: str) -> Tensor:
        """A scene image ``(1, S, S)``: ``SPLIT:N`` (the ``N``-th scene of a split) or an
        image file (made grey and resized).

        Raises:
            TaskError: a bad ``SPLIT:N``, or a missing or unreadable file.
        """
        split, _, index = source.partition(":")
        if split in SPLITS and index.isdigit():
            scenes = self.scenes(split)  # type: ignore[arg-type]
            if int(index) >= len(scenes):
                raise TaskError(f"{source}: split {split!r} has {len(scenes)} scenes")
            return scenes[int(index)].image
        return read_task_image(None, source, self.image_size)

    def train_tokenizer(self, extra_text: Iterable[str] = ()) -> Tokenizer:
        """A word tokenizer of the training scenes' text (every caption template, questions
        and answers of the first :data:`TOKENIZER_SCENES` scenes), the class names and
        ``extra_text``."""
        scenes = self.scenes("train")
        texts = list(extra_text) + list(self.vocab.names) + list(self.vocab.plurals)
        for i in range(min(TOKENIZER_SCENES, len(scenes))):
            s = scenes[i]
            texts += list(s.captions)
            texts += [f"{q.text} {q.answer}" for q in s.questions]
        return WordTokenizer.train(texts, lowercase=True)

    def state(self) -> dict[str, Any]:
        """What ``task.json`` records of the data (for a person reading it)."""
        return {
            "image_size": self.image_size,
            "grid": self.spec.grid,
            "class_names": list(self.vocab.names),
        }


__all__ = ["SCENE_COUNTS", "SceneData"]
