"""qkv._checks: the one wording of every config's value errors, and its options."""

from __future__ import annotations

import math

import pytest

from qkv._checks import check_bool, check_choice, check_int, check_range


def test_check_int_wording_and_bounds():
    assert check_int("n", 3) == 3
    assert check_int("n", None, optional=True) is None
    with pytest.raises(ValueError, match=r"^n must be a positive int, got 0$"):
        check_int("n", 0)
    with pytest.raises(ValueError, match=r"^n must be a positive int, got True$"):
        check_int("n", True)
    with pytest.raises(ValueError, match=r"^n must be an int >= 0 or None, got -1$"):
        check_int("n", -1, 0, optional=True)
    with pytest.raises(ValueError, match=r"^n must be at most 8,192, got 9000$"):
        check_int("n", 9000, maximum=8192)


def test_check_int_can_state_a_lower_bound_of_one_as_such():
    # the mask families word every bound as ">=" (qkv.masks.window)
    with pytest.raises(ValueError, match=r"^window must be an int >= 1, got 0$"):
        check_int("window", 0, 1, positive=False)
    assert check_int("window", 1, 1, positive=False) == 1


def test_check_range_closed_and_open_lower_bounds():
    assert check_range("p", 0.0, lo=0.0, hi=1.0) == 0.0
    with pytest.raises(ValueError, match=r"^p must be a finite number in \[0.0, 1.0\), got 1.0$"):
        check_range("p", 1.0, lo=0.0, hi=1.0)
    with pytest.raises(ValueError, match=r"^lr must be a finite number in > 0.0, got 0.0$"):
        check_range("lr", 0.0, lo=0.0, lo_open=True)
    with pytest.raises(ValueError, match=r"^p must be a finite number in \(0.0, 1.0\), got 0$"):
        check_range("p", 0, lo=0.0, hi=1.0, lo_open=True)
    assert check_range("lr", 1e-9, lo=0.0, lo_open=True) == 1e-9
    with pytest.raises(ValueError, match="got nan"):
        check_range("lr", math.nan, lo=0.0, lo_open=True)


def test_check_bool_and_choice():
    assert check_bool("flag", False) is False
    with pytest.raises(ValueError, match=r"^flag must be a bool, got 1$"):
        check_bool("flag", 1)
    with pytest.raises(ValueError, match=r"^mode must be one of \('a', 'b'\), got 'c'$"):
        check_choice("mode", "c", ("a", "b"))
