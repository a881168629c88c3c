"""Argument helpers shared by subcommands: flags generated from config dataclasses, model
overrides, decoding options."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import torch

from qkv._resources import check_thread_room, limit_library_threads
from qkv.cli import CLIError
from qkv.cli._threads import ThreadChoice, choose_threads
from qkv.data.cachefiles import stderr_is_terminal as stderr_is_terminal  # one answer for all
from qkv.generation import GenerationConfig
from qkv.training.trainer import resolve_device

T = TypeVar("T")


def _arg_type(tp: Any) -> tuple[Callable[[str], Any] | None, tuple[Any, ...] | None, bool]:
    """``(type, choices, is_bool)`` for a dataclass field's annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _arg_type(args[0])
    if origin is Literal:
        return str, typing.get_args(tp), False
    if tp is bool:
        return None, None, True
    if origin is tuple:
        inner = typing.get_args(tp)[0]

        def parse(text: str) -> tuple[Any, ...]:
            try:
                return tuple(inner(x) for x in text.split(","))
            except ValueError as e:
                raise argparse.ArgumentTypeError(
                    f"expected comma-separated numbers, got {text!r}"
                ) from e

        return parse, None, False
    if tp is int:
        return _int, None, False
    return tp, None, False


#: The largest value an int flag takes: torch's seeds, sizes and counts are 64-bit, so a
#: larger one could only fail later, deep inside torch ("Overflow when unpacking long long").
MAX_INT = 2**63 - 1


def _int(text: str) -> int:
    """An int flag that also reads ``1e6`` (an exact integer in float notation), at most
    :data:`MAX_INT` in size."""
    try:
        n = int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if not f.is_integer():
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        n = int(f)
    if abs(n) > MAX_INT:
        raise argparse.ArgumentTypeError(f"at most {MAX_INT} (2**63 - 1), got {text!r}")
    return n


def _positive_int(text: str) -> int:
    """An int flag that must be >= 1."""
    n = _int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text!r}")
    return n


def path_arg(text: str) -> str:
    """A path flag's value, refused when empty: ``--out ''`` would otherwise mean the
    current directory (or, where the caller falls back on ``or``, the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or directory name")
    return text


def name_arg(text: str) -> str:
    """A name flag's value (``--task``), refused when empty instead of taken as unset."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty name")
    return text


def check_question_text(question: str | None) -> None:
    """Refuse an empty ``--question`` before any model is loaded."""
    if question is not None and not question.strip():
        raise CLIError(f"--question {question!r} is empty: ask something")


def refuse_unless(task: Any, flag: str, takes: Callable[[type], bool], does_not: str) -> None:
    """Refuse a flag that the checkpoint's task would ignore (every ``predict`` takes
    ``**kwargs``, where an unused setting would vanish, or reach the decoder as an unknown
    one), naming the tasks that take it.

    Args:
        task: the checkpoint's task.
        flag: the flag as the user typed it (``--out-dir``).
        takes: whether a task class uses the flag.
        does_not: what the task does not do, for the message (``"writes no files"``).

    Raises:
        CLIError: ``--out-dir: task 'copy' writes no files (only text2image takes it)``.
    """
    if takes(type(task)):
        return
    from qkv.tasks import TASKS  # the registry only now: `qkv --help` stays fast

    takers = [name for name, cls in TASKS.items() if takes(cls)]
    verb = "takes" if len(takers) == 1 else "take"
    raise CLIError(f"{flag}: task {task.name!r} {does_not} (only {', '.join(takers)} {verb} it)")


def number_arg(text: str, ok: Callable[[float], bool], span: str) -> float:
    """``text`` as a number for which ``ok`` holds (``nan`` never does), else an argparse
    error saying it must be a number ``span``."""
    try:
        x = float(text)
    except ValueError:
        x = float("nan")
    if not ok(x):
        raise argparse.ArgumentTypeError(f"must be a number {span}, got {text!r}")
    return x


def _penalty(text: str) -> float:
    """An ``--oov-penalty`` value: a finite number >= 0."""
    return number_arg(text, lambda p: 0.0 <= p < float("inf"), ">= 0")


def add_oov_penalty_arg(p: argparse.ArgumentParser) -> None:
    """``--oov-penalty P`` of ``qkv eval`` and ``qkv generate`` (asr's lexicon)."""
    p.add_argument(
        "--oov-penalty",
        type=_penalty,
        metavar="P",
        help="asr: the lexicon's penalty for a word missing from the n-gram's text, with "
        "--lm-weight (0: no lexicon; default: the run's --oov-penalty)",
    )


