"""Save and load models: ``model.save_pretrained(directory)`` and ``qkv.load(directory)``.

A saved model is a directory of ``model.safetensors`` (tied tensors stored once, each tensor
in its dtype) and ``config.json`` (``config.to_dict()``), optionally ``tokenizer.json``: the
same files as a training checkpoint, so :func:`load` also reads the trainer's checkpoints and
run directories.

>>> import tempfile, torch, qkv
>>> model = qkv.from_preset("gpt2-tiny", vocab_size=11)
>>> d = model.save_pretrained(tempfile.mkdtemp())
>>> again = qkv.load(d)
>>> all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
...                                      again.state_dict().values()))
True
"""

from __future__ import annotations

from pathlib import Path

import torch

from qkv.models._pretrained import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    LATEST_FILE,
    MODEL_FILE,
    REQUIRED_FILES,
    SavesToDirectory,
    load_weights,
    read_config,
    read_latest,
    resolve_checkpoint,
    save_pretrained,
    write_model_files,
)
from qkv.models.base import TransformerModel
from qkv.models.build import build

__all__ = [
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "LATEST_FILE",
    "MODEL_FILE",
    "REQUIRED_FILES",
    "SavesToDirectory",
    "load",
    "load_weights",
    "read_config",
    "read_latest",
    "resolve_checkpoint",
    "save_pretrained",
    "write_model_files",
]


def load(directory: str | Path, *, device: torch.device | str = "cpu") -> TransformerModel:
    """Rebuild the model saved in ``directory`` (exported as ``qkv.load``).

    The model is built from ``config.json`` (without disturbing the global RNG), its
    tensors are loaded strictly and bit-exactly (each in its saved dtype), and it is
    returned in eval mode on ``device``.

    A training run directory (with a ``latest`` file naming a directory under
    ``checkpoints/``) loads its newest checkpoint. The tokenizer saved next to the model
    (``model.save_pretrained(d, tokenizer=tok)``, or a task's checkpoint) is read by
    ``qkv.data.Tokenizer.load(d)`` (for a run directory, pass
    :func:`resolve_checkpoint` ``(d)``).

    Args:
        directory: a directory written by ``save_pretrained`` or the trainer, or a run
            directory.
        device: where the model goes.

    Returns:
        The model (``Seq2SeqTransformer``, ``DecoderLM``, ``EncoderModel`` or ``ViT``).

    Raises:
        FileNotFoundError: no such directory, or ``model.safetensors``/``config.json``
            missing.
        ValueError: an invalid ``config.json``, or tensors that do not fit the model
            (missing, unexpected and shape-mismatched names listed in one message).
    """
    d = resolve_checkpoint(directory)
    config = read_config(d)
    with torch.random.fork_rng(devices=[]):
        model = build(config)
    load_weights(model, d)
    return model.to(device).eval()
