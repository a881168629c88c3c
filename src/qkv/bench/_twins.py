"""Peer models of the same shape as a qkv model, for the benchmarks.

Each builder takes one :class:`ModelShape` and returns the qkv model or a peer of identical
shape: ``transformers``' GPT-2, BART and Marian, a GPT built from
``torch.nn.TransformerEncoderLayer``, a nanoGPT-shaped GPT written from the GPT-2 papers
(:mod:`qkv.bench._paper_gpt`), when installed ``x-transformers``' decoder, and the real
nanoGPT's ``GPT`` from the user's own checkout of karpathy/nanoGPT (:func:`nanogpt_gpt`,
imported from its ``model.py`` by path: nothing of it is copied into qkv). Timing needs
identical shapes, not identical weights,
so every model keeps its own initialization. Parameter counts are reported and tested: equal
for the language models; for BART and Marian they differ only by what ``transformers`` stores
differently (two extra position rows per stack, Marian's fixed sinusoids as parameters, the
output bias as a buffer).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv._checks import check_int
from qkv.bench._paper_gpt import PaperGPT
from qkv.models import LMConfig, Seq2SeqConfig, build
from qkv.models.base import TransformerModel


@dataclass(frozen=True)
class ModelShape:
    """The sizes every twin shares.

    Attributes:
        d_model: width ``d``.
        n_heads: heads ``h``.
        n_layers: decoder layers of the language models.
        vocab_size: vocabulary.
        max_len: position table size.
        d_ff: feed-forward width; ``None`` = ``4 d``.
        n_encoder_layers: encoder layers of the seq2seq models.
        n_decoder_layers: decoder layers of the seq2seq models.
    """

    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 6
    vocab_size: int = 8192
    max_len: int = 1024
    d_ff: int | None = None
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "n_layers", "vocab_size", "max_len"):
            check_int(name, getattr(self, name))
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")

    @property
    def ff(self) -> int:
        return 4 * self.d_model if self.d_ff is None else self.d_ff


#: seq2seq model family -> its qkv config fields beyond the shape
SEQ2SEQ_STYLES: dict[str, dict[str, Any]] = {
    # BART: learned positions, post-norm, an embedding LayerNorm, GELU, final_logits_bias
    "bart": {
        "activation": "gelu",
        "pos": "learned",
        "embed_norm": True,
        "scale_embeddings": False,
        "output_bias": True,
    },
    # Marian (OPUS-MT): fixed sinusoids, embeddings scaled by sqrt(d), SiLU, no embedding norm
    "marian": {
        "activation": "silu",
        "pos": "sinusoidal",
        "embed_norm": False,
        "scale_embeddings": True,
        "output_bias": True,
    },
}


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied matrices once)."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------
# decoder-only language models
# ---------------------------------------------------------------------------------------
def qkv_lm(shape: ModelShape) -> TransformerModel:
    """qkv's GPT-2-style :class:`~qkv.models.DecoderLM` (no dropout)."""
    return build(
        LMConfig(
            d_model=shape.d_model,
            n_heads=shape.n_heads,
            d_ff=shape.ff,
            n_layers=shape.n_layers,
            vocab_size=shape.vocab_size,
            max_len=shape.max_len,
            activation="gelu_tanh",
            norm_placement="pre",
            pos="learned",
            tie_embeddings=True,
            dropout=0.0,
            attn_dropout=0.0,
        )
    )


