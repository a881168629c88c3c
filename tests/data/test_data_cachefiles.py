"""Cache files written all at once or not at all, and the plain progress lines of a long
job when standard error is no terminal."""

from __future__ import annotations

import io

import pytest

from qkv.data.cachefiles import CountProgress, format_clock, write_atomically


def test_write_atomically_replaces_the_whole_file(tmp_path):
    path = tmp_path / "split.npz"
    write_atomically(path, lambda f: f.write(b"first"))
    write_atomically(path, lambda f: f.write(b"second"))
    assert path.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["split.npz"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path, error):
    path = tmp_path / "split.npz"
    path.write_bytes(b"old")

    def half(f):
        f.write(b"half of the new")
        raise error

    with pytest.raises(error):
        write_atomically(path, half)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["split.npz"]


def test_count_progress_says_a_line_per_tenth_without_a_bar():
    out = io.StringIO()
    show = CountProgress("speech corpus: train", 20, unit="utterances", bar=False, stream=out)
    for _ in range(20):
        show.advance()
    show.close()
    lines = out.getvalue().splitlines()
    assert [x.split(" (")[0] for x in lines] == [
        f"speech corpus: train {n}/20 utterances" for n in range(2, 20, 2)
    ]
    assert "\r" not in out.getvalue()
    quiet = io.StringIO()
    show = CountProgress("x", 5, enabled=False, stream=quiet)
    show.advance(5)
    show.line("done")
    assert quiet.getvalue() == ""


def test_format_clock():
    assert format_clock(5) == "0:05" and format_clock(3725) == "1:02:05"
