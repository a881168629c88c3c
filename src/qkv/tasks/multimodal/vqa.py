"""``vqa``: visual questions answered GPT-4V style, by a language model that reads the image
as its first tokens (LLaVA; Liu et al. 2023; :class:`~qkv.models.Llava`).

Each example is a scene of :mod:`qkv.data.scenes` (real items on a grid) and one of its
generated questions with its true answer: *what is in the top left?* -> *sneaker*, *how many
shoes are there?* -> *2*, *is there a coat?* -> *no*, *where is the bag?* -> *top right*,
*what is left of the bag?* -> *nothing*. The model reads ``[image tokens; question; answer;
<eos>]`` and is trained to produce the answer: the loss covers the answer tokens and the end
token only (the image and the question are context, never targets). A training scene's
question is drawn kind first (each of :data:`~qkv.data.scenes.QUESTION_KINDS` alike), then
among the scene's questions of that kind; evaluation asks every question of every scene.

Metrics: ``exact_match`` (the headline, 0-100: the greedy answer's tokens equal the true
answer's), ``em_<kind>`` per question kind, and ``loss`` (nats per answer token).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.data.scenes import QUESTION_KINDS, Question, Scene, SceneExamples
from qkv.data.tokenizers import EOS_ID, PAD_ID, Tokenizer
from qkv.layers.mode import evaluating
from qkv.models import CLIPConfig, TransformerConfig
from qkv.tasks._common import check_positive, load_tokenizer, sized_config, write_task_file
from qkv.tasks.base import Split, Task, TaskError, split_item, with_truth
from qkv.tasks.multimodal._scenes import SceneData
from qkv.tasks.multimodal._vqa_measured import MEASURED
from qkv.tasks.multimodal.viz_multimodal import report_for_vqa
from qkv.tasks.options import LengthOption, OptionsLike, option
from qkv.tasks.vision._items import SceneOptions
from qkv.training import checkpoint as ckpt
from qkv.training.evaluate import model_device, to_device
from qkv.training.objective import Batch, LossOutput

#: most answer tokens generated (the longest answers, *top left*, are 2 words)
MAX_ANSWER_TOKENS = 4
#: The most ``turns`` a training sequence takes (a scene asks far fewer questions).
MAX_TURNS = 64
#: Default ``turns``: questions per training scene (one: 3 and 6 did no better in
#: equal time, docs/clip.md)
TURNS = 1
IGNORE = -100


@dataclass(frozen=True)
class VQAExample:
    """A scene's image with one question and its answer, and in training the further turns
    of the conversation about the same image (``more``: LLaVA's multi-turn examples)."""

    image: Tensor
    question: Question
    more: tuple[Question, ...] = ()

    @property
    def turns(self) -> tuple[Question, ...]:
        """The questions in the order the sequence asks them."""
        return (self.question, *self.more)


#: Offset of the training questions' seeds from their scenes' (``SeededDraws``) seeds; torch
#: seeds its Mersenne Twister with the low 32 bits, so the offset must change those.
QUESTION_STREAM = 0x9E3779B9


class TrainQuestions(Sequence[VQAExample]):
    """Scene ``i`` with ``turns`` of its questions, drawn from ``(seed, i)`` without
    replacement: each turn a kind uniformly among the kinds the scene has left, then a
    question of that kind uniformly (fewer turns where the scene has fewer questions).

    Args:
        scenes: the scenes.
        seed: the question draw's seed.
        turns: questions per scene (1: a single question).
    """

    def __init__(self, scenes: SceneExamples, seed: int, turns: int = 1) -> None:
        self.scenes, self.seed, self.turns = scenes, seed, turns

    def __len__(self) -> int:
        return len(self.scenes)

    @overload
    def __getitem__(self, i: int) -> VQAExample: ...
    @overload
    def __getitem__(self, i: slice) -> TrainQuestions: ...
    def __getitem__(self, i: int | slice) -> VQAExample | TrainQuestions:
        if isinstance(i, slice):
            return TrainQuestions(self.scenes[i], self.seed, self.turns)
        scene = self.scenes[i]
        # a stream of its own: the scene's seed would replay the draws that laid the scene
        # out, so the question drawn would follow the layout (never an empty cell's `what`)
        index = self.seed * 1_000_003 + self.scenes.start + i
        g = torch.Generator().manual_seed((QUESTION_STREAM + index) % 2**32)
        left, asked = list(scene.questions), []
        while left and len(asked) < self.turns:
            kinds = [k for k in QUESTION_KINDS if any(q.kind == k for q in left)]
            kind = kinds[int(torch.randint(len(kinds), (1,), generator=g))]
            of_kind = [q for q in left if q.kind == kind]
            asked.append(of_kind[int(torch.randint(len(of_kind), (1,), generator=g))])
            left.remove(asked[-1])
        return VQAExample(scene.image, asked[0], tuple(asked[1:]))


def all_questions(scenes: Sequence[Scene]) -> list[VQAExample]:
    """Every question of every scene, scene by scene."""
    return [VQAExample(s.image, q) for s in scenes for q in s.questions]


#: The image-tower fields a ``vision_from`` CLIP sets.
VISION_FIELDS = ("vision_d_model", "vision_n_heads", "vision_d_ff", "vision_n_layers")


class VQATask(Task):
    """Visual question answering on scenes with a LLaVA-style model.

    Options: ``data`` (the Fashion-MNIST directory; default the Debian package's), ``seed``,
    ``n_train`` / ``n_valid`` / ``n_test`` (scenes; evaluation asks all their questions),
    ``items`` (``"fashion-mnist"`` or ``"digits"``), ``grid`` (2 or 3),
    ``vision_from`` (a ``clip`` checkpoint whose image tower starts the model),
    ``turns`` (questions per training scene, asked one after another in one
    sequence as LLaVA's multi-turn conversations; default :data:`TURNS`).
    """

    @dataclass
    class Options(LengthOption, SceneOptions):
        """vqa's options."""

        vision_from: str | None = option(
            None,
            "a clip checkpoint (trained on the same scenes) whose image tower starts the "
            "model, as LLaVA starts from a pretrained CLIP",
            shown="none, trained from scratch",
        )
        turns: int = option(
            TURNS,
            "questions per training scene, asked one after another in one sequence "
            "(LLaVA's multi-turn conversations)",
        )

    options: Options
    measured = MEASURED  # the timed runs' numbers and samples, for --help
    name = "vqa"
    kind = "vqa"
    names_inputs = True
    unit = "ex"  # the throughput counts questions
    #: a 3-layer image tower (14-pixel patches, 2x2 per item), a 4-layer LM, both 128 wide
    default_model: ClassVar[dict[str, Any]] = {
        "d_model": 128,
        "n_heads": 4,
        "d_ff": 512,
        "n_layers": 4,
        "vision_d_model": 128,
        "vision_n_heads": 4,
        "vision_d_ff": 512,
        "vision_n_layers": 3,
        "dropout": 0.0,
        "attn_dropout": 0.0,
    }
    #: AdamW, cosine decay
    recipe: ClassVar[dict[str, Any]] = {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.05,
        "clip_norm": 1.0,
        "batch_size": 128,
        "schedule": "cosine",
        "warmup": 100,
        "eval_every": 500,
        "eval_limit": 100,
    }

    def __init__(self, options: OptionsLike = None) -> None:
        super().__init__(options)
        self.data = SceneData(self)
        self.turns = self.options.turns
        # each turn adds a question and its answer to every training sequence: a million
        # turns is a position table no memory holds, not a conversation
        check_positive(self.name, "turns", self.turns, maximum=MAX_TURNS)
        self.vision_from = self.options.vision_from
        if self.vision_from is not None and not isinstance(self.vision_from, str):
            raise TaskError(f"task 'vqa': vision_from must be a path, got {self.vision_from!r}")
        self._clip: tuple[Path, CLIPConfig] | None = None
        self.max_text = self.options.max_len or (24 if self.data.spec.grid == 2 else 32)
        self._tokenizer: Tokenizer | None = None

    @property
    def tokenizer(self) -> Tokenizer:
        """The word tokenizer of the training questions and answers (trained on first use,
        or loaded)."""
        if self._tokenizer is None:
            self._tokenizer = self.data.train_tokenizer()
        return self._tokenizer

    @property
    def n_patches(self) -> int:
        """Image tokens per scene (2 x 2 per item)."""
        return (2 * self.data.spec.grid) ** 2

    # -- data ----------------------------------------------------------------------------
    def examples(self, split: Split) -> Sequence[VQAExample]:
        """Training: one drawn question per scene (:class:`TrainQuestions`); valid and test:
        every question of every scene."""
        scenes = self.data.scenes(split)
        if split == "train":
            return TrainQuestions(scenes, self.options.seed, self.turns)
        return all_questions([scenes[i] for i in range(len(scenes))])

    def _question_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)[: self.max_text - MAX_ANSWER_TOKENS - 1]

    def answer_ids(self, answer: str) -> list[int]:
        """An answer's tokens (without the end token)."""
        return self.tokenizer.encode(answer)[:MAX_ANSWER_TOKENS]

    def collate(self, examples: Sequence[VQAExample]) -> Batch:
        """``inputs`` ``(b, 1, S, S)``; ``input_ids`` ``(b, s)``: each turn's question,
        answer and end token, one turn after another, right-padded; ``padding_mask``;
        ``labels`` ``(b, s)``: at each position the next token where that is an answer or
        end token, else -100 (no loss)."""
        rows, targets = [], []
        for ex in examples:
            row: list[int] = []
            target: list[int] = []
            for q in ex.turns:
                ids_q = self._question_ids(q.text)
                answer = [*self.answer_ids(q.answer), EOS_ID]
                # position t predicts token t + 1: the answer's first token at the
                # question's last position
                target += [IGNORE] * (len(ids_q) - 1) + answer + [IGNORE]
                row += ids_q + answer
            rows.append(row)
            targets.append(target)
        s = max(len(r) for r in rows)
        ids = torch.full((len(rows), s), PAD_ID, dtype=torch.long)
        labels = torch.full((len(rows), s), IGNORE, dtype=torch.long)
        for i, (r, t) in enumerate(zip(rows, targets)):
            ids[i, : len(r)] = torch.tensor(r)
            labels[i, : len(t)] = torch.tensor(t)
        images = torch.stack([ex.image for ex in examples])
        return {"inputs": images, "input_ids": ids, "padding_mask": ids != PAD_ID, "labels": labels}

    def n_tokens(self, batch: Batch) -> int:
        """Answer tokens (with the end tokens) in the batch."""
        return int((batch["labels"] != IGNORE).sum())

    # -- model ---------------------------------------------------------------------------
    def model_config(
        self, preset: str | None = None, *, base: TransformerConfig | None = None, **overrides: Any
    ) -> TransformerConfig:
        """A :class:`~qkv.models.LlavaConfig` sized to the scenes (image size, one channel,
        patches of half an item), the vocabulary and ``image tokens + max_len``."""
        sizes = {
            "image_size": self.data.image_size,
            "in_channels": 1,
            "patch_size": self.data.item_size // 2,
            "vocab_size": self.tokenizer.vocab_size,
            "max_len": self.n_patches + self.max_text * self.turns,
            "pad_token_id": PAD_ID,
        }
        if self.vision_from is not None and base is None:
            _, clip = self._clip_checkpoint()
            sizes.update({k: getattr(clip, k) for k in (*VISION_FIELDS, "activation")})
        return sized_config(self, "llava", preset, self.default_model, sizes, overrides, base)

    def _clip_checkpoint(self) -> tuple[Path, CLIPConfig]:
        """The ``vision_from`` CLIP checkpoint's directory and config (read once, checked)."""
        if self._clip is None:
            try:
                d = ckpt.check_checkpoint(str(self.vision_from))
                cfg = ckpt.read_model_config(d)
            except (ckpt.CheckpointError, OSError, ValueError) as e:
                raise TaskError(f"task 'vqa': vision_from: {e}") from e
            if not isinstance(cfg, CLIPConfig):
                raise TaskError(
                    f"task 'vqa': vision_from {self.vision_from!r} holds a "
                    f"{type(cfg).__name__}, not a CLIP checkpoint"
                )
            want = {"image_size": self.data.image_size, "in_channels": 1,
                    "patch_size": self.data.item_size // 2}  # fmt: skip
            bad = {k: getattr(cfg, k) for k, v in want.items() if getattr(cfg, k) != v}
            if bad:
                raise TaskError(
                    f"task 'vqa': the CLIP of vision_from reads other images: {bad} "
                    f"(these scenes need {want})"
                )
            self._clip = (d, cfg)
        return self._clip

    def init_model(self, model: nn.Module) -> str | None:
        """With ``vision_from``, copy the image tower of that CLIP checkpoint (a
        ``clip`` run on the same scenes) into the model, as LLaVA starts from a pretrained
        CLIP; the projector and the language model stay as initialised."""
        if self.vision_from is None:
            return None
        d, _ = self._clip_checkpoint()
        tensors = ckpt.read_tensors(d / ckpt.MODEL_FILE)
        tower = {k[len("vision.") :]: v for k, v in tensors.items() if k.startswith("vision.")}
        try:
            model.vision.load_state_dict(tower, strict=True)  # type: ignore[union-attr, operator]
        except RuntimeError as e:
            raise TaskError(f"task 'vqa': the CLIP image tower does not fit: {e}") from e
        n = sum(v.numel() for v in tower.values())
        return f"image tower from the CLIP checkpoint {d} ({n:,} parameters)"

    # -- objective and metrics -----------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, *, label_smoothing: float = 0.0) -> LossOutput:
        """Summed cross entropy over the answer and end tokens (``n`` = those tokens)."""
        logits = model(batch["inputs"], batch["input_ids"], padding_mask=batch["padding_mask"])
        labels = batch["labels"]
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            labels.flatten(),
            ignore_index=IGNORE,
            reduction="sum",
            label_smoothing=label_smoothing,
        )
        return LossOutput(loss, int((labels != IGNORE).sum()), {})

    @torch.no_grad()
    def answer(self, model: nn.Module, images: Tensor, questions: Sequence[str]) -> list[list[int]]:
        """Greedy answers (token ids, the end token left out) to one question per image.

        The questions are left-padded, so every row's next token comes at the same index;
        the model's positions skip the padding. The image tokens are computed once; each
        step re-runs the (short) text, the uncached reference of decoding.
        """
        dev = model_device(model)
        qs = [self._question_ids(q) for q in questions]
        s = max(len(q) for q in qs)
        ids = torch.full((len(qs), s), PAD_ID, dtype=torch.long)
        for i, q in enumerate(qs):
            ids[i, s - len(q) :] = torch.tensor(q, dtype=torch.long)
        ids, mask = ids.to(dev), (ids != PAD_ID).to(dev)
        with evaluating(model):
            tokens = model.image_tokens(images.to(dev))
            done = torch.zeros(len(qs), dtype=torch.bool, device=dev)
            out: list[list[int]] = [[] for _ in qs]
            for _ in range(MAX_ANSWER_TOKENS + 1):
                logits = model(None, ids, padding_mask=mask, image_tokens=tokens)[:, -1]
                tok = logits.argmax(-1)  # (b,)
                for i in (~done).nonzero().flatten().tolist():
                    if int(tok[i]) != EOS_ID:
                        out[i].append(int(tok[i]))
                done |= tok == EOS_ID
                if bool(done.all()):
                    break
                ids = torch.cat((ids, tok[:, None]), dim=1)
                mask = torch.cat((mask, torch.ones_like(tok, dtype=torch.bool)[:, None]), dim=1)
        return out

    def metrics(self, loss_sum: float, n: int, logs: Mapping[str, float]) -> dict[str, float]:
        return {"loss": loss_sum / max(n, 1)}

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
        """``exact_match`` (the headline), ``em_<kind>`` per question kind and the loss, on
        every question of (the first ``limit``) scenes of a split.

        Raises:
            TaskError: the split has no scenes.
        """
        scenes = self.data.scenes(split)[:limit]
        if len(scenes) == 0:
            raise TaskError(f"task {self.name!r}: split {split!r} has no scenes to evaluate")
        data = all_questions([scenes[i] for i in range(len(scenes))])
        dev = model_device(model)
        right = {k: [0, 0] for k in QUESTION_KINDS}
        loss_sum, n = 0.0, 0
        with evaluating(model), torch.no_grad():
            for start in range(0, len(data), batch_size):
                part = data[start : start + batch_size]
                out = self.loss(model, to_device(self.collate(part), dev))
                loss_sum, n = loss_sum + float(out.loss_sum), n + out.n
                answers = self.answer(
                    model, torch.stack([ex.image for ex in part]), [ex.question.text for ex in part]
                )
                for ex, got in zip(part, answers):
                    right[ex.question.kind][0] += got == self.answer_ids(ex.question.answer)
                    right[ex.question.kind][1] += 1
        total = sum(r for r, _ in right.values()), sum(c for _, c in right.values())
        per_kind = {f"em_{k}": 100.0 * r / c for k, (r, c) in right.items() if c}
        return {
            "exact_match": 100.0 * total[0] / total[1],
            **per_kind,
            "loss": loss_sum / max(n, 1),
        }

    def samples(self, model: nn.Module, k: int = 3) -> list[str]:
        """The first ``k`` questions of the first valid scene, answered."""
        scene = self.data.scenes("valid")[0]
        qs = scene.questions[:k]
        got = self.answer(model, torch.stack([scene.image] * len(qs)), [q.text for q in qs])
        return [
            f"valid scene 0: {q.text} -> {self.tokenizer.decode(a)!r} (true: {q.answer!r})"
            for q, a in zip(qs, got)
        ]

    # -- inference -------------------------------------------------------------------------
    def read_image(self, source: str) -> Tensor:
        """A scene ``(1, S, S)``: an image file (grey, resized) or ``SPLIT:N``."""
        return self.data.read_image(source)

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
        """Where the answer's tokens look on the image, for one question (see :meth:`Task.pictures`)."""
        return report_for_vqa(
            model, self, source, out, question=question, png_dir=png_dir, title=title
        )

    def predict(
        self, model: nn.Module, inputs: Sequence[str], *, question: str | None = None, **_: Any
    ) -> list[str]:
        """The answer to ``question`` about each input scene (a file or ``SPLIT:N``). Without
        a question, every generated question of a ``SPLIT:N`` scene, each with the model's
        and the true answer.

        Raises:
            TaskError: no question for an image file, or an empty one.
        """
        _check_question(question)
        out = []
        for source in inputs:
            image = self.read_image(source)
            if question is not None:
                (got,) = self.answer(model, image[None], [question])
                out.append(self.tokenizer.decode(got))
                continue
            item = split_item(source)
            if item is None:
                raise TaskError(f"input {source!r}: ask something with --question")
            qs = self.data.scenes(item[0])[item[1]].questions
            got_all = self.answer(model, torch.stack([image] * len(qs)), [q.text for q in qs])
            out.append(
                "; ".join(
                    with_truth(f"{q.text} {self.tokenizer.decode(a)}", q.answer)
                    for q, a in zip(qs, got_all)
                )
            )
        return out

    def examples_for(self, source: str, question: str | None) -> tuple[Tensor, str]:
        """An input scene and a question about it (default: the scene's first generated
        question when ``source`` is ``SPLIT:N``), for ``qkv viz``.

        Raises:
            TaskError: no question for an image file, or an empty one.
        """
        _check_question(question)
        image = self.read_image(source)
        if question is not None:
            return image, question
        item = split_item(source)
        if item is None:
            raise TaskError(f"input {source!r}: ask something with --question")
        return image, self.data.scenes(item[0])[item[1]].questions[0].text

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write ``task.json`` and ``tokenizer.json``."""
        directory = Path(directory)
        write_task_file(self, directory, {**self.data.state(), "max_len": self.max_text})
        self.tokenizer.save(directory)

    def load(self, directory: Path) -> None:
        """Read the tokenizer written by :meth:`save` (no scene is drawn)."""
        self._tokenizer = load_tokenizer(self.name, directory)


def _check_question(question: str | None) -> None:
    """Refuse an empty question (it has no tokens to ask with)."""
    if question is not None and not question.strip():
        raise TaskError(f"the question {question!r} is empty: ask something (--question TEXT)")


__all__ = ["MAX_ANSWER_TOKENS", "TrainQuestions", "VQAExample", "VQATask", "all_questions"]
