"""``--max-time``: a duration is plain seconds or h/m/s units, each unit once and in order, at
most 30 days; anything else is refused in one line (``1m30`` or ``1h1h`` were read as 90 s
and 2 h, ``99999999999999999999h`` as a budget no run ends), before any work. The config
bounds it too, for Python callers."""

from __future__ import annotations

import argparse

import pytest
from _surface import assert_refused

from qkv.cli._common import MAX_DURATION, _duration
from qkv.training import TrainConfig
from qkv.training.config import MAX_TIME

REFUSED = [
    # (value, fragment of the one line)
    ("1m30", "each unit at most once"),
    ("1h1h", "each unit at most once"),
    ("30s1m", "in the order h, m, s"),
    ("99999999999999999999h", "at most 30 days"),
    ("31d", "expected a duration"),
    ("721h", "at most 30 days"),
    ("0", "more than 0"),
    ("0h0m", "more than 0"),
    ("-5m", "expected a duration"),
    ("1e3", "expected a duration"),
    ("inf", "expected a duration"),
    ("nan", "expected a duration"),
    ("1.2.3m", "expected a duration"),
    ("", "expected a duration"),
    ("h", "expected a duration"),
    ("m30s", "expected a duration"),
]
TAKEN = [
    ("90", 90.0),
    ("30m", 1800.0),
    ("600s", 600.0),
    ("1h30m", 5400.0),
    ("1h30m15s", 5415.0),
    ("2.5h", 9000.0),
    (" 4S ", 4.0),
    ("720h", 30 * 86400.0),
]


@pytest.mark.parametrize("value,fragment", REFUSED)
def test_bad_durations_are_one_line(value, fragment, tmp_path, capsys):
    assert_refused(
        ["train", f"--max-time={value}", "--out", str(tmp_path / "r")],
        capsys,
        "--max-time",
        fragment,
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value,seconds", TAKEN)
def test_good_durations(value, seconds):
    assert _duration(value) == seconds


def test_the_bound_is_thirty_days_in_both_layers():
    assert MAX_DURATION == MAX_TIME == 30 * 86400
    with pytest.raises(argparse.ArgumentTypeError, match="30 days"):
        _duration("2592001s")
    assert TrainConfig(max_time=MAX_TIME).max_time == MAX_TIME
    with pytest.raises(ValueError, match=r"max_time must be at most 2.592e\+06 s \(30 days\)"):
        TrainConfig(max_time=MAX_TIME + 1)
    with pytest.raises(ValueError, match="steps must be at most 1,000,000,000"):
        TrainConfig(steps=10**30)
    with pytest.raises(ValueError, match="seed must be at most 9,223,372,036,854,775,807"):
        TrainConfig(seed=10**30)


def test_show_recipe_takes_a_good_duration(capsys):
    from qkv.cli import main

    assert main(["train", "--task", "copy", "--max-time", "1h30m", "--show-recipe"]) == 0
    assert '"max_time": 5400.0' in capsys.readouterr().out
