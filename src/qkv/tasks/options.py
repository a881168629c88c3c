"""Typed task options: each task declares an ``Options`` dataclass of exactly the options it
takes (type, default, help, choices), the one source of ``qkv train --task T``'s data flags.

A task's ``Options`` combines the shared pieces below (:class:`DataOption`,
:class:`SeedOption`, :class:`SizeOptions`, :class:`LengthOption`,
:class:`TokenizerOption`, :class:`VocabOption`) with its own fields, each made by :func:`option`. Reading
options from a mapping (:meth:`Options.from_dict`) refuses one the task does not take in one
line naming it, and still reads the format ``task.json`` held before typed options
(:class:`TaskOptions`: the shared fields plus the task's own in ``extra``).

>>> from qkv.tasks.speech.asr import ASRTask
>>> ASRTask.Options.from_dict({"extra": {"ctc_weight": 0.3}}, task="asr").ctc_weight
0.3
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from qkv.tasks._errors import TaskError

#: The options every task once took (:class:`TaskOptions`): a saved run's ``task.json`` may
#: hold them null, or with a value the task ignored; loading it drops those the task lacks.
COMMON = ("data", "seed", "n_train", "n_valid", "n_test", "max_len", "tokenizer", "vocab_size")

OptionsT = TypeVar("OptionsT", bound="Options")


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    flag: str | None = None,
    shown: str | None = None,
) -> Any:
    """A task option: a dataclass field whose metadata the command line is generated from.

    Args:
        default: the value when not given (None: the task decides; ``shown`` says what).
        help: one line for ``--help``.
        choices: the values allowed (the flag refuses others).
        flag: the flag when not ``--`` + the name with dashes (``seed`` is ``--data-seed``).
        shown: the "(default: ...)" text when the value itself would not say it.
    """
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None}
    meta |= {"flag": flag, "shown": shown}
    return field(default=default, metadata=meta)


def flag_of(f: Field[Any]) -> str:
    """The command-line flag of an option field (``ctc_weight`` -> ``--ctc-weight``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _flag(name: str) -> str:
    """The flag of an option name, the shared ones' own flags included."""
    return "--data-seed" if name == "seed" else "--" + name.replace("_", "-")


def default_of(f: Field[Any]) -> Any:
    """An option field's default value."""
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]


@dataclass
class Options:
    """Base of every task's options (a task's ``Options`` subclass adds its fields)."""

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-serializable values (what ``task.json`` stores)."""
        return asdict(self)

    @classmethod
    def flags(cls) -> list[str]:
        """The command-line flags of these options, in declaration order."""
        return [flag_of(f) for f in fields(cls)]

    @classmethod
    def from_dict(
        cls: type[OptionsT], d: Mapping[str, Any], *, task: str, saved: bool = False
    ) -> OptionsT:
        """Options from a mapping: a flat one, or the format saved before typed options
        (the task's own options under ``extra``), which still loads.

        Args:
            d: option name -> value; a value of None means "not given".
            task: the task's name, for the message.
            saved: the mapping comes from a saved run: shared options the task lacks
                (:data:`COMMON`; it ignored them then) are dropped instead of refused.

        Raises:
            TaskError: an option the task does not take, named with its flag; from a saved
                run, also a value of another type than the option's (``reverse: "yes"``,
                ``pair: 5``): the task checks the values a caller gives when it uses them,
                and a saved run is used later, by ``qkv eval`` or ``generate``.
        """
        flat = dict(d)
        legacy = flat.pop("extra", None) or {}
        if not isinstance(legacy, Mapping):
            raise TaskError(f"task {task!r}: 'extra' must be an object, got {legacy!r}")
        flat.update(legacy)
        names = {f.name for f in fields(cls)}
        unknown = [
            k
            for k, v in flat.items()
            if k not in names and v is not None and not (saved and k in COMMON)
        ]
        if unknown:
            given = ", ".join(_flag(k) for k in unknown)
            raise TaskError(
                f"task {task!r} takes no {given}; its options: {', '.join(cls.flags()) or 'none'}"
            )
        taken = {k: v for k, v in flat.items() if k in names}
        if saved:
            hints = get_type_hints(cls)
            for name, value in taken.items():
                if not _of_type(value, hints[name]):
                    raise TaskError(
                        f"task {task!r}: {name!r} must be {_type_name(hints[name])}, got {value!r}"
                    )
        return cls(**taken)

    @classmethod
    def of(cls: type[OptionsT], options: OptionsLike, *, task: str) -> OptionsT:
        """These options from whatever a caller gave: None (the defaults), an instance, a
        :class:`TaskOptions` or another task's options (read by name), or a mapping.

        Raises:
            TaskError: an option the task does not take.
        """
        if options is None:
            return cls()
        if type(options) is cls:
            return options  # type: ignore[return-value]
        if isinstance(options, TaskOptions):  # its defaults say nothing: drop them
            unset = TaskOptions().to_dict()
            given = {k: v for k, v in options.to_dict().items() if v != unset[k]}
            return cls.from_dict(given, task=task)
        if isinstance(options, Options):
            return cls.from_dict(options.to_dict(), task=task)
        return cls.from_dict(options, task=task)


def _of_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits an option's annotation (``str``, ``int``, ``float``,
    ``bool``, each maybe ``| None``); an int is no bool, a float may be an int."""
    args = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    for t in args:
        if value is None and t is type(None):
            return True
        if t is bool and isinstance(value, bool):
            return True
        if t in (int, float) and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t is float and isinstance(value, float):
            return True
        if t is str and isinstance(value, str):
            return True
        if t not in (bool, int, float, str, type(None)):
            return True  # a type this check does not know: the task checks it
    return False


