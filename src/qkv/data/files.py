"""Reading qkv's own files (JSON, safetensors) with one error that names the file.

Every layer reads JSON or safetensors that a user, a crash or a disk may have damaged:
checkpoints, ``task.json``, tokenizers, Hugging Face directories. They share these readers
and each passes its own error class (``CheckpointError``, ``TaskError``, ...), so a damaged
file is always one line naming it, never a ``KeyError``, ``RecursionError`` or
``SafetensorError`` from deep inside.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


def read_json(path: str | Path, error: type[Exception] = ValueError) -> Any:
    """Parse a JSON file.

    Args:
        path: the file.
        error: the exception class to raise (its message names ``path``).

    Raises:
        error: the file is missing, unreadable, not UTF-8, not JSON, nested too deeply
            to parse, or holds an integer of more than 4300 digits (named by its field).
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            huge: list[_Huge] = []  # the walk below runs only for a file that has one
            obj = json.load(f, parse_int=lambda text: _parse_int(text, huge))
    except FileNotFoundError:
        raise error(f"{path} is missing") from None
    except UnicodeDecodeError as e:
        raise error(f"{path} is not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON: {e}") from None
    except RecursionError:
        raise error(f"{path} is nested too deeply to be a qkv JSON file") from None
    except OSError as e:
        raise error(f"{path} cannot be read: {e}") from None
    try:
        where = _find_huge(obj, "") if huge else None
    except RecursionError:
        raise error(f"{path} is nested too deeply to be a qkv JSON file") from None
    if where is not None:
        field, digits = where
        raise error(
            f"{path}: {field or 'the value'} is an integer of {digits} digits; no qkv setting "
            f"is that large (at most {_MAX_DIGITS} digits are read)"
        )
    return obj


#: Python refuses to turn longer digit strings into ints (sys.get_int_max_str_digits()); a
#: qkv file never holds one, so a longer one is reported with its place in the file.
_MAX_DIGITS = 4300


class _Huge:
    """Stands in for an integer too long to read, until its place in the file is known."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _parse_int(text: str, huge: list[_Huge]) -> int | _Huge:
    digits = len(text.lstrip("-"))
    if digits <= _MAX_DIGITS:
        return int(text)
    huge.append(_Huge(digits))
    return huge[-1]


def _find_huge(obj: Any, where: str) -> tuple[str, int] | None:
    """``(field path, digits)`` of the first too-long integer in ``obj``, or None."""
    if isinstance(obj, _Huge):
        return where, obj.digits
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for key, value in items:
        found = _find_huge(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def read_json_object(path: str | Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """:func:`read_json` for files that must hold a JSON object.

    Raises:
        error: as :func:`read_json`, or a list/null/number instead of an object.
    """
    obj = read_json(path, error)
    if not isinstance(obj, dict):
        raise error(f"{path} must hold a JSON object, got {type(obj).__name__}")
    return obj


def read_tensors(
    path: str | Path, error: type[Exception] = ValueError, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (no pickle is ever read).

    Raises:
        error: naming ``path`` when it is missing, truncated, empty, random bytes or has a
            header whose offsets, dtypes or shapes do not match its data.
    """
    if not Path(path).is_file():
        raise error(f"{path} is missing")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as e:
        raise error(f"{path} is not a readable safetensors file: {e}") from None


__all__ = ["read_json", "read_json_object", "read_tensors"]
