"""Image inputs: the ``images`` surface.

Every vision family (digits, fashion-mnist, detect, caption, clip, vqa) reads a user's image
through :func:`qkv.data.images.open_image`. A table of bad files is refused by each family's
``read_image`` with an ``ImageFileError`` (a ValueError) naming the file and the limit, and
by ``qkv generate`` / ``qkv viz`` with exit 2 and one ``qkv: error:`` line; a Hypothesis fuzz
of damaged images gives an image or that error, never another exception.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
import torch
from _surface import TINY_DIGITS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from qkv.cli import main
from qkv.data.images import MAX_IMAGE_PIXELS, ImageFileError, open_image
from qkv.tasks import TaskOptions, get_task


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` grey pixels and holds one empty IDAT: what
    a decompression bomb looks like before decoding (a few bytes on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _png(size: tuple[int, int] = (12, 10), mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color=128 if mode == "L" else None).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("images")
    files: dict[str, bytes] = {
        "bomb.png": png_header_only(20000, 20000),
        "over-limit.png": png_header_only(8193, 8193),
        "empty.png": b"",
        "text.png": b"not an image at all\n",
        "truncated.png": _png((64, 64))[:60],
        "garbage-after-header.png": _png((8, 8))[:33] + os.urandom(64),
    }
    out = {}
    for name, data in files.items():
        (d / name).write_bytes(data)
        out[name] = d / name
    (d / "a-directory").mkdir()
    out["a-directory"] = d / "a-directory"
    out["/dev/zero"] = Path("/dev/zero")
    out["missing.png"] = d / "missing.png"
    os.mkfifo(d / "fifo.png")
    out["fifo.png"] = d / "fifo.png"
    os.symlink(d / "a-directory", d / "link-to-dir.png")
    out["link-to-dir.png"] = d / "link-to-dir.png"
    (d / "good.png").write_bytes(_png())
    out["good.png"] = d / "good.png"
    return out


#: (file, a fragment of the one error line)
CASES = [
    ("bomb.png", "400000000 pixels"),
    ("over-limit.png", f"the limit is {MAX_IMAGE_PIXELS} pixels"),
    ("empty.png", "not an image file"),
    ("text.png", "not an image file"),
    ("truncated.png", "damaged image file"),
    ("garbage-after-header.png", "image"),
    ("a-directory", "is a directory"),
    ("/dev/zero", "not a regular file"),
    ("fifo.png", "not a regular file"),
    ("link-to-dir.png", "is a directory"),
]


@pytest.mark.parametrize(("name", "fragment"), CASES)
def test_open_image_refuses_with_the_file_and_limit_named(bad, name, fragment):
    with pytest.raises(ImageFileError) as e:
        open_image(bad[name])
    assert str(bad[name]) in str(e.value) and fragment in str(e.value)
    if "pixels" in fragment or "limit" in fragment:
        assert f"the limit is {MAX_IMAGE_PIXELS} pixels" in str(e.value)


def test_open_image_reads_a_good_image_and_honours_a_stated_limit(bad):
    with open_image(bad["good.png"]) as im:
        assert im.size == (12, 10) and im.getpixel((0, 0)) == 128
    with pytest.raises(ImageFileError, match="12 x 10 = 120 pixels; the limit is 100"):
        open_image(bad["good.png"], max_pixels=100)


FAMILIES = {
    "digits": TaskOptions(n_train=16, n_valid=2, n_test=2),
    "detect": TaskOptions(extra={"items": "digits"}, n_train=8, n_valid=2, n_test=2),
    "caption": TaskOptions(extra={"items": "digits"}, n_train=8, n_valid=2, n_test=2),
    "clip": TaskOptions(extra={"items": "digits"}, n_train=8, n_valid=2, n_test=2),
    "vqa": TaskOptions(extra={"items": "digits"}, n_train=8, n_valid=2, n_test=2),
}


@pytest.fixture(scope="module")
def tasks(bad: dict[str, Path]) -> dict[str, object]:
    """One task per vision family, each having read a good image once (its lazy set-up,
    seconds for caption, is then out of the timed cases)."""
    out = {}
    for family, options in FAMILIES.items():
        out[family] = task = get_task(family, options)
        task.read_image(str(bad["good.png"]))
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize(("name", "fragment"), [c for c in CASES if c[0] != "fifo.png"])
def test_every_vision_family_refuses_bad_images(bad, tasks, family, name, fragment):
    task = tasks[family]
    with pytest.raises(ValueError) as e:
        task.read_image(str(bad[name]))
    assert str(bad[name]) in str(e.value) and fragment in str(e.value)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_vision_family_reads_a_good_image(bad, tasks, family):
    task = tasks[family]
    image = task.read_image(str(bad["good.png"]))
    assert (
        image.shape[-2:] == (task.image_size, task.image_size)
        if hasattr(task, "image_size")
        else image.ndim == 3
    )
    assert torch.allclose(image, torch.full_like(image, 128 / 255), atol=1e-6)


# -- the CLI: generate and viz, exit 2 with one line ---------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("digits") / "run"
    assert main([*TINY_DIGITS, "--out", str(run)]) == 0
    return run


@pytest.mark.parametrize(
    ("name", "fragment"),
    [c for c in CASES if c[0] in ("bomb.png", "a-directory", "/dev/zero", "truncated.png")]
    + [("missing.png", "neither an image file nor SPLIT:N")],
)
@pytest.mark.parametrize("command", ["generate", "viz"])
def test_cli_digits_generate_and_viz_exit_2_on_bad_images(
    bad, digits_run, capsys, tmp_path, command, name, fragment
):
    argv = [command, "--checkpoint", str(digits_run), str(bad[name])]
    if command == "viz":
        argv += ["--out", str(tmp_path / "r.html")]
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("qkv: error: "), err
    assert str(bad[name]) in lines[0] and fragment in lines[0], lines[0]


def test_clip_treats_an_existing_non_image_path_as_a_bad_image_not_a_text_query(bad, tasks):
    task = tasks["clip"]
    for name in ("/dev/zero", "a-directory"):
        assert task._is_image(str(bad[name]))
        with pytest.raises(ImageFileError, match="not a regular file|is a directory"):
            task.read_image(str(bad[name]))
    assert not task._is_image("a sneaker in the top left")


# -- fuzz: damaged images are read or refused, never a traceback ---------------------------
def _seed_images() -> list[bytes]:
    out = []
    for fmt, mode in (("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("GIF", "L"), ("BMP", "RGB"),
                      ("JPEG", "RGB"), ("TIFF", "I;16"), ("PPM", "RGB")):  # fmt: skip
        buf = io.BytesIO()
        Image.new(mode, (9, 7)).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=8),
    st.integers(0, 400),
)
def test_fuzz_damaged_images_give_an_image_or_one_error(tmp_path, seed, flips, cut):
    data = bytearray(seed)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    data = data[: max(cut, 8)] if cut < len(data) else data
    path = tmp_path / "fuzz.img"
    path.write_bytes(bytes(data))
    try:
        with open_image(path) as im:
            grey = im.convert("L").resize((8, 8))
            assert len(list(grey.getdata())) == 64
    except ImageFileError as e:
        assert str(path) in str(e)