def hf_gpt2(shape: ModelShape, attn_implementation: str = "sdpa") -> nn.Module:
    """``transformers.GPT2LMHeadModel`` of the same shape (GPT-2's ``gelu_new`` = qkv's
    ``gelu_tanh``; no dropout)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        n_embd=shape.d_model,
        n_head=shape.n_heads,
        n_layer=shape.n_layers,
        n_inner=shape.ff,
        vocab_size=shape.vocab_size,
        n_positions=shape.max_len,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        attn_implementation=attn_implementation,
    )
    return GPT2LMHeadModel(cfg)


def paper_gpt(shape: ModelShape) -> nn.Module:
    """The nanoGPT-shaped GPT-2 written from the papers (:class:`~qkv.bench._paper_gpt
    .PaperGPT`)."""
    return PaperGPT(
        shape.vocab_size, shape.max_len, shape.d_model, shape.n_heads, shape.n_layers, shape.ff
    )


def x_transformers_missing() -> str | None:
    """Why ``x-transformers`` rows cannot run (not installed), or None."""
    if importlib.util.find_spec("x_transformers") is None:
        return "x-transformers is not installed (pip install x-transformers)"
    return None


def x_transformers_gpt(shape: ModelShape) -> nn.Module:
    """``x_transformers.TransformerWrapper`` over a ``Decoder`` of the same shape: learned
    absolute positions (its default), pre-norm, ``4 d`` feed-forward, fused SDPA attention
    (``attn_flash``), output tied to the token embedding; its own defaults otherwise
    (e.g. exact GELU and no q/k/v biases, so its parameter count differs slightly)."""
    from x_transformers import Decoder, TransformerWrapper

    return TransformerWrapper(
        num_tokens=shape.vocab_size,
        max_seq_len=shape.max_len,
        tie_embedding=True,
        attn_layers=Decoder(
            dim=shape.d_model,
            depth=shape.n_layers,
            heads=shape.n_heads,
            attn_dim_head=shape.d_model // shape.n_heads,
            ff_mult=shape.ff / shape.d_model,
            attn_flash=True,
        ),
    )


def nanogpt_model_file(path: str | Path) -> Path:
    """The ``model.py`` of a nanoGPT checkout: ``path`` itself when it is that file, else
    the ``model.py`` in the folder ``path``.

    Raises:
        ValueError: no such file (naming ``path``).
    """
    p = Path(path).expanduser()
    file = p if p.is_file() else p / "model.py"
    if not file.is_file():
        raise ValueError(
            f"no model.py in {str(path)!r}: give a checkout of karpathy/nanoGPT (the folder "
            f"holding its model.py, or that file)"
        )
    return file.resolve()


@functools.cache
def _import_file(file: Path) -> ModuleType:
    name = f"_qkv_nanogpt_{len(sys.modules)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ValueError(f"{str(file)!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while they are made
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ValueError(f"importing {str(file)!r} failed: {type(e).__name__}: {e}") from e
    return module


def load_nanogpt(path: str | Path) -> ModuleType:
    """The module of nanoGPT's ``model.py`` in the checkout ``path``
    (:func:`nanogpt_model_file`), imported from the file itself (once per file).

    Raises:
        ValueError: no ``model.py``, it fails to import, or it lacks ``GPT`` or
            ``GPTConfig`` (naming the file).
    """
    file = nanogpt_model_file(path)
    module = _import_file(file)
    missing = [n for n in ("GPT", "GPTConfig") if not callable(getattr(module, n, None))]
    if missing:
        raise ValueError(
            f"{str(file)!r} defines no {' or '.join(missing)}: is it karpathy/nanoGPT's model.py?"
        )
    return module


def nanogpt_why_not(shape: ModelShape) -> str | None:
    """Why nanoGPT's ``GPT`` cannot take ``shape`` (its MLP is ``4 n_embd`` wide), or None."""
    if shape.ff != 4 * shape.d_model:
        return f"nanoGPT's MLP is 4 d = {4 * shape.d_model} wide, not d_ff={shape.ff}"
    return None


