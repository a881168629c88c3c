"""``qkv train``: train a model on a task (single process, or DDP under torchrun).

The training flags are generated from :class:`qkv.training.TrainConfig` (one source of
defaults and help); a task's own flags from its ``Options`` dataclass
(:mod:`qkv.tasks.options`): ``qkv train --task T --help`` lists exactly them, and a flag the
task does not take is refused in one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, NoReturn

from qkv._resources import limit_library_threads
from qkv.cli import CLIError, Parser
from qkv.cli._common import (
    _device,
    _duration,
    _threads,
    add_config_args,
    check_torch_threads,
    flag_message,
    given_fields,
    name_arg,
    parse_overrides,
    path_arg,
    stderr_is_terminal,
)
from qkv.cli._runs import new_run_problem, resume_problem
from qkv.cli._threads import choose_threads
from qkv.cli._world import check_world_batch, world_size
from qkv.models.config import CONFIG_CLASSES
from qkv.tasks import TASKS, Task, build_trainer, get_task, saved_task_name, task_class
from qkv.training import TrainConfig
from qkv.training.budget import BudgetSpentError, format_seconds
from qkv.training.config import UNBOUNDED_STEPS
from qkv.training.progress import format_duration
from qkv.training.trainer import TrainingInterrupted

#: Where a task's own flags go in the namespace (apart from the training flags: both
#: have a ``seed``).
TASK_DEST = "task."
#: The namespace attribute holding the strings of task flags given without ``--task`` (the
#: default task's, or a resumed run's own): parsed once the task is known.
LATER = "task_argv"
DEFAULT_TASK = "synthetic"


class _Paragraphs(argparse.HelpFormatter):
    """Wraps each paragraph of a description or epilog on its own (a task's ``measured``
    text: the metric, the timed run, one sample per paragraph)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            super(_Paragraphs, self)._fill_text(part, width, indent) for part in text.split("\n\n")
        )


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        formatter_class=_Paragraphs,
        help="train a model on a task",
        description="Train a model on a task. Under `torchrun --nproc_per_node=N -m qkv train "
        "...` the global batch is split over N processes (DDP; gloo on CPU, nccl on GPU). "
        "Ctrl-C saves a checkpoint and prints how to resume. Each task has its own data "
        "flags (--data, --n-train, --max-len, ...): `qkv train --task T --help` lists them.",
    )
    p.prepare = _prepare  # type: ignore[attr-defined]
    p.add_argument(
        "--task",
        type=name_arg,
        default=argparse.SUPPRESS,
        help=f"one of: {', '.join(sorted(TASKS))} (default: {DEFAULT_TASK}; a resumed run "
        "keeps its own)",
    )
    p.add_argument(
        "--out",
        type=path_arg,
        default=None,
        help="run directory (default: runs/TASK); one run per directory",
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
        "--init-from",
        type=path_arg,
        metavar="DIR",
        help="start from the weights of a qkv checkpoint or run",
    )
    m.add_argument(
        "--init-from-hf",
        type=path_arg,
        metavar="DIR",
        help="start from the weights of a Hugging Face model directory (fine-tuning: the "
        "architecture is the pretrained one; a new head is initialised and listed)",
    )
    add_config_args(
        p,
        TrainConfig,
        types={"device": _device, "max_time": _duration, "threads": _threads},
    )
    p.set_defaults(func=run)


def _peek_task(strings: list[str]) -> str | None:
    """The value of ``--task`` among a command's argument strings (None: not given)."""
    for i, s in enumerate(strings):
        if s == "--":
            break
        if s == "--task" and i + 1 < len(strings):
            return strings[i + 1]
        if s.startswith("--task="):
            return s.split("=", 1)[1]
    return None


def _add_task_flags(p: argparse.ArgumentParser, cls: type[Task]) -> None:
    """The flags of a task's options, generated from its ``Options`` dataclass."""
    add_config_args(
        p, cls.Options, group=f"{cls.name} options (--task {cls.name})", dest_prefix=TASK_DEST
    )
    if cls.measured:
        p.epilog = f"Measured ({cls.name}):\n\n{cls.measured}"


