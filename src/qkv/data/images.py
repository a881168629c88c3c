"""Reading a user's image file: the one function every task opens images with.

:func:`open_image` checks, in this order and before any pixel is decoded:

1. the path is an existing regular file (not a directory, a device such as ``/dev/zero``,
   a FIFO or a socket) of at most :data:`MAX_IMAGE_BYTES`;
2. Pillow recognizes its format (``Image.open`` reads only the header);
3. its size, ``width x height``, is at most :data:`MAX_IMAGE_PIXELS` (a 20000 x 20000 PNG
   of a few kilobytes would otherwise decode to 400 million pixels) and neither side is 0;
4. its mode is one of :data:`IMAGE_MODES` (what ``convert("L")``/``convert("RGB")`` turns
   into pixels the way a user expects);

then decodes it. Every refusal is an :class:`ImageFileError` (a ``ValueError``, which the
CLI prints as one ``qkv: error:`` line) naming the file and, where there is one, the limit.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

#: The most pixels (``width * height``) an input image may have: 64 Mpx, e.g. 8192 x 8192,
#: larger than any photo a camera takes, and 2.7 x below Pillow's own bomb warning.
MAX_IMAGE_PIXELS = 64 * 2**20
#: The largest image file read, in bytes (512 MiB).
MAX_IMAGE_BYTES = 512 * 2**20
#: Pillow modes accepted: bilevel, grey, palette, RGB(A), CMYK, YCbCr, LAB, HSV, and 16-bit
#: or 32-bit integer or float grey.
IMAGE_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
     "HSV", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
)  # fmt: skip


class ImageFileError(ValueError):
    """An image file that is refused or cannot be read; the message names the file (and the
    limit it exceeds)."""


def check_image_file(path: str | Path, *, max_bytes: int = MAX_IMAGE_BYTES) -> Path:
    """Check that ``path`` is an existing regular file of at most ``max_bytes`` bytes.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ImageFileError: missing, a directory, not a regular file, or too large (named).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ImageFileError(f"image file {p} does not exist") from None
    except OSError as e:
        raise ImageFileError(f"image file {p} cannot be read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageFileError(f"{p} is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageFileError(f"{p} is not a regular file (a device, FIFO or socket), not an image")
    if st.st_size > max_bytes:
        raise ImageFileError(
            f"image file {p} has {st.st_size} bytes; the limit is {max_bytes} bytes"
        )
    return p


def open_image(
    path: str | Path,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = MAX_IMAGE_BYTES,
) -> Image:
    """Open, check and decode an image file (see the module docstring for the checks).

    >>> with open_image("photo.png") as im:           # doctest: +SKIP
    ...     grey = im.convert("L").resize((32, 32))

    Args:
        path: the file.
        max_pixels: the most pixels (``width * height``) accepted.
        max_bytes: the largest file accepted.

    Returns:
        The decoded Pillow image (its first frame), usable as a context manager.

    Raises:
        ImageFileError: the file is refused or cannot be decoded (named, with the limit).
    """
    p = check_image_file(path, max_bytes=max_bytes)
    try:
        from PIL import Image as PILImage
    except ImportError as e:  # pragma: no cover - Pillow comes with matplotlib
        raise ImageFileError("reading image files needs Pillow: `pip install pillow`") from e
    try:
        with warnings.catch_warnings():  # the pixel limit below is stricter than Pillow's
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            im = PILImage.open(p)  # reads the header only
    except PILImage.DecompressionBombError as e:  # far over the limit: Pillow's own refusal
        raise ImageFileError(f"image {p}: {_why(e)}; the limit is {max_pixels} pixels") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # UnidentifiedImageError: OSError
        raise ImageFileError(f"{p} is not an image file Pillow can read: {_why(e)}") from None
    try:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise ImageFileError(f"image {p} is {w} x {h} pixels: it has no pixels")
        if w * h > max_pixels:
            raise ImageFileError(
                f"image {p} is {w} x {h} = {w * h} pixels; the limit is {max_pixels} pixels"
            )
        if im.mode not in IMAGE_MODES:
            raise ImageFileError(
                f"image {p} has pixel mode {im.mode!r}; accepted modes: "
                f"{', '.join(sorted(IMAGE_MODES))}"
            )
        try:
            im.load()
        except MemoryError:
            raise ImageFileError(f"image {p} does not fit in memory") from None
        except Exception as e:  # a damaged file can make any of Pillow's decoders fail
            raise ImageFileError(f"{p} is a damaged image file: {_why(e)}") from None
    except BaseException:
        im.close()
        raise
    return im


def _why(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


__all__ = [
    "IMAGE_MODES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "ImageFileError",
    "check_image_file",
    "open_image",
]
