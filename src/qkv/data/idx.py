"""Reader of the IDX format of MNIST and Fashion-MNIST (LeCun et al.), gzipped or not.

Layout: two zero bytes, a type byte (``0x08`` = unsigned byte), the number of dimensions
``n``, then ``n`` big-endian 32-bit sizes, then the data in C order. Images
(``n = 3``) therefore start at byte 16, labels (``n = 1``) at byte 8.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import torch

UBYTE = 0x08


class IdxError(ValueError):
    """A file that is not a well-formed unsigned-byte IDX file."""


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an unsigned-byte IDX file (``.gz`` is decompressed) into a uint8 tensor.

    Raises:
        FileNotFoundError: the file does not exist.
        IdxError: a bad magic number, an unsupported element type, or a size mismatch,
            naming the file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise IdxError(f"{path}: cannot read: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    if data[2] != UBYTE:
        raise IdxError(f"{path}: element type 0x{data[2]:02x} is not supported (only 0x08 ubyte)")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise IdxError(f"{path}: truncated header ({len(data)} bytes, need {offset})")
    dims = struct.unpack(f">{ndim}I", data[4:offset])
    n = math.prod(dims)
    if len(data) - offset != n:
        raise IdxError(
            f"{path}: header says {dims} = {n} bytes of data, file has {len(data) - offset}"
        )
    if n == 0:
        return torch.zeros(dims, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data[offset:]), dtype=torch.uint8).reshape(dims)


def write_idx(path: str | Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file (gzipped when ``path`` ends in ``.gz``)."""
    path = Path(path)
    array = array.to(torch.uint8).contiguous()
    header = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.numpy().tobytes())


__all__ = ["IdxError", "read_idx", "write_idx"]