def _refuse_foreign(p: argparse.ArgumentParser, name: str, strings: list[str]) -> None:
    """Refuse, in one line, a flag of another task that task ``name`` does not take."""
    others = {flag for cls in TASKS.values() for flag in cls.Options.flags()}
    mine = set(p._option_string_actions)
    for s in strings:
        if s == "--":
            break
        flag = s.split("=", 1)[0]
        if flag.startswith("--") and flag in others - mine:
            flags = ", ".join(TASKS[name].Options.flags()) or "none"
            p.error(f"task {name!r} takes no {flag}; its flags: {flags}")


def _prepare(p: argparse.ArgumentParser, strings: list[str]) -> None:
    """Before parsing: with ``--task T``, add T's own flags (and refuse another task's);
    without, keep the task flags' strings for :func:`run` to parse once the task is known."""
    name = _peek_task(strings)
    if name in TASKS and not getattr(p, "task_flags", None):
        _add_task_flags(p, TASKS[name])
        p.task_flags = name  # type: ignore[attr-defined]
    if name in TASKS:
        _refuse_foreign(p, name, strings)
    else:
        p.keep = LATER  # type: ignore[attr-defined]


class _LaterParser(Parser):
    """Parses the task flags given without ``--task`` once :func:`run` knows the task: its
    errors are :class:`CLIError` (one line, exit 2 from :func:`qkv.cli.main`)."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"train: {message}")


def task_options(args: argparse.Namespace, task: str) -> dict[str, Any] | None:
    """The options of ``task`` given on the command line (None: none given).

    Flags given with ``--task`` were parsed with the task's own; those given without it
    (the default task, or a resumed run's own) are parsed here.

    Raises:
        CLIError: a flag the task does not take, or a bad value (one line, naming it).
        TaskError: an unknown task.
    """
    given = {k[len(TASK_DEST) :]: v for k, v in vars(args).items() if k.startswith(TASK_DEST)}
    later = getattr(args, LATER, None) or []
    if later:
        cls = task_class(task)
        p = _LaterParser(prog="qkv train", add_help=False)
        _add_task_flags(p, cls)
        _refuse_foreign(p, task, later)
        ns, rest = p.parse_known_args(later)
        if rest:
            p.error(f"unrecognized arguments: {' '.join(rest)}")
        given |= {k[len(TASK_DEST) :]: v for k, v in vars(ns).items() if k.startswith(TASK_DEST)}
    return given or None


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
    options: dict[str, Any] | None,
    preset: str | None,
    overrides: dict[str, Any],
) -> int:
    t = get_task(task, options)
    try:
        train = t.train_config(given).to_dict()
    except ValueError as e:
        raise CLIError(flag_message(str(e), TrainConfig)) from None
    shape = {**t.default_model, **overrides} if preset is None else {"preset": preset, **overrides}
    print(json.dumps({"task": task, "train": train, "model": shape}, indent=2))
    return 0


def _refuse_on_resume(args: argparse.Namespace) -> None:
    """Refuse the flags that only start a new run: a resumed run keeps its own weights."""
    for flag, value in (("--init-from", args.init_from), ("--init-from-hf", args.init_from_hf)):
        if value is not None:
            raise CLIError(
                f"{flag} {value}: a resumed run continues from its own checkpoint; drop "
                f"{flag}, or start a new run with another --out"
            )


def _resumed_budget(max_time: float | None, elapsed: float) -> str:
    """What ``--max-time`` means for a resumed run (the run's whole budget, counted from
    its start), said before it trains.

    Raises:
        CLIError: the run has already trained that long.
    """
    assert max_time is not None  # given on the command line
    if max_time <= elapsed:
        raise CLIError(
            f"--max-time {format_duration(max_time)}: the run has already trained "
            f"{format_duration(elapsed)}; the budget counts from the run's start, so give "
            "more than that"
        )
    return (
        f"max_time: {format_duration(max_time)} (new budget for this resumed run, counted "
        f"from its start: {format_duration(elapsed)} done, about "
        f"{format_duration(max_time - elapsed)} left)"
    )


def _started(args: argparse.Namespace) -> float:
    """When the command started (:func:`qkv.cli.main` notes it): ``--max-time`` counts
    from there."""
    started = getattr(args, "started", None)
    return started if started is not None else time.monotonic()


def _budget_spent(e: BudgetSpentError) -> str:
    """The one line that refuses to train when preparing the data took the whole budget."""
    before = e.spent - e.prepared  # a resumed run's earlier commands
    done = f" and the run had already used {format_seconds(before)}" if before > 0 else ""
    return (
        f"--max-time {format_seconds(e.max_time)} is spent before the first step: preparing "
        f"the data took {format_seconds(e.prepared)}{done} (--max-time counts the whole "
        "command); give --max-time more than that"
    )


def _check_batch_tokens(name: str) -> None:
    """Refuse ``--batch-tokens`` for a task whose examples have no length in tokens."""
    able = sorted(n for n, cls in TASKS.items() if callable(getattr(cls, "length", None)))
    if name in TASKS and name not in able:
        raise CLIError(
            f"--batch-tokens: task {name!r} cannot batch by tokens (its examples have no "
            f"length); the tasks that can: {', '.join(able)}"
        )


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a directory for the run")


def run(args: argparse.Namespace) -> int:
    train_given: dict[str, Any] = given_fields(args, TrainConfig)
    if "progress" not in train_given and not stderr_is_terminal():
        train_given["progress"] = False  # a bar's redraws would interleave a log file
    if "max_time" in train_given and "steps" not in train_given and not args.resume:
        train_given["steps"] = UNBOUNDED_STEPS  # the time budget decides
    if args.model == ["help"]:
        print(model_fields_help())
        return 0
    overrides = parse_overrides(args.model)
    task = getattr(args, "task", None)
    out = Path(args.out or f"runs/{task or DEFAULT_TASK}")
    if args.resume and task is None and getattr(args, LATER, None):
        options = task_options(args, saved_task_name(out))  # the run's own task's flags
    else:
        options = task_options(args, task or DEFAULT_TASK)
    if args.show_recipe:
        return _show_recipe(task or DEFAULT_TASK, train_given, options, args.preset, overrides)
    # --threads, else chosen for this machine now (a resumed run chooses anew)
    threads = choose_threads(train_given.get("threads"))
    train_given["threads"] = threads.threads
    # torch's pool is set by the trainer; the tokenizer's here, and the room for both checked
    limit_library_threads(threads.threads)
    check_torch_threads(threads.threads)
    _check_out(out)
    if train_given.get("batch_tokens") and not args.resume:
        _check_batch_tokens(task or DEFAULT_TASK)
    if args.resume:
        _refuse_on_resume(args)
        problem = resume_problem(out)
        if problem is not None:
            raise CLIError(problem)
        try:
            trainer = build_trainer(
                task,
                train_given,
                out,
                options=options,
                preset=args.preset,
                model_overrides=overrides,
                resume=True,
                started=_started(args),
            )
        except ValueError as e:  # the saved settings with the new ones: name the flags
            raise CLIError(flag_message(str(e), TrainConfig)) from None
        if "max_time" in train_given and trainer.dist.is_main:
            print(f"qkv train: {_resumed_budget(trainer.cfg.max_time, trainer.elapsed)}")
    else:
        problem = new_run_problem(out)
        if problem is not None:
            raise CLIError(problem)
        name = task or DEFAULT_TASK
        recipe = task_class(name).recipe if name in TASKS else {}
        check_world_batch({**recipe, **train_given}, world_size())
        try:
            trainer = build_trainer(
                task or DEFAULT_TASK,
                train_given,  # over the task's recipe
                out,
                options=options,
                preset=args.preset,
                model_overrides=overrides,
                init_from=args.init_from,
                init_from_hf=args.init_from_hf,
                started=_started(args),
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
    trainer.threads_note = threads.note()
    try:
        summary = trainer.fit()
    except BudgetSpentError as e:
        raise CLIError(_budget_spent(e)) from None
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
