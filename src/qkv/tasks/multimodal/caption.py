"""``caption``: a ViT encoder and a Transformer decoder describe scenes of real images.

Each scene is a 2x2 (``--grid 3``: 3x3) grid of real Fashion-MNIST items, some cells
empty (:mod:`qkv.data.scenes`); the text is generated from the layout, so every caption is
true. Train scenes hold items of the Fashion-MNIST training images less 5,000, valid scenes
those 5,000, test scenes the ``t10k`` images (:mod:`qkv.tasks.vision._items`): no item image is in
two splits. ``--items digits`` builds 16x16 scenes of scikit-learn's 8x8 digits
instead (small and always there: the tests use them).

Training is teacher forcing on the scene's caption (one of four templates, chosen per scene;
``--template positions`` trains on one template only). Evaluation decodes each test
scene (greedy, or beam search with ``--beam-size``) and scores it against all four captions
of the scene as references: corpus BLEU-4 (sacrebleu, 0-100) and CIDEr (pycocoevalcap's
``Cider`` on qkv's own tokenization, :func:`qkv.data.metrics.caption_tokens`; 0-10).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from qkv.data import metrics
from qkv.data.batching import batched, pad_ids
from qkv.data.scenes import (
    CAPTION_TEMPLATES,
    DIGITS,
    FASHION,
    NUMBER_WORDS,
    Scene,
    SceneExamples,
    SceneSpec,
    Vocabulary,
)
from qkv.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    TOKENIZER_FILE,
    Tokenizer,
    TokenizerFileError,
    WordTokenizer,
)
from qkv.generation import generate
from qkv.layers.mode import evaluating
from qkv.models import Captioner, TransformerConfig
from qkv.tasks._common import (
    check_choice,
    check_positive,
    model_device,
    read_task_file,
    sized_config,
    write_task_file,
)
from qkv.tasks.base import SPLITS, Split, Task, TaskError
from qkv.tasks.multimodal.viz_caption import report_for_captioner
from qkv.tasks.options import LengthOption, OptionsLike, option
from qkv.tasks.vision._image import read_task_image
from qkv.tasks.vision._items import ITEMS, SceneOptions, item_pools
from qkv.training.evaluate import evaluate_sums
from qkv.training.objective import Batch, LossOutput
from qkv.training.objectives import Seq2SeqObjective, token_cross_entropy

#: per item source: class words, patch side, default scene counts (train, valid, test)
SOURCES: dict[str, tuple[Vocabulary, int, dict[str, int]]] = {
    "fashion-mnist": (FASHION, 7, {"train": 50000, "valid": 500, "test": 1000}),
    "digits": (DIGITS, 4, {"train": 5000, "valid": 200, "test": 200}),
}
#: the longest caption in tokens of each grid (the count template of a full grid, plus room)
DEFAULT_MAX_LEN = {2: 40, 3: 96}
#: scenes whose captions train the word vocabulary
VOCAB_SCENES = 2000


class CaptionTask(Task):
    """Image captioning of scenes with a :class:`~qkv.models.Captioner`.

    Options: ``data`` (the Fashion-MNIST directory; default the Debian package's), ``seed``,
    ``n_train`` / ``n_valid`` / ``n_test`` (scenes; default 50,000 / 500 / 1,000),
    ``max_len`` (caption tokens), ``items`` (``"fashion-mnist"`` or ``"digits"``),
    ``grid`` (2 or 3), ``template`` (``"any"``: each scene's own pick, or
    one of :data:`~qkv.data.scenes.CAPTION_TEMPLATES`).
    """

    @dataclass
    class Options(LengthOption, SceneOptions):
        """caption's options."""

        template: str = option(
            "any",
            "the caption template trained on: any (each scene's own pick) or one template",
            choices=("any", *CAPTION_TEMPLATES),
        )
        tokenizer: str | None = option(None, "tokenizer kind", choices=("word",), shown="word")

    options: Options
    name = "caption"
    kind = "caption"
    names_inputs = True
    decoding = "all"
    eval_beam = True
    unit = "img"  # the throughput counts scenes
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 128,
        "n_heads": 4,
        "d_ff": 512,
        "n_encoder_layers": 2,
        "n_decoder_layers": 2,
        "dropout": 0.1,
    }
    recipe: ClassVar[dict[str, Any]] = {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.01,
        "batch_size": 64,
        "schedule": "cosine",
        "warmup": 200,
        "eval_every": 500,
        "eval_limit": 200,
    }

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        o = self.options
        self.items = o.items
        check_choice(self.name, "items", self.items, ITEMS)
        self.grid = o.grid
        check_choice(self.name, "grid", self.grid, (2, 3))
        self.template = o.template
        check_choice(self.name, "template", self.template, ("any", *CAPTION_TEMPLATES))
        if self.items == "digits" and o.data is not None:
            raise TaskError(f"task {self.name!r} with items 'digits' reads no --data")
        for opt in ("n_train", "n_valid", "n_test"):
            if getattr(o, opt) is not None:
                check_positive(self.name, opt, getattr(o, opt), minimum=0)
        if o.tokenizer not in (None, "word"):
            raise TaskError(f"task {self.name!r} uses a word tokenizer, got {o.tokenizer!r}")
        self.max_len = o.max_len if o.max_len is not None else DEFAULT_MAX_LEN[self.grid]
        check_positive(self.name, "max_len", self.max_len)
        self.vocab, self.patch_size, self.default_sizes = SOURCES[self.items]
        self.spec = SceneSpec(grid=self.grid)
        self._splits: dict[str, SceneExamples] | None = None
        self._tok: Tokenizer | None = None
        self._image_size: int | None = None

    # -- data ----------------------------------------------------------------------------
    def examples(self, split: Split) -> SceneExamples:
        """The scenes of a split (drawn on demand, deterministic given the seed)."""
        check_choice(self.name, "split", split, SPLITS)
        if self._splits is None:
            o = self.options
            sizes = {
                s: getattr(o, f"n_{s}") if getattr(o, f"n_{s}") is not None else n
                for s, n in self.default_sizes.items()
            }
            pools = item_pools(self.items, o.data, o.seed, self.name)
            self._splits = {
                s: SceneExamples(
                    images, labels, sizes[s], o.seed * 3 + k, self.spec, self.vocab, scale
                )
                for k, (s, (images, labels, scale)) in enumerate(pools.items())
            }
        return self._splits[split]

    @property
    def image_size(self) -> int:
        """Scene side in pixels."""
        if self._image_size is None:
            self._image_size = self.examples("train").image_size
        return self._image_size

    @property
    def tokenizer(self) -> Tokenizer:
        """The word tokenizer of the captions (trained on the first 2,000 train scenes'
        captions and every class word)."""
        if self._tok is None:
            train = self.examples("train")
            texts = [c for i in range(min(VOCAB_SCENES, len(train))) for c in train[i].captions]
            words = [*self.vocab.names, *self.vocab.plurals, *NUMBER_WORDS]
            self._tok = WordTokenizer.train([*texts, " ".join(words)], lowercase=True)
        return self._tok

    def target(self, scene: Scene) -> str:
        """The caption a scene is trained on."""
        if self.template == "any":
            return scene.caption
        return scene.captions[CAPTION_TEMPLATES.index(self.template)]

    def collate(self, examples: Sequence[Scene]) -> Batch:
        """``images`` ``(b, 1, S, S)``; ``tgt_in`` = ``[BOS] + caption``, ``tgt_out`` =
        ``caption + [EOS]`` ``(b, s)`` and ``tgt_padding_mask`` (True = real token)."""
        ids = [self.tokenizer.encode(self.target(s))[: self.max_len - 1] for s in examples]
        tgt_in, mask = pad_ids([[BOS_ID, *t] for t in ids])
        tgt_out, _ = pad_ids([[*t, EOS_ID] for t in ids])
        images = torch.stack([s.image for s in examples])
        return {"images": images, "tgt_in": tgt_in, "tgt_out": tgt_out, "tgt_padding_mask": mask}

    def n_tokens(self, batch: Batch) -> int:
        """Scenes in the batch."""
        return int(batch["images"].shape[0])

    # -- model ---------------------------------------------------------------------------
    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """A :class:`~qkv.models.CaptionerConfig` sized to the scenes and the vocabulary.

        Raises:
            TaskError: a preset of another family, or sizes that do not fit the data.
        """
        sizes = {
            "image_size": self.image_size,
            "in_channels": 1,
            "vocab_size": self.tokenizer.vocab_size,
            "max_len": self.max_len,
            "pad_token_id": PAD_ID,
        }
        default = {"patch_size": self.patch_size, **self.default_model}
        return sized_config(self, "captioner", preset, default, sizes, overrides, base)

    # -- objective and metrics -----------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        """Teacher-forced cross entropy summed over the real caption tokens."""
        logits = model(
            batch["images"], batch["tgt_in"], tgt_padding_mask=batch["tgt_padding_mask"]
        )  # (b, s, V)
        loss_sum, n, correct = token_cross_entropy(
            logits, batch["tgt_out"], label_smoothing=label_smoothing
        )
        return LossOutput(loss_sum, n, {"correct": correct})

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        """Teacher-forced ``loss``, ``ppl`` and ``token_acc``."""
        return Seq2SeqObjective().metrics(loss_sum, n, logs)

    @torch.no_grad()
    def caption_images(
        self,
        model: nn.Module,
        images: Tensor,
        *,
        batch_size: int = 64,
        progress: bool = False,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Captions of ``(n, 1, S, S)`` images with :func:`qkv.generation.generate` (greedy
        unless ``strategy``/``beam_size`` say otherwise; at most ``max_len - 1`` words)."""
        kw = dict(generate_kwargs)
        if kw.get("beam_size", 1) > 1:
            kw.setdefault("strategy", "beam")
        kw.setdefault("max_new_tokens", self.max_len - 1)
        kw |= {"bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": PAD_ID}
        device = model_device(model)
        out: list[str] = []
        chunks = list(batched(range(len(images)), batch_size))
        for chunk in tqdm(chunks, desc="caption", leave=False, disable=not progress):
            gen = generate(model, images[chunk[0] : chunk[-1] + 1].to(device), **kw)
            out += [self.tokenizer.decode(t) for t in gen.tokens]
        return out

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
        """Generated captions of (the first ``limit`` scenes of) a split against all the
        scene's captions.

        Returns:
            ``bleu`` (BLEU-4, sacrebleu, 0-100; the headline), ``cider`` (0-10),
            ``exact_match`` (0-100: the caption is one of the references), ``loss`` (nats
            per caption token) and ``ppl``.

        Raises:
            TaskError: the split is empty.
        """
        scenes = self.examples(split)[:limit]
        if len(scenes) == 0:
            raise TaskError(f"task {self.name!r}: split {split!r} has no examples to evaluate")
        total, n, _ = evaluate_sums(model, self, scenes, batch_size=batch_size, progress=progress)
        drawn = [scenes[i] for i in range(len(scenes))]
        images = torch.stack([s.image for s in drawn])
        with evaluating(model):
            hyps = self.caption_images(
                model, images, batch_size=batch_size, beam_size=beam_size, progress=progress
            )
        refs = [list(s.captions) for s in drawn]
        loss = total / max(n, 1)
        return {
            "bleu": metrics.bleu(hyps, refs),
            "cider": metrics.cider(hyps, refs),
            "exact_match": metrics.exact_match(hyps, refs),
            "loss": loss,
            "ppl": metrics.perplexity(loss),
        }

    def samples(self, model: nn.Module, k: int = 3) -> list[str]:
        """The first ``k`` valid scenes: the greedy caption beside the scene's own."""
        scenes = [self.examples("valid")[i] for i in range(min(k, len(self.examples("valid"))))]
        if not scenes:
            return []
        hyps = self.caption_images(model, torch.stack([s.image for s in scenes]))
        return [
            f"valid scene {i}: {h}  (reference: {s.caption})"
            for i, (h, s) in enumerate(zip(hyps, scenes))
        ]

    # -- inference -----------------------------------------------------------------------
    def read_image(self, source: str) -> Tensor:
        """One scene ``(1, S, S)``: an image file (grey, resized) or ``SPLIT:N``."""
        split, _, index = source.partition(":")
        if split in SPLITS and index.isdigit():
            data = self.examples(split)  # type: ignore[arg-type]
            if int(index) >= len(data):
                raise TaskError(f"{source}: split {split!r} has {len(data)} scenes")
            return data[int(index)].image
        return read_task_image(self, source, self.image_size)

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
        """Where each word of the caption looks on the image (see :meth:`Task.pictures`)."""
        if not isinstance(model, Captioner):
            raise ValueError(f"task 'caption' needs a Captioner, got {type(model).__name__}")
        return report_for_captioner(model, self, source, out, png_dir=png_dir, title=title)

    def predict(self, model: nn.Module, inputs: Sequence[str], **generate_kwargs: Any) -> list[str]:
        """The caption of each input, an image file or ``SPLIT:N`` (a scene)."""
        images = torch.stack([self.read_image(x) for x in inputs])
        return self.caption_images(model, images, **generate_kwargs)

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write ``task.json`` (image size, caption length) and ``tokenizer.json``."""
        directory = Path(directory)
        state = {"image_size": self.image_size, "max_len": self.max_len}
        write_task_file(self, directory, state)
        self.tokenizer.save(directory)

    def load(self, directory: Path) -> None:
        """Read the tokenizer and the image size (no scene is drawn).

        Raises:
            TaskError: a missing or damaged tokenizer file (named).
        """
        directory = Path(directory)
        try:
            self._tok = Tokenizer.load(directory)
        except (FileNotFoundError, TokenizerFileError) as e:
            raise TaskError(f"task {self.name!r}: {e} ({TOKENIZER_FILE})") from e
        size = read_task_file(directory)["state"].get("image_size")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            self._image_size = size


__all__ = ["CaptionTask"]