def nanogpt_gpt(path: str | Path, shape: ModelShape) -> nn.Module:
    """karpathy/nanoGPT's ``GPT`` from the checkout ``path`` (:func:`load_nanogpt`), built
    with ``GPTConfig(n_layer, n_head, n_embd, block_size, vocab_size, dropout=0.0,
    bias=True)`` of ``shape`` (biases as GPT-2 and the other peers; nanoGPT's own defaults
    otherwise, e.g. its exact GELU). Its call is nanoGPT's: ``model(idx, targets)`` ->
    ``(logits, loss)``. The line it prints with its parameter count is swallowed.

    Raises:
        ValueError: the checkout cannot be loaded, or ``shape`` has ``d_ff`` other than
            ``4 d``.
    """
    why = nanogpt_why_not(shape)
    if why is not None:
        raise ValueError(why)
    module = load_nanogpt(path)
    cfg = module.GPTConfig(
        n_layer=shape.n_layers,
        n_head=shape.n_heads,
        n_embd=shape.d_model,
        block_size=shape.max_len,
        vocab_size=shape.vocab_size,
        dropout=0.0,
        bias=True,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return module.GPT(cfg)  # type: ignore[no-any-return]


class TorchGPT(nn.Module):
    """A GPT-2-shaped language model from ``torch.nn.TransformerEncoderLayer``: token and
    learned position embeddings, pre-norm layers with a causal mask, a final LayerNorm and
    an output projection tied to the token embedding.

    The embeddings start as GPT-2's, ``N(0, 0.02^2)``: with ``nn.Embedding``'s default
    ``N(0, 1)`` the tied output saturates the softmax, and the resulting denormal
    gradients slow the output layer's matmuls several times on x86 CPUs, which would time
    the initialization rather than the model.

    Args:
        shape: the sizes.
    """

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        d = shape.d_model
        self.tok = nn.Embedding(shape.vocab_size, d)
        self.pos = nn.Embedding(shape.max_len, d)
        layer = nn.TransformerEncoderLayer(
            d,
            shape.n_heads,
            shape.ff,
            dropout=0.0,
            activation=functools.partial(F.gelu, approximate="tanh"),
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, shape.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, shape.vocab_size, bias=False)
        self.head.weight = self.tok.weight
        for emb in (self.tok, self.pos):
            nn.init.normal_(emb.weight, std=0.02)

    def forward(self, ids: Tensor) -> Tensor:
        """``(b, s)`` ids -> ``(b, s, vocab)`` logits."""
        s = ids.shape[1]
        x = self.tok(ids) + self.pos(torch.arange(s, device=ids.device))  # (b, s, d)
        causal = nn.Transformer.generate_square_subsequent_mask(s, device=ids.device)
        x = self.layers(x, mask=causal, is_causal=True)  # (b, s, d)
        return self.head(self.norm(x))  # (b, s, vocab)


# ---------------------------------------------------------------------------------------
# encoder-decoders
# ---------------------------------------------------------------------------------------
def qkv_seq2seq(shape: ModelShape, style: str) -> TransformerModel:
    """qkv's :class:`~qkv.models.Seq2SeqTransformer` shaped as BART or Marian (no dropout).

    Raises:
        ValueError: an unknown style.
    """
    if style not in SEQ2SEQ_STYLES:
        raise ValueError(f"style must be one of {list(SEQ2SEQ_STYLES)}, got {style!r}")
    return build(
        Seq2SeqConfig(
            d_model=shape.d_model,
            n_heads=shape.n_heads,
            d_ff=shape.ff,
            n_encoder_layers=shape.n_encoder_layers,
            n_decoder_layers=shape.n_decoder_layers,
            vocab_size=shape.vocab_size,
            max_len=shape.max_len,
            norm_placement="post",
            dropout=0.0,
            attn_dropout=0.0,
            ff_dropout=0.0,
            share_embeddings=True,
            tie_embeddings=True,
            init="normal",
            **SEQ2SEQ_STYLES[style],
        )
    )


def hf_seq2seq(shape: ModelShape, style: str, attn_implementation: str = "sdpa") -> nn.Module:
    """``transformers``' ``BartForConditionalGeneration`` or ``MarianMTModel`` of the same
    shape (no dropout).

    Raises:
        ValueError: an unknown style.
    """
    common: dict[str, Any] = {
        "vocab_size": shape.vocab_size,
        "d_model": shape.d_model,
        "encoder_layers": shape.n_encoder_layers,
        "decoder_layers": shape.n_decoder_layers,
        "encoder_attention_heads": shape.n_heads,
        "decoder_attention_heads": shape.n_heads,
        "encoder_ffn_dim": shape.ff,
        "decoder_ffn_dim": shape.ff,
        "max_position_embeddings": shape.max_len,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "pad_token_id": 0,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "decoder_start_token_id": 0,
        "forced_eos_token_id": None,
        "attn_implementation": attn_implementation,
    }
    if style == "bart":
        from transformers import BartConfig, BartForConditionalGeneration

        return BartForConditionalGeneration(
            BartConfig(**common, activation_function="gelu", scale_embedding=False)
        )
    if style == "marian":
        from transformers import MarianConfig, MarianMTModel

        return MarianMTModel(
            MarianConfig(**common, activation_function="swish", scale_embedding=True)
        )
    raise ValueError(f"style must be one of {list(SEQ2SEQ_STYLES)}, got {style!r}")
