"""``qkv train``: train a model on a task (single process, or DDP under torchrun).

The training flags are generated from :class:`qkv.training.TrainConfig` (one source of
defaults and help); the data flags fill :class:`qkv.tasks.TaskOptions`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from qkv.cli import CLIError
from qkv.cli._common import (
    _device,
    _int,
    add_config_args,
    flag_message,
    given_fields,
    parse_overrides,
)
from qkv.models.config import CONFIG_CLASSES
from qkv.tasks import TASKS, Task, TaskOptions, build_trainer, get_task
from qkv.training import TrainConfig
from qkv.training.config import UNBOUNDED_STEPS
from qkv.training.progress import parse_duration
from qkv.training.trainer import TrainingInterrupted

#: data flag -> TaskOptions field (extra options go to ``TaskOptions.extra``)
DATA_FLAGS: dict[str, str] = {
    "data": "data",
    "data_seed": "seed",
    "n_train": "n_train",
    "n_valid": "n_valid",
    "n_test": "n_test",
    "max_len": "max_len",
    "tokenizer": "tokenizer",
    "vocab_size": "vocab_size",
}
EXTRA_FLAGS = (
    "attention",
    "corpus",
    "reverse",
    "augment",
    "dictionary",
    "items",
    "grid",
    "template",
    "classifier",
    "vision_from",
    "turns",
    "image_tokens",
    "vq_steps",
    "ctc_weight",
    "tasks",
    "mix_cap",
)
DEFAULT_TASK = "synthetic"


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="train a model on a task",
        description="Train a model on a task. Under `torchrun --nproc_per_node=N -m qkv train "
        "...` the global batch is split over N processes (DDP; gloo on CPU, nccl on GPU). "
        "Ctrl-C saves a checkpoint and prints how to resume.",
    )
    p.add_argument(
        "--task",
        default=argparse.SUPPRESS,
        help=f"one of: {', '.join(sorted(TASKS))} (default: {DEFAULT_TASK}; a resumed run "
        "keeps its own)",
    )
    p.add_argument(
        "--out", default=None, help="run directory (default: runs/TASK); one run per directory"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly: its task, model and settings come from its "
        "checkpoint; only --steps, evaluation/save/log cadence, device and threads may change",
    )
    p.add_argument(
        "--show-recipe",
        action="store_true",
        help="print the training settings and model config this command would use (the "
        "task's recipe with your flags applied) as JSON, and exit",
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--preset",
        help="a model preset sized to the task (default: the task's own; image tasks: "
        "swin for the task's own Swin Transformer)",
    )
    m.add_argument(
        "--model",
        action="append",
        metavar="KEY=VALUE",
        help="a model config field, e.g. d_model=128 (repeatable; `--model help` lists them)",
    )
    m.add_argument(
        "--init-from", metavar="DIR", help="start from the weights of a qkv checkpoint or run"
    )
    m.add_argument(
        "--init-from-hf",
        metavar="DIR",
        help="start from the weights of a Hugging Face model directory (fine-tuning: the "
        "architecture is the pretrained one; a new head is initialised and listed)",
    )
    d = p.add_argument_group("data")
    sup = argparse.SUPPRESS
    d.add_argument(
        "--data",
        default=sup,
        help="data file or directory (translate: pairs.tsv; lm: a text file; classify: "
        "label<TAB>text lines; fashion-mnist: a directory of the .gz files) (default: the "
        "task's own data)",
    )
    d.add_argument(
        "--data-seed",
        type=_int,
        default=sup,
        help="seed of data generation and splits (default: 0)",
    )
    d.add_argument(
        "--n-train",
        type=_int,
        default=sup,
        help="training examples (default: the task's, all of a data file)",
    )
    for split in ("valid", "test"):
        d.add_argument(
            f"--n-{split}",
            type=_int,
            default=sup,
            help=f"{split} examples of generated data (asr, synthetic tasks) (default: the task's)",
        )
    d.add_argument(
        "--max-len", type=_int, default=sup, help="longest sequence in tokens (default: the task's)"
    )
    d.add_argument(
        "--tokenizer",
        choices=["char", "word", "bpe"],
        default=sup,
        help="tokenizer kind (default: the task's)",
    )
    d.add_argument(
        "--vocab-size", type=_int, default=sup, help="BPE vocabulary size (default: the task's)"
    )
    d.add_argument(
        "--attention",
        default=sup,
        help="attention pattern, for tasks that take one (listops: dense, local or bigbird; "
        "default: dense)",
    )
    d.add_argument(
        "--corpus",
        default=sup,
        help="a named real corpus, for tasks that read one (lm: pydoc, Python's help topics; "
        "kjv, the King James Bible from Debian's bible-kjv; classify: debian, package "
        "descriptions by section) (default: the task's)",
    )
    d.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=sup,
        help="image tasks: random shifts, flips and erasing of training images as the "
        "task's recipe says; asr: SpecAugment's time and frequency masks (default: on)",
    )
    d.add_argument(
        "--dictionary",
        type=_int,
        default=sup,
        metavar="N",
        help="translate (the German-English dictionary): add N of the dictionary's word and phrase pairs to the "
        "training data (default: the task's recipe)",
    )
    d.add_argument(
        "--items",
        default=sup,
        help="detect, caption, clip, vqa: the items on the canvases or in the scenes, "
        "fashion-mnist or digits; text2image: the items drawn (default: fashion-mnist)",
    )
    d.add_argument(
        "--grid",
        type=_int,
        default=sup,
        help="caption: cells per side of a scene, 2 or 3 (default: 2)",
    )
    d.add_argument(
        "--template",
        default=sup,
        help="caption: the caption template trained on, any (each scene's own pick), "
        "positions, relations, count or rows (default: any)",
    )
    d.add_argument(
        "--classifier",
        default=sup,
        metavar="DIR",
        help="text2image: the checkpoint of a fashion-mnist (or digits) classifier that "
        "judges the class of generated images (the class_acc metric) (default: none, the "
        "loss is the headline)",
    )
    d.add_argument(
        "--vision-from",
        default=sup,
        metavar="DIR",
        help="vqa: a clip checkpoint (trained on the same scenes) whose image tower starts the "
        "model, as LLaVA starts from a pretrained CLIP (default: none, trained from scratch)",
    )
    d.add_argument(
        "--turns",
        default=sup,
        type=int,
        metavar="N",
        help="vqa: questions per training scene, asked one after another in one sequence "
        "(LLaVA's multi-turn conversations) (default: the task's)",
    )
    d.add_argument(
        "--image-tokens",
        default=sup,
        choices=("vq", "intensity"),
        help="text2image: image tokens from a VQ-VAE trained first (vq) or quantized "
        "intensities of 4x4 blocks (intensity) (default: vq)",
    )
    d.add_argument(
        "--vq-steps",
        type=_int,
        default=sup,
        metavar="N",
        help="text2image: training steps of the VQ-VAE (default: the task's)",
    )
    d.add_argument(
        "--ctc-weight",
        type=float,
        default=sup,
        metavar="W",
        help="asr: weight of the auxiliary CTC loss, (1 - W) CE + W CTC; 0 trains the decoder "
        "alone and builds no CTC head (default: 0.5)",
    )
    d.add_argument(
        "--reverse",
        action="store_true",
        default=sup,
        help="translate: swap the two sides (trans-de-en: English -> German)",
    )
    d.add_argument(
        "--tasks",
        default=sup,
        help="text2text: the tasks of the mixture, comma-separated, among summarize, translate "
        "and classify (one name: its single-task baseline) (default: all three)",
    )
    d.add_argument(
        "--mix-cap",
        type=_int,
        default=sup,
        metavar="K",
        help="text2text: examples-proportional mixing with each task's size capped at K (T5, "
        "sec. 3.5.2); 0: no cap (default: 32768)",
    )
    add_config_args(p, TrainConfig, types={"device": _device, "max_time": _duration})
    p.set_defaults(func=run)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


#: the step bound of a time-budgeted run when --steps is not given


def task_options(args: argparse.Namespace) -> TaskOptions | None:
    """The data options given on the command line, or None when none was given."""
    given = {
        field: getattr(args, flag) for flag, field in DATA_FLAGS.items() if hasattr(args, flag)
    }
    extra = {k: getattr(args, k) for k in EXTRA_FLAGS if hasattr(args, k)}
    if not given and not extra:
        return None
    return TaskOptions(**given, extra=extra)


def model_fields_help() -> str:
    """The ``--model KEY=VALUE`` fields of every model family, with their defaults."""
    lines = ["Model config fields (--model KEY=VALUE; values are JSON, or plain strings):"]
    for family, cls in CONFIG_CLASSES.items():
        fields = ", ".join(
            f"{f.name}={_default(f)}" for f in dataclasses.fields(cls) if f.name != "pruned_heads"
        )
        lines.append(f"  {family} ({cls.__name__}): {fields}")
    lines.append("A task sizes vocab_size, max_len, n_classes and image geometry to its data.")
    return "\n".join(lines)


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return json.dumps(f.default)
    return json.dumps(f.default_factory())  # type: ignore[misc]


def _show_recipe(
    task: str,
    given: dict[str, Any],
    options: TaskOptions | None,
    preset: str | None,
    overrides: dict[str, Any],
) -> int:
    t = get_task(task, options or TaskOptions())
    try:
        train = t.train_config(given).to_dict()
    except ValueError as e:
        raise CLIError(flag_message(str(e), TrainConfig)) from None
    shape = {**t.default_model, **overrides} if preset is None else {"preset": preset, **overrides}
    print(json.dumps({"task": task, "train": train, "model": shape}, indent=2))
    return 0


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a directory for the run")


def run(args: argparse.Namespace) -> int:
    train_given: dict[str, Any] = given_fields(args, TrainConfig)
    if "max_time" in train_given and "steps" not in train_given and not args.resume:
        train_given["steps"] = UNBOUNDED_STEPS  # the time budget decides
    options = task_options(args)
    if args.model == ["help"]:
        print(model_fields_help())
        return 0
    overrides = parse_overrides(args.model)
    task = getattr(args, "task", None)
    if args.show_recipe:
        return _show_recipe(task or DEFAULT_TASK, train_given, options, args.preset, overrides)
    out = Path(args.out or f"runs/{task or DEFAULT_TASK}")
    _check_out(out)
    if args.resume:
        try:
            trainer = build_trainer(
                task,
                train_given,
                out,
                options=options,
                preset=args.preset,
                model_overrides=overrides,
                resume=True,
            )
        except ValueError as e:  # the saved settings with the new ones: name the flags
            raise CLIError(flag_message(str(e), TrainConfig)) from None
    else:
        if (out / "latest").exists():
            raise CLIError(
                f"--out {out} already holds a run; pass --resume to continue it or choose "
                f"another --out"
            )
        try:
            trainer = build_trainer(
                task or DEFAULT_TASK,
                train_given,  # over the task's recipe
                out,
                options=options or TaskOptions(),
                preset=args.preset,
                model_overrides=overrides,
                init_from=args.init_from,
                init_from_hf=args.init_from_hf,
            )
        except ValueError as e:  # e.g. a batch larger than the data: name the flag
            raise CLIError(flag_message(str(e), TrainConfig)) from None
        report = getattr(trainer, "init_report", None)
        if report is not None and trainer.dist.is_main:
            print(f"qkv train: initialised from pretrained weights: {report.summary()}")
        init_note = getattr(trainer, "init_note", None)
        if init_note and trainer.dist.is_main:
            print(f"qkv train: {init_note}")
        note = trainer.objective.data_note() if isinstance(trainer.objective, Task) else None
        if note and trainer.dist.is_main:
            print(f"qkv train: {note}")
    try:
        summary = trainer.fit()
    except TrainingInterrupted as e:
        if e.checkpoint is not None:
            what = f"checkpoint of step {e.step} saved in {out}"
        else:
            what = "aborted inside a step: nothing new saved"
        how = f"; resume with: qkv train --resume --out {out}" if (out / "latest").exists() else ""
        raise KeyboardInterrupt(f"interrupted at step {e.step}; {what}{how}") from None
    if trainer.dist.is_main:
        print(json.dumps(summary, indent=2, default=str))
    return 0
