"""Value checks shared by every config and reader: one wording for each kind of error.

Each check raises ``ValueError`` with a message that names the field and shows the value,
e.g. ``n_heads must be a positive int, got 0``. This module imports nothing from qkv, so
every layer may use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

#: Largest value of any size field (widths, vocabularies, lengths): 2**40.
MAX_SIZE: int = 2**40


def is_int(value: object) -> bool:
    """True for an ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def show(value: object) -> str:
    """``repr(value)``, except for ints too long to print (a 400-digit int)."""
    if is_int(value) and value.bit_length() > 64:  # type: ignore[union-attr]
        digits = int(value.bit_length() * math.log10(2)) + 1  # type: ignore[union-attr]
        return f"an int of about {digits:,} digits"
    return repr(value)


def check_int(
    name: str,
    value: object,
    minimum: int = 1,
    *,
    maximum: int | None = None,
    optional: bool = False,
    positive: bool = True,
) -> int | None:
    """Check an int in ``[minimum, maximum]`` (``None`` too when ``optional``).

    Args:
        name: the field, as the message names it.
        value: the value to check.
        minimum: the smallest allowed value.
        maximum: the largest allowed value, or None for no bound.
        optional: whether ``None`` is allowed too.
        positive: say ``a positive int`` for ``minimum=1`` (False: ``an int >= 1``, the
            wording of the mask families, which state every bound as ``>=``).

    Returns:
        The value, so that a check can stand in an assignment.

    Raises:
        ValueError: ``{name} must be a positive int, got 0``, ``... an int >= 0 or None``,
            ``{name} must be at most 8,192, got ...``.
    """
    if optional and value is None:
        return None
    if not is_int(value) or value < minimum:  # type: ignore[operator]
        what = "a positive int" if minimum == 1 and positive else f"an int >= {minimum}"
        raise ValueError(
            f"{name} must be {what}{' or None' if optional else ''}, got {show(value)}"
        )
    if maximum is not None and value > maximum:  # type: ignore[operator]
        raise ValueError(f"{name} must be at most {maximum:,}, got {show(value)}")
    return value  # type: ignore[return-value]


def is_finite_number(value: object) -> bool:
    """True for a finite int or float that is not a ``bool``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return ok and math.isfinite(value)  # type: ignore[arg-type]


def check_number(name: str, value: object) -> float:
    """Check a finite number.

    Raises:
        ValueError: ``{name} must be a finite number, got nan``.
    """
    if not is_finite_number(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_range(
    name: str, value: object, *, lo: float, hi: float | None = None, lo_open: bool = False
) -> float:
    """Check a finite number in ``[lo, hi)`` (``>= lo`` when ``hi`` is None); with
    ``lo_open``, ``lo`` itself is refused too (``(lo, hi)``, ``> lo``).

    Raises:
        ValueError: ``{name} must be a finite number in [0.0, 1.0), got 1.5``,
            ``{name} must be a finite number in > 0.0, got 0``.
    """
    ok = is_finite_number(value)
    below = ok and (value <= lo if lo_open else value < lo)  # type: ignore[operator]
    if ok and (below or (hi is not None and value >= hi)):  # type: ignore[operator]
        ok = False
    if not ok:
        if hi is not None:
            rng = f"{'(' if lo_open else '['}{lo}, {hi})"
        else:
            rng = f"{'>' if lo_open else '>='} {lo}"
        raise ValueError(f"{name} must be a finite number in {rng}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_bool(name: str, value: object) -> bool:
    """Check a ``bool`` (not a truthy int).

    Raises:
        ValueError: ``{name} must be a bool, got 1``.
    """
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: Iterable[object]) -> object:
    """Check that ``value`` is one of ``choices``.

    Raises:
        ValueError: ``{name} must be one of ('a', 'b'), got 'c'``.
    """
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


__all__ = [
    "MAX_SIZE",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_range",
    "is_finite_number",
    "is_int",
    "show",
]