def oov_penalty_kwargs(task: Any, args: argparse.Namespace) -> dict[str, float]:
    """``{"oov_penalty": P}`` when ``--oov-penalty`` was given, else nothing.

    Raises:
        CLIError: the flag given for a task without a lexicon (its ``evaluate`` takes no
            ``oov_penalty``), naming the tasks that have one.
    """
    if args.oov_penalty is None:
        return {}
    refuse_unless(
        task,
        "--oov-penalty",
        lambda cls: "oov_penalty" in inspect.signature(cls.evaluate).parameters,
        "has no lexicon",
    )
    return {"oov_penalty": args.oov_penalty}


def check_takes_question(task: Any) -> None:
    """Refuse ``--question`` for a task whose ``predict`` has no ``question``.

    Raises:
        CLIError: naming the task and the one that takes a question (vqa).
    """
    refuse_unless(
        task, "--question", lambda cls: cls.predict_takes("question"), "takes no question"
    )


def check_decoding_flags(task: Any, args: argparse.Namespace) -> None:
    """Refuse each decoding flag given (``--beam-size``, ``--temperature``, ...) that the
    task's ``predict`` does not use (a classifier decodes nothing; text2image samples with
    ``--temperature``, ``--top-k`` and ``--seed`` only).

    Raises:
        CLIError: the first such flag, the task, and the tasks that use it.
    """
    for name in given_fields(args, GenerationConfig):
        refuse_unless(
            task,
            config_flag(GenerationConfig, name),
            lambda cls, name=name: cls.predict_takes(name),
            "does not use it",
        )


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity set, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def _threads(text: str) -> int:
    """A ``--threads`` value no larger than the cores this process has: torch's OpenMP pool
    of 100,000 threads dies with SIGSEGV instead of an error."""
    n = _positive_int(text)
    limit = available_cpus()
    if n > limit:
        raise argparse.ArgumentTypeError(
            f"this process may use {limit} CPU cores; give at most {limit}, got {n}"
        )
    return n


#: ``1h30m``, ``90m``, ``600s``, ``2.5h``: each unit at most once, in the order h, m, s.
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")
#: The longest time budget a run takes: a longer one is a typo, not a plan.
MAX_DURATION = 30 * 86400.0


def _duration(text: str) -> float:
    """A ``--max-time`` value: plain seconds (``90``) or units (``1h30m``), each unit at most
    once and in the order h, m, s (``1m30`` and ``1h1h`` are refused), at most 30 days.

    Raises:
        argparse.ArgumentTypeError: malformed, zero, or longer than :data:`MAX_DURATION`.
    """
    raw = text.strip().lower()
    m = _DURATION.fullmatch(raw)
    plain = re.fullmatch(r"\d+(?:\.\d+)?", raw)
    if plain:
        seconds = float(raw)
    elif m and any(m.groups()):
        h, mi, se = (float(g) if g else 0.0 for g in m.groups())
        seconds = h * 3600.0 + mi * 60.0 + se
    else:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30m, 600s, 1h30m or 90 (seconds), each unit at most "
            f"once in the order h, m, s; got {text!r}"
        )
    if not 0.0 < seconds <= MAX_DURATION:
        raise argparse.ArgumentTypeError(
            f"a duration must be more than 0 and at most 30 days ({MAX_DURATION:.0f} s), "
            f"got {text!r}"
        )
    return seconds


def _device(text: str) -> str:
    """A ``--device`` value this machine can use (checked before any work)."""
    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


#: The help of every ``--threads`` whose default is chosen by :func:`choose_threads`.
THREADS_HELP = (
    "torch intra-op threads on the CPU, and at most as many for the tokenizer (default: the "
    "cores this process may use less those "
    "other work keeps busy now, at least 1; OMP_NUM_THREADS when set)"
)


