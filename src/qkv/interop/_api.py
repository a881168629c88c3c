"""``from_hf`` / ``to_hf``: Hugging Face model directories <-> qkv models."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qkv.interop._checkpoint import (
    HFFileError,
    contained_file,
    read_generation_config,
    read_hf_config,
    read_hf_weights,
    write_hf_dir,
)
from qkv.interop._convert import model_tensors
from qkv.interop._convert import to_hf as _rules_to_hf
from qkv.interop._convert import to_qkv as _rules_to_qkv
from qkv.interop.hf import MODEL_TYPES, HFFamily, get_family
from qkv.models import TransformerModel, build
from qkv.models.family import family_of

TOKENIZER = "tokenizer.json"


@dataclass
class HFModel:
    """A qkv model loaded from a Hugging Face directory, with what the directory says about
    using it.

    Attributes:
        model: the qkv model (eval mode).
        family: the conversion used (``"bert"``, ``"gpt2"``, ``"vit"``, ``"bart"``,
            ``"marian"``, ``"t5"``).
        hf_config: the directory's ``config.json``.
        generation_config: its ``generation_config.json`` (``{}`` when absent).
        path: the directory.
    """

    model: TransformerModel
    family: str
    hf_config: dict[str, Any]
    generation_config: dict[str, Any]
    path: Path

    def token_id(self, name: str) -> int | None:
        """``bos_token_id``, ``eos_token_id``, ``pad_token_id`` or ``decoder_start_token_id``:
        from ``generation_config.json``, else ``config.json``; the first of a list; None when
        neither has it."""
        value = self.generation_config.get(name, self.hf_config.get(name))
        if isinstance(value, list):
            value = value[0] if value else None
        return value if isinstance(value, int) else None


def _family_for(hf_config: Mapping[str, Any], family: str | None, where: Path) -> HFFamily:
    if family is not None:
        return get_family(family)
    model_type = hf_config.get("model_type")
    if model_type is None:
        raise ValueError(
            f"{where / 'config.json'} has no model_type; pass family= one of {sorted(MODEL_TYPES)}"
        )
    return get_family(str(model_type))


def load_hf(
    path: str | Path,
    *,
    family: str | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> HFModel:
    """Load a Hugging Face model directory as a qkv model, with its configs.

    Args:
        path: a directory with ``config.json`` and ``model.safetensors`` (or shards, or
            ``pytorch_model.bin``, read with ``torch.load(weights_only=True)``).
        family: the conversion to use; default from ``config.json``'s ``model_type``.
        dtype: parameter dtype; default float32 whatever the checkpoint stores.
        device: where to put the model; default CPU.

    Returns:
        :class:`HFModel`.

    Raises:
        FileNotFoundError: no directory, ``config.json`` or weights.
        ValueError: an unsupported ``model_type`` (the supported ones are listed).
        HFConversionError: configuration values qkv cannot express, or missing, unexpected
            or shape-mismatched tensors, each listed by name.
    """
    where = Path(path)
    hf_config = read_hf_config(where)
    fam = _family_for(hf_config, family, where)
    weights = fam.normalize(read_hf_weights(where))
    what = f"cannot load {where} as {fam.name}"
    cfg = fam.config_from_hf(hf_config, weights, what)
    model = build(cfg)
    targets = model_tensors(model)
    state = _rules_to_qkv(fam.weight_map(cfg), weights, targets, ignored=fam.ignored, what=what)
    with torch.no_grad():
        for name, t in state.items():
            targets[name].copy_(t)
    fam.finalize(model)
    if dtype is not None:
        model.to(dtype=dtype)
    if device is not None:
        model.to(device=device)
    model.eval()
    return HFModel(model, fam.name, hf_config, read_generation_config(where), where)


def from_hf(
    path: str | Path,
    *,
    family: str | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> TransformerModel:
    """Load a Hugging Face model directory as the equivalent qkv model.

    ``config.json`` ``model_type`` picks the family: ``bert`` (-> ``EncoderModel``), ``gpt2``
    (-> ``DecoderLM``), ``vit`` (-> ``ViT``), ``swin`` (-> ``Swin``), ``bart``, ``marian``, ``t5`` (->
    ``Seq2SeqTransformer``). Each family's explicit weight map and config map are in
    :mod:`qkv.interop.hf`. No network, no ``transformers``: only ``safetensors`` (and
    ``torch.load(weights_only=True)`` for ``pytorch_model.bin``).

    >>> model = from_hf("all-MiniLM-L6-v2")          # doctest: +SKIP
    >>> out = model(ids, padding_mask=mask)         # doctest: +SKIP

    Args:
        path: the model directory.
        family: force a family instead of reading ``model_type``.
        dtype: parameter dtype (default float32).
        device: where to put the model (default CPU).

    Returns:
        The qkv model in eval mode.

    Raises:
        FileNotFoundError: no directory, ``config.json`` or weights.
        ValueError: an unsupported ``model_type`` (the supported ones are listed).
        HFConversionError: unsupported configuration values, or missing, unexpected or
            shape-mismatched tensors, all listed in one message.
    """
    return load_hf(path, family=family, dtype=dtype, device=device).model


def default_family(model: TransformerModel) -> str:
    """The family :func:`to_hf` writes a model as, from its qkv family's record
    (:attr:`qkv.models.Family.hf`): BERT for encoders, GPT-2 for language models, ViT, and
    for encoder-decoders T5 (relative positions), BART (an embedding norm) or Marian.

    Raises:
        ValueError: a model of a family with no Hugging Face counterpart.
    """
    found = family_of(model)
    choice = None if found is None else found.hf
    name = choice(model.config) if callable(choice) else choice
    if name is None:
        raise ValueError(
            f"a {type(model).__name__} has no Hugging Face family to be written as; pass family=..."
        )
    return name


def to_hf(
    model: TransformerModel,
    path: str | Path,
    *,
    family: str | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    tokenizer: Any | None = None,
) -> Path:
    """Write a qkv model as a Hugging Face model directory that ``transformers`` loads.

    Writes ``config.json`` and ``model.safetensors`` (and ``tokenizer.json`` when given a
    ``tokenizers.Tokenizer``), using the family's weight map backwards.

    Args:
        model: a qkv model whose config the family can express.
        path: the directory (created if missing).
        family: ``"bert"``, ``"gpt2"``, ``"vit"``, ``"bart"``, ``"marian"`` or ``"t5"``;
            default :func:`default_family`.
        config_overrides: entries merged over the generated ``config.json`` (token ids,
            labels, ...).
        tokenizer: a ``tokenizers.Tokenizer`` to save as ``tokenizer.json``.

    Returns:
        The directory.

    Raises:
        ValueError: an unknown family.
        HFConversionError: model features the family cannot express, all listed.
    """
    fam = get_family(family or default_family(model))
    cfg = model.config
    if cfg.family != fam.config_family:
        raise ValueError(
            f"{fam.name} holds {fam.config_family} models, got a {cfg.family} model "
            f"({type(model).__name__})"
        )
    hf_config = fam.config_to_hf(cfg)
    hf_config["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    hf_config.update(config_overrides or {})
    tensors = _rules_to_hf(
        fam.weight_map(cfg), model_tensors(model), what=f"cannot write this model as {fam.name}"
    )
    tensors = fam.denormalize(tensors, hf_config["architectures"][0])
    out = write_hf_dir(path, hf_config, tensors)
    if tokenizer is not None:
        tokenizer.save(str(out / TOKENIZER))
    return out


def load_hf_tokenizer(path: str | Path) -> Any:
    """The ``tokenizers.Tokenizer`` of a model directory's ``tokenizer.json`` (no network).

    Args:
        path: the model directory (or the ``tokenizer.json`` file itself).

    Returns:
        A ``tokenizers.Tokenizer``; ``encode(text).ids`` applies the model's special tokens
        (``[CLS] ... [SEP]``, ``</s>``, ...) as its post-processor says. Padding is turned
        off (a ``tokenizer.json`` may pad every input to a fixed length, e.g. 128 for
        all-MiniLM-L6-v2: padding one text would feed pads the model attends to); batch
        with ``enable_padding`` and pass the mask, as :func:`qkv.cli._hf.generate_text`
        does.

    The ``tokenizer.json`` of a directory must be a file inside it, as the weight shards
    must (:func:`~qkv.interop._checkpoint.contained_file`): a link out of the directory
    is refused, not followed.

    Raises:
        FileNotFoundError: no ``tokenizer.json``.
        HFFileError: a ``tokenizer.json`` that leads outside the directory, or that the
            ``tokenizers`` package cannot read (named).
        ImportError: the ``tokenizers`` package is missing (``pip install qkv[hf]``).
    """
    p = Path(path)
    if p.is_dir():
        if not (p / TOKENIZER).is_file():
            found = sorted(x.name for x in p.iterdir())
            raise FileNotFoundError(f"no {TOKENIZER} at {p}; found {found}")
        f = contained_file(p, TOKENIZER)
    elif p.is_file():  # the file itself, named by the user
        f = p
    else:
        raise FileNotFoundError(f"no {TOKENIZER} at {p}; found []")
    try:
        from tokenizers import Tokenizer
    except ImportError as e:  # pragma: no cover - tokenizers is a dependency of qkv[hf]
        raise ImportError(
            "load_hf_tokenizer needs the tokenizers package: pip install qkv[hf]"
        ) from e
    try:
        tok = Tokenizer.from_file(str(f))
    except Exception as e:  # the tokenizers package raises plain Exception
        raise HFFileError(
            f"{f} is not a tokenizer file the tokenizers package reads: {e}"
        ) from None
    tok.no_padding()
    return tok