def _type_name(hint: Any) -> str:
    args = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    names = {bool: "true or false", int: "an int", float: "a number", str: "a string"}
    return " or ".join("null" if t is type(None) else names.get(t, str(t)) for t in args)


@dataclass
class DataOption(Options):
    """``data``: a file or directory the task reads instead of its own data."""

    data: str | None = option(None, "data file or directory", shown="the task's own data")


@dataclass
class SeedOption(Options):
    """``seed``: the seed of generated data and of the train/valid/test split."""

    seed: int = option(0, "seed of data generation and splits", flag="--data-seed")


@dataclass
class SizeOptions(Options):
    """``n_train`` / ``n_valid`` / ``n_test``: examples per split (None: the task's)."""

    n_train: int | None = option(None, "training examples", shown="the task's; all of a data file")
    n_valid: int | None = option(None, "validation examples", shown="the task's")
    n_test: int | None = option(None, "test examples", shown="the task's")


@dataclass
class LengthOption(Options):
    """``max_len``: the longest sequence in tokens (None: the task's)."""

    max_len: int | None = option(None, "longest sequence in tokens", shown="the task's")


#: The tokenizer kinds.
TOKENIZERS = ("char", "word", "bpe")


@dataclass
class TokenizerOption(Options):
    """``tokenizer``: the tokenizer kind (a task that takes fewer kinds narrows the choices)."""

    tokenizer: str | None = option(None, "tokenizer kind", choices=TOKENIZERS, shown="the task's")


@dataclass
class VocabOption(Options):
    """``vocab_size``: the BPE vocabulary size, or a cap of a word vocabulary."""

    vocab_size: int | None = option(
        None, "BPE vocabulary size (a cap for word vocabularies)", shown="the task's"
    )


@dataclass
class TextOptions(VocabOption, TokenizerOption, LengthOption):
    """The text options: ``max_len``, ``tokenizer`` and ``vocab_size``."""


@dataclass
class TaskOptions:
    """The options every task once took, with the task's own in ``extra``: the format of
    ``task.json`` before typed options, and a loose form any task still accepts (its
    :meth:`Options.of` reads it by name and refuses what the task does not take).

    Attributes:
        data: a data file for tasks that read one (``translate``, ``lm``), else None.
        seed: seed of generated data and of the train/valid/test split.
        n_train / n_valid / n_test: example counts (None = task default).
        max_len: maximum sequence length in tokens (None = task default).
        tokenizer: ``"char"``, ``"word"`` or ``"bpe"`` (None = task default).
        vocab_size: BPE vocabulary size.
        extra: the task's own options by name (e.g. ListOps ``attention``).
    """

    data: str | None = None
    seed: int = 0
    n_train: int | None = None
    n_valid: int | None = None
    n_test: int | None = None
    max_len: int | None = None
    tokenizer: str | None = None
    vocab_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskOptions:
        return cls(**d)


#: What a task may be built from: its options, anything :meth:`Options.of` reads, or None.
OptionsLike = Options | TaskOptions | Mapping[str, Any] | None


__all__ = [
    "COMMON",
    "TOKENIZERS",
    "DataOption",
    "LengthOption",
    "Options",
    "OptionsLike",
    "SeedOption",
    "SizeOptions",
    "TaskOptions",
    "TextOptions",
    "TokenizerOption",
    "VocabOption",
    "default_of",
    "flag_of",
    "option",
]
