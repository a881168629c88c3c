"""Reading and writing Hugging Face model directories: ``config.json`` and the weights.

Weights are read from ``model.safetensors`` (or its sharded index); a ``pytorch_model.bin``
(or its index) is read only through ``torch.load(weights_only=True)``, which unpickles
tensors and plain containers and nothing else.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qkv.data.files import read_json_object

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
#: Weight files in order of preference.
WEIGHT_FILES: tuple[str, ...] = (SAFETENSORS, SAFETENSORS_INDEX, PICKLE, PICKLE_INDEX)


class HFFileError(ValueError):
    """A file of a Hugging Face model directory that cannot be read: damaged JSON or
    safetensors, or a pickle that ``torch.load(weights_only=True)`` refuses or cannot parse.
    The message names the file."""


def _directory(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p} is not a directory (expected a Hugging Face model directory)")
    return p


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, HFFileError)


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a Hugging Face model directory, as a dict.

    Args:
        path: the model directory.

    Returns:
        The parsed JSON object.

    Raises:
        FileNotFoundError: no directory, or no ``config.json`` in it.
        HFFileError: a ``config.json`` that is not a JSON object (named).
    """
    d = _directory(path)
    f = d / CONFIG
    if not f.is_file():
        raise FileNotFoundError(f"{d} has no {CONFIG}; found {sorted(x.name for x in d.iterdir())}")
    return _read_json(contained_file(d, CONFIG))


def read_generation_config(path: str | Path) -> dict[str, Any]:
    """``generation_config.json`` of a model directory, or ``{}`` when there is none."""
    d = _directory(path)
    f = d / GENERATION_CONFIG
    return _read_json(contained_file(d, GENERATION_CONFIG)) if f.is_file() else {}


def _load_safetensors(f: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(f), device="cpu")
    except (SafetensorError, OSError) as e:
        raise HFFileError(f"{f} is not a readable safetensors file: {e}") from None


def _load_pickle(f: Path) -> dict[str, Tensor]:
    try:
        with warnings.catch_warnings():  # the refusal below says what matters, once
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(str(f), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # refused by weights_only, or not a pickle at all
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HFFileError(
            f"{f} is not a weights-only PyTorch state dict (torch.load(weights_only=True) "
            f"refused it: {first}); qkv never unpickles code. Convert it to "
            f"{SAFETENSORS} with a tool you trust"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as e:
        raise HFFileError(f"{f} is damaged or not a PyTorch file: {e}") from e
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise HFFileError(f"{f} does not hold a flat dict of tensors (a state dict)")
    return obj


def _allowed_roots(d: Path) -> list[Path]:
    """Where the files of model directory ``d`` may really live: inside ``d``, and, for a
    snapshot of the Hugging Face hub cache (``models--org--name/snapshots/<rev>/``, whose
    files are links to ``../../blobs/<hash>``), inside that repository's ``blobs/``."""
    root = d.resolve()
    roots = [root]
    if root.parent.name == "snapshots":
        roots.append(root.parent.parent / "blobs")
    return roots


def contained_file(d: Path, name: object, named_by: Path | None = None) -> Path:
    """The file ``name`` of model directory ``d``, checked to stay inside it.

    A name read from a file (a shard in an index) must be a relative path without ``..``,
    and the file it reaches, links resolved, must be a regular file inside ``d`` (or the hub
    cache's ``blobs/``, see :func:`_allowed_roots`): a downloaded index cannot make qkv read
    ``/etc/...`` or a file beside the directory.

    Args:
        d: the model directory.
        name: the file's name relative to ``d``.
        named_by: the index file that names it (None for the directory's own files).

    Raises:
        HFFileError: a name that is not a plain relative path, or that leads outside ``d``.
        FileNotFoundError: no such file in ``d``.
    """
    who = f"{named_by} names {name!r}, which" if named_by is not None else f"{d / str(name)}"
    if not isinstance(name, str) or not name or "\x00" in name:
        raise HFFileError(f"{who} is not a file name")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or "\\" in name:
        raise HFFileError(
            f"{who} is outside the model directory {d}: only files inside it are read"
        )
    f = d / rel
    if not f.is_file():
        raise FileNotFoundError(f"{who} is not a file in {d}")
    real = f.resolve()
    if not any(real.is_relative_to(r) for r in _allowed_roots(d)):
        raise HFFileError(
            f"{who} is a link to {real}, outside the model directory {d}: only files inside "
            "it are read"
        )
    return f


def _load_index(index: Path, load: Any) -> dict[str, Tensor]:
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise HFFileError(f"{index} has no 'weight_map' object")
    shards = set(weight_map.values())
    if not all(isinstance(s, str) for s in shards):
        bad = next(s for s in shards if not isinstance(s, str))
        raise HFFileError(f"{index} names shard {bad!r}, which is not a file name")
    files = [contained_file(index.parent, s, index) for s in sorted(shards)]  # check all first
    out: dict[str, Tensor] = {}
    for f in files:
        out.update(load(f))
    return out


def read_hf_weights(path: str | Path) -> dict[str, Tensor]:
    """Every tensor of a model directory, by name, on the CPU in its stored dtype.

    Looks for, in order: ``model.safetensors``, ``model.safetensors.index.json`` (shards),
    ``pytorch_model.bin``, ``pytorch_model.bin.index.json``.

    Args:
        path: the model directory.

    Returns:
        ``{name: tensor}``.

    Raises:
        FileNotFoundError: none of those files (the directory's files are listed).
        HFFileError: a damaged file, or a pickle that is refused or not a state dict (named).
    """
    d = _directory(path)
    if (d / SAFETENSORS).is_file():
        return _load_safetensors(contained_file(d, SAFETENSORS))
    if (d / SAFETENSORS_INDEX).is_file():
        return _load_index(contained_file(d, SAFETENSORS_INDEX), _load_safetensors)
    if (d / PICKLE).is_file():
        return _load_pickle(contained_file(d, PICKLE))
    if (d / PICKLE_INDEX).is_file():
        return _load_index(contained_file(d, PICKLE_INDEX), _load_pickle)
    raise FileNotFoundError(
        f"{d} has no weights: looked for {', '.join(WEIGHT_FILES)}; "
        f"found {sorted(x.name for x in d.iterdir())}"
    )


def write_hf_dir(path: str | Path, config: dict[str, Any], tensors: dict[str, Tensor]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``path`` (created if missing).

    Both are written into a hidden staging directory first and moved into place with
    ``os.replace`` (the weights, then the config): a crash never leaves a truncated file,
    and a symbolic link planted under either name is replaced, never written through.

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=d))
    try:
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        (stage / CONFIG).write_text(text, encoding="utf-8")
        save_file(tensors, str(stage / SAFETENSORS), metadata={"format": "pt"})
        os.replace(stage / SAFETENSORS, d / SAFETENSORS)
        os.replace(stage / CONFIG, d / CONFIG)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return d