def add_device_arg(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    """``--device``, checked against what this machine has, and ``--threads``."""
    p.add_argument(
        "--device",
        type=_device,
        default=default,
        help=f"cpu, cuda, cuda:N, mps or auto (default: {default})",
    )
    p.add_argument("--threads", type=_threads, help=THREADS_HELP)


def apply_threads(args: argparse.Namespace, command: str) -> ThreadChoice:
    """Set torch's threads: ``--threads``, else the default of :func:`choose_threads`, said
    on standard error when the command succeeds (:func:`note_threads`); the same bound on
    the ``tokenizers`` package's threads (:func:`qkv._resources.limit_library_threads`);
    then :func:`check_torch_threads`.

    Returns:
        The choice.
    """
    choice = choose_threads(getattr(args, "threads", None))
    torch.set_num_threads(choice.threads)
    limit_library_threads(choice.threads)
    check_torch_threads(choice.threads)
    note_threads(args, command, choice)
    return choice


def check_torch_threads(threads: int | None) -> None:
    """Refuse in one line, before any work, to start torch's CPU pool where its threads
    cannot start: libgomp would end the process at the first parallel operation
    (:func:`qkv._resources.check_thread_room`)."""
    n = threads or torch.get_num_threads()
    if n > 1:  # the calling thread is one of the n
        check_thread_room(n - 1, f"torch's {n} CPU threads", "run with fewer (--threads 1)")


def note_threads(args: argparse.Namespace, command: str, choice: ThreadChoice) -> None:
    """Keep ``qkv COMMAND: 1 thread: 2 cores, 1.9 busy now; ...`` for :func:`qkv.cli.main`
    to print on standard error once the command succeeds (a refusal stays one line); a
    ``--threads`` given says nothing."""
    if choice.how != "given":
        args.threads_note = f"qkv {command}: {choice.note()}"


def _show_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def add_config_args(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: Sequence[str] = (),
    notes: dict[str, str] | None = None,
    types: dict[str, Callable[[str], Any]] | None = None,
    group: str | None = None,
    dest_prefix: str = "",
) -> None:
    """Add one flag per field of the dataclass ``cls`` (``eval_every`` -> ``--eval-every``),
    with the type, choices, default and help text from the field and its ``metadata``
    (``help``, ``group``, ``flag``), grouped by ``metadata["group"]``.

    Unset flags stay out of the namespace, so :func:`given_fields` can tell what the user
    chose from what defaulted. ``notes`` replaces a field's "(default: ...)" text where the
    caller decides the default (e.g. per task), as ``metadata["shown"]`` does; ``types``
    replaces a field's parser (e.g. a device checked against the machine);
    ``metadata["choices"]`` limits the values. ``group`` puts every flag in one group of
    that title; ``dest_prefix`` keeps the fields apart from others in the namespace.
    """
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta = f.metadata
        group_name = group or meta.get("group", "options")
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        g = groups[group_name]
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = (notes or {}).get(f.name) or (
            f"default: {meta['shown']}" if meta.get("shown") else None
        )
        shown = shown or f"default: {_show_default(default)}"
        help_text = f"{meta.get('help', '')} ({shown})".strip()
        conv, choices, is_bool = _arg_type(hints[f.name])
        conv = (types or {}).get(f.name, conv)
        if meta.get("choices") is not None:
            choices = meta["choices"]
        kw: dict[str, Any] = {
            "dest": dest_prefix + f.name,
            "default": argparse.SUPPRESS,
            "help": help_text,
        }
        if is_bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if choices is not None:
            kw["choices"] = choices
        g.add_argument(flag, type=conv, metavar=f.name.upper() if choices is None else None, **kw)


def build_config(cls: type[T], values: dict[str, Any]) -> T:
    """``cls(**values)`` with an error that names the flag: a config's message about field
    ``eval_every`` reads ``--eval-every ...`` on the command line.

    Raises:
        CLIError: the config refused a value.
    """
    try:
        return cls(**values)
    except ValueError as e:
        raise CLIError(flag_message(str(e), cls)) from None


def config_flag(cls: type, name: str) -> str:
    """The flag of field ``name`` of dataclass ``cls`` (``beam_size`` -> ``--beam-size``)."""
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == name:
            return str(f.metadata.get("flag") or "--" + name.replace("_", "-"))
    raise KeyError(name)


def flag_message(message: str, cls: type) -> str:
    """A config's error message with its leading field name written as the flag."""
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if message.startswith(f.name + " ") or message.startswith(f.name + "["):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            return flag + message[len(f.name) :]
    return message


def given_fields(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of dataclass ``cls`` that were set on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["d_model=128", "dropout=0.1", "pos=rope"]`` -> a dict with JSON-parsed values."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--model expects KEY=VALUE (e.g. d_model=128), got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


#: Decoding settings a checkpoint decides (its tokenizer's ids) or the CLI has no use for.
_NOT_FLAGS = ("bos_id", "eos_id", "pad_id", "return_logits")


#: Where a checkpoint's task chooses the default (the help says which).
_TASK_DEFAULTS = {
    "strategy": "default: greedy; language models: sample",
    "max_new_tokens": "default: translation: 2 x source + 10; language models: 200",
    "temperature": "default: 1.0; language models: 0.8",
    "top_p": "default: none; language models: 0.95",
    "ctc_prefix_weight": "default: 0; asr: the run's --ctc-prefix-weight",
    "lm_weight": "default: 0; asr: the run's --lm-weight",
}


def add_generation_args(p: argparse.ArgumentParser) -> None:
    """The decoding flags, generated from :class:`qkv.generation.GenerationConfig` (unset
    ones are left to the task: e.g. a language model samples by default)."""
    add_config_args(p, GenerationConfig, skip=_NOT_FLAGS, notes=_TASK_DEFAULTS)


def generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding settings given on the command line, validated; ``--seed`` becomes a
    ``generator`` (one stream for the whole run, however many calls decode).

    Raises:
        ValueError: an invalid combination (named, with the values).
    """
    kw = given_fields(args, GenerationConfig)
    build_config(GenerationConfig, kw)  # validate now: one clear line before any work
    seed = kw.pop("seed", None)
    if seed is not None:
        kw["generator"] = torch.Generator().manual_seed(seed)
    return kw
