"""``clip``: CLIP (Radford et al. 2021) learns images and text together from scene captions
alone, then classifies real Fashion-MNIST test items zero-shot.

Training pairs are the scenes of :mod:`qkv.data.scenes` (real items on a grid, generated
captions) with one caption each; the loss is the symmetric contrastive loss
(:func:`qkv.training.contrastive.contrastive_loss`), where two scenes of a batch with the same
caption count as positives of each other. No class label is used.

Metrics:

* ``zero_shot`` (the headline, 0-100): accuracy on the split's items (for Fashion-MNIST's
  test split, its 10,000 ``t10k`` images) each placed alone in the top-left cell of an otherwise empty scene,
  as the scenes place items, classified by the nearest of the class prompts of the task's
  template (:data:`PROMPTS`). Every template's accuracy is reported too (``zero_shot_photo``:
  *a photo of a sneaker*, ``zero_shot_short``: *a sneaker*, ``zero_shot_placed``: *a sneaker
  in the top left*); the headline template was chosen by measuring them (``docs/clip.md``).
* ``i2t_r1``, ``i2t_r5``, ``t2i_r1``, ``t2i_r5`` (0-100): retrieval recall@k between the
  held-out scenes and their captions. A retrieved caption (scene) counts when its text equals
  the query's caption (the same words describe both scenes).
* ``loss``: the contrastive loss on held-out scenes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from qkv.data.scenes import Scene, cell_name, class_prompts
from qkv.data.tokenizers import EOS_ID, PAD_ID, Tokenizer
from qkv.layers.mode import evaluating
from qkv.models import TransformerConfig
from qkv.tasks._common import check_choice, load_tokenizer, sized_config, write_task_file
from qkv.tasks.base import SPLITS, Split, Task, TaskError
from qkv.tasks.multimodal._scenes import SceneData
from qkv.tasks.multimodal.viz_multimodal import report_for_clip
from qkv.tasks.options import LengthOption, OptionsLike, option
from qkv.tasks.vision._items import SceneOptions
from qkv.training.contrastive import contrastive_loss
from qkv.training.evaluate import model_device
from qkv.training.objective import Batch, LossOutput

#: zero-shot prompt templates; ``{cell}`` is the cell the item is placed in
PROMPTS: dict[str, str] = {
    "photo": "a photo of a {}",
    "short": "a {}",
    "placed": "a {} in the {cell}",
}
#: the template of the headline ``zero_shot`` (chosen by measurement, ``docs/clip.md``)
DEFAULT_PROMPT = "placed"
#: the cell a zero-shot item is placed in
ZERO_SHOT_CELL = (0, 0)


def single_item_scenes(items: Tensor, grid: int, cell: tuple[int, int] = ZERO_SHOT_CELL) -> Tensor:
    """Items placed alone in one cell of an empty ``grid x grid`` scene, as
    :func:`qkv.data.scenes.draw_scene` places them.

    Args:
        items: ``(n, H, W)`` in ``[0, 1]``.
        grid: cells per side.
        cell: ``(row, col)`` of the cell.

    Returns:
        ``(n, 1, grid H, grid W)``.
    """
    n, h, w = items.shape
    r, c = cell
    out = items.new_zeros(n, 1, grid * h, grid * w)
    out[:, 0, r * h : (r + 1) * h, c * w : (c + 1) * w] = items
    return out


def recall_at(similarity: Tensor, same: Tensor, k: int) -> float:
    """Share (0-100) of the rows of ``similarity`` whose ``k`` most similar columns include
    one that ``same`` marks as a right answer.

    Args:
        similarity: ``(n_queries, n_candidates)``.
        same: ``(n_queries, n_candidates)`` bool, True for right answers.
        k: candidates retrieved per query.
    """
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices  # (n_q, k)
    hit = same.gather(1, top).any(1)
    return 100.0 * float(hit.float().mean())


class CLIPTask(Task):
    """Contrastive image-text training on scenes, zero-shot classification of single items.

    Options: ``data`` (the Fashion-MNIST directory; default the Debian package's), ``seed``,
    ``n_train`` / ``n_valid`` / ``n_test`` (scenes), ``max_len`` (caption tokens, with the
    end-of-text token), ``items`` (``"fashion-mnist"`` or ``"digits"``),
    ``grid`` (2 or 3), ``prompt`` (the headline template, a key of
    :data:`PROMPTS`).
    """

    @dataclass
    class Options(LengthOption, SceneOptions):
        """clip's options."""

        prompt: str = option(
            DEFAULT_PROMPT, "the headline's zero-shot prompt template", choices=tuple(PROMPTS)
        )

    options: Options
    name = "clip"
    kind = "contrastive"
    names_inputs = True
    prediction = (
        "the top 3 classes of an image input, or the 3 test scenes that best match a text input"
    )
    unit = "img"  # the throughput counts image-caption pairs
    #: a 4-layer ViT (14-pixel patches: 2x2 per item, 16 per 2x2 scene; 7-pixel ones cost
    #: 3-4x the time per step for the 2-core budget) and a 3-layer text Transformer, both
    #: 128 wide, a 128-d joint space
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 128,
        "n_heads": 4,
        "d_ff": 512,
        "n_layers": 3,
        "vision_d_model": 128,
        "vision_n_heads": 4,
        "vision_d_ff": 512,
        "vision_n_layers": 4,
        "embed_dim": 128,
        "dropout": 0.0,
    }
    #: AdamW with CLIP's weight decay (0.2) and beta2 (0.98, the default), 128 pairs a batch
    #: (127 negatives each; the 2-core budget allows ~1,500 such steps in 30 min),
    #: cosine decay
    recipe: ClassVar[dict[str, Any]] = {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.2,
        "clip_norm": 1.0,
        "batch_size": 128,
        "schedule": "cosine",
        "warmup": 100,
        "eval_every": 500,
        "eval_limit": 1000,
    }

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        self.data = SceneData(self)
        self.prompt = self.options.prompt
        check_choice(self.name, "prompt", self.prompt, tuple(PROMPTS))
        self.max_len = self.options.max_len or (24 if self.data.spec.grid == 2 else 48)
        self._tokenizer: Tokenizer | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        """The item classes, as the captions name them."""
        return self.data.vocab.names

    @property
    def tokenizer(self) -> Tokenizer:
        """The word tokenizer of the training captions (trained on first use, or loaded)."""
        if self._tokenizer is None:
            self._tokenizer = self.data.train_tokenizer(self._prompt_words())
        return self._tokenizer

    def _prompt_words(self) -> list[str]:
        """Every template's text (its words join the vocabulary: *photo* and *of* never
        occur in a caption, so their embeddings stay as initialized)."""
        return [t.format("", cell="") for t in PROMPTS.values()]

    # -- data ----------------------------------------------------------------------------
    def examples(self, split: Split) -> Sequence[Scene]:
        """The scenes of a split (each with its image and caption)."""
        return self.data.scenes(split)

    def encode_texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids ``(b, s)`` (words, then the end-of-text token, right-padded) and their
        ``padding_mask``; texts longer than ``max_len`` are cut before the end token."""
        rows = [[*self.tokenizer.encode(t)[: self.max_len - 1], EOS_ID] for t in texts]
        s = max(len(r) for r in rows)
        ids = torch.full((len(rows), s), PAD_ID, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return ids, ids != PAD_ID

    def collate(self, examples: Sequence[Scene]) -> Batch:
        """``inputs`` ``(b, 1, S, S)``, ``input_ids`` ``(b, s)``, ``padding_mask`` and
        ``positives`` ``(b, b)`` (True where two captions are the same text)."""
        captions = [s.caption for s in examples]
        ids, mask = self.encode_texts(captions)
        same = torch.tensor([[a == b for b in captions] for a in captions])
        images = torch.stack([s.image for s in examples])
        return {"inputs": images, "input_ids": ids, "padding_mask": mask, "positives": same}

    def n_tokens(self, batch: Batch) -> int:
        """Image-caption pairs in the batch."""
        return int(batch["inputs"].shape[0])

    # -- model ---------------------------------------------------------------------------
    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """A :class:`~qkv.models.CLIPConfig` sized to the scenes (image size, one channel,
        patches of half an item) and the caption vocabulary."""
        sizes = {
            "image_size": self.data.image_size,
            "in_channels": 1,
            "patch_size": self.data.item_size // 2,
            "vocab_size": self.tokenizer.vocab_size,
            "max_len": self.max_len,
            "eos_token_id": EOS_ID,
            "pad_token_id": PAD_ID,
        }
        return sized_config(self, "clip", preset, self.default_model, sizes, overrides, base)

    # -- objective and metrics -----------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        """The symmetric contrastive loss of the batch times its size (``n`` = pairs)."""
        out = model(batch["inputs"], batch["input_ids"], padding_mask=batch["padding_mask"])
        loss = contrastive_loss(out.logits_per_image, batch["positives"])
        b = int(batch["inputs"].shape[0])
        return LossOutput(loss * b, b, {})

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        return {"loss": loss_sum / max(n, 1)}

    @torch.no_grad()
    def _text_features(self, model: nn.Module, texts: Sequence[str]) -> Tensor:
        ids, mask = self.encode_texts(texts)
        dev = model_device(model)
        return model.text_features(ids.to(dev), padding_mask=mask.to(dev))  # type: ignore[no-any-return]

    @torch.no_grad()
    def _image_features(self, model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
        dev = model_device(model)
        parts = [
            model.image_features(images[i : i + batch_size].to(dev))
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(parts)  # (n, embed_dim)

    def prompts(self, template: str) -> list[str]:
        """The class prompts of a key of :data:`PROMPTS` (for the zero-shot cell)."""
        cell = cell_name(*ZERO_SHOT_CELL, self.data.spec.grid)
        return class_prompts(self.data.vocab, PROMPTS[template].replace("{cell}", cell))

    def zero_shot(
        self,
        model: nn.Module,
        split: Split = "test",
        *,
        limit: int | None = None,
        batch_size: int = 256,
    ) -> dict[str, float]:
        """Zero-shot accuracy (0-100) of every template of :data:`PROMPTS` on (the first
        ``limit``) items of a split's pool, each placed alone in the top-left cell:
        ``{"zero_shot_photo": ..., ...}``. The test items of Fashion-MNIST are its 10,000
        ``t10k`` images; the valid items, 5,000 training images no scene of the training
        split holds."""
        items, labels, scale = self.data.pools()[split]
        items, labels = items[:limit], labels[:limit]
        images = single_item_scenes((items.float() / scale).clamp(0, 1), self.data.spec.grid)
        with evaluating(model):
            img = self._image_features(model, images, batch_size)
            out = {}
            for key in PROMPTS:
                txt = self._text_features(model, self.prompts(key))
                pred = model.similarity(img, txt).argmax(1).cpu()
                out[f"zero_shot_{key}"] = 100.0 * float((pred == labels).float().mean())
        return out

    def retrieval(
        self, model: nn.Module, split: Split = "test", *, limit: int | None = None
    ) -> dict[str, float]:
        """Recall@1 and @5 (0-100) image -> caption and caption -> image on a split's scenes,
        and the contrastive loss over all of them at once."""
        scenes = self.examples(split)[:limit]
        if len(scenes) == 0:
            raise TaskError(f"task {self.name!r}: split {split!r} has no scenes to evaluate")
        data = [scenes[i] for i in range(len(scenes))]
        captions = [s.caption for s in data]
        with evaluating(model):
            img = self._image_features(model, torch.stack([s.image for s in data]), 256)
            txt = torch.cat(
                [
                    self._text_features(model, captions[i : i + 256])
                    for i in range(0, len(data), 256)
                ]
            )
            sim = model.similarity(img, txt).float().cpu()  # (n, n)
        same = torch.tensor([[a == b for b in captions] for a in captions])
        return {
            "i2t_r1": recall_at(sim, same, 1),
            "i2t_r5": recall_at(sim, same, 5),
            "t2i_r1": recall_at(sim.T, same.T, 1),
            "t2i_r5": recall_at(sim.T, same.T, 5),
            "loss": float(contrastive_loss(sim, same)),
        }

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
        """``zero_shot`` (the headline: the task's template) and every template's zero-shot
        accuracy on (the first ``limit``) items of the split, then retrieval recall and the
        loss on (the first ``limit``) scenes of the split. No item's label is used in
        training, and no item of the valid or test pool is in a training scene."""
        zs = self.zero_shot(model, split, limit=limit)
        return {
            "zero_shot": zs[f"zero_shot_{self.prompt}"],
            **zs,
            **self.retrieval(model, split, limit=limit),
        }

    def samples(self, model: nn.Module, k: int = 3) -> list[str]:
        """The first ``k`` valid items: their class and the zero-shot top classes. Never test
        items: a run logs samples during training, and the test split is kept for the
        final evaluation."""
        labels = self.data.pools()["valid"][1]
        with evaluating(model):
            txt_classes = self._text_features(model, self.prompts(self.prompt))
            return [
                f"valid item {i} ({self.class_names[int(labels[i])]}): "
                + self._top_classes(model, self.item_scene("valid", i), txt_classes)
                for i in range(min(k, len(labels)))
            ]

    # -- inference -------------------------------------------------------------------------
    def read_image(self, source: str) -> Tensor:
        """A scene ``(1, S, S)``: an image file (grey, resized), ``SPLIT:N`` (the ``N``-th
        scene of a split) or ``item:N`` (the ``N``-th test item alone in the top-left cell).

        Raises:
            TaskError: a missing or unreadable file, or a bad index.
        """
        kind, _, index = source.partition(":")
        if kind == "item" and index.isdigit():
            n = len(self.data.pools()["test"][0])
            if int(index) >= n:
                raise TaskError(f"{source}: there are {n} test items")
            return self.item_scene("test", int(index))
        return self.data.read_image(source)

    def item_scene(self, split: Split, index: int) -> Tensor:
        """The ``index``-th item of a split's pool alone in the top-left cell of an otherwise
        empty scene ``(1, S, S)``, as zero-shot classification places it."""
        items, _, scale = self.data.pools()[split]
        item = (items[index].float() / scale).clamp(0, 1)
        return single_item_scenes(item[None], self.data.spec.grid)[0]

    def _top_classes(self, model: nn.Module, image: Tensor, txt_classes: Tensor) -> str:
        """``"sneaker 0.91, sandal 0.06, boot 0.02"``: the 3 class prompts an image matches
        best (``txt_classes``: the prompts' features)."""
        img = self._image_features(model, image[None], 1)
        top = model.similarity(img, txt_classes).softmax(-1)[0].topk(3)
        return ", ".join(
            f"{self.class_names[int(c)]} {float(p):.2f}" for p, c in zip(top.values, top.indices)
        )

    def _is_image(self, source: str) -> bool:
        kind, _, index = source.partition(":")
        # any existing path is an image input (a directory or /dev/zero is refused as one)
        return (kind in (*SPLITS, "item") and index.isdigit()) or os.path.lexists(source)

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
        """The image tower's attention on the picture, beside the text tower's (see :meth:`Task.pictures`)."""
        return report_for_clip(model, self, source, out, png_dir=png_dir, title=title)

    def predict(self, model: nn.Module, inputs: Sequence[str], **_: Any) -> list[str]:
        """For an image (a file, ``SPLIT:N`` or ``item:N``): its top 3 classes by the task's
        prompts, ``"sneaker 0.91, sandal 0.06, boot 0.02"``. For any other text: the 3 test
        scenes that match it best, ``"test:17 0.62 (a sneaker in the top left), ..."``."""
        scenes = self.examples("test")
        out = []
        with evaluating(model):
            txt_classes = self._text_features(model, self.prompts(self.prompt))
            for source in inputs:
                if self._is_image(source):
                    out.append(self._top_classes(model, self.read_image(source), txt_classes))
                    continue
                data = [scenes[i] for i in range(len(scenes))]
                img = self._image_features(model, torch.stack([s.image for s in data]), 256)
                probs = model.similarity(self._text_features(model, [source]), img).softmax(-1)[0]
                top = probs.topk(min(3, len(data)))
                out.append(
                    ", ".join(
                        f"test:{int(i)} {float(p):.2f} ({data[int(i)].caption})"
                        for p, i in zip(top.values, top.indices)
                    )
                )
        return out

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write ``task.json`` and ``tokenizer.json``."""
        directory = Path(directory)
        write_task_file(self, directory, {**self.data.state(), "max_len": self.max_len})
        self.tokenizer.save(directory)

    def load(self, directory: Path) -> None:
        """Read the tokenizer written by :meth:`save` (no scene is drawn)."""
        self._tokenizer = load_tokenizer(self.name, directory)


__all__ = ["PROMPTS", "CLIPTask", "recall_at", "single_item_scenes"]
