"""Marian (Junczys-Dowmunt et al. 2018; the OPUS-MT models) <-> :class:`qkv.models.Seq2SeqTransformer`.

Marian is BART's post-norm encoder-decoder (:mod:`qkv.interop.hf.bart`: the same layer names)
without the embedding LayerNorm, with token embeddings scaled by ``sqrt(d_model)``,
SiLU ("swish") feed-forwards in the OPUS-MT models, and fixed sinusoidal positions.

Marian's sinusoids are laid out ``[sin(a_0) .. sin(a_{d/2-1}), cos(a_0) .. cos(a_{d/2-1})]``
(all sines, then all cosines), not interleaved as in :class:`qkv.pos.Sinusoidal`, and are not
stored in the checkpoint. The weight map computes that table exactly as ``transformers`` does
and loads it into a learned position table (``pos="learned"``), frozen
(``requires_grad=False``) after loading; :func:`qkv.interop.to_hf` checks that it is still
that table, since Marian cannot store another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from qkv.interop._convert import Rule
from qkv.interop.hf._common import HFFamily, Issues, ignore_exactly
from qkv.interop.hf.bart import (
    FINAL_LOGITS_BIAS,
    check_to_hf,
    layer_rules,
    stack_fields,
    stack_to_hf,
    token_fields,
    token_rules,
)
from qkv.models import Seq2SeqConfig, TransformerConfig

#: qkv tables that hold Marian's fixed sinusoids.
POSITIONS: tuple[str, ...] = ("src_embed.pos_emb.emb.weight", "tgt_embed.pos_emb.emb.weight")


def marian_sinusoids(n_positions: int, d: int) -> Tensor:
    """Marian's position table ``(n_positions, d)`` in float32.

    ``a_i(pos) = pos / 10000^(2i / d)``; columns ``[0, ceil(d/2))`` hold ``sin(a_i)`` and
    the rest ``cos(a_i)`` (``transformers``' ``MarianSinusoidalPositionalEmbedding``, computed
    in float64 and rounded once).
    """
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (n, 1)
    j = torch.arange(d, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / d)  # (n, d)
    half = math.ceil(d / 2)
    out = torch.empty(n_positions, d, dtype=torch.float32)
    out[:, :half] = angle[:, 0::2].sin().float()
    out[:, half:] = angle[:, 1::2].cos().float()
    return out


def weight_map(cfg: TransformerConfig) -> list[Rule]:
    """The rules between a Marian checkpoint (without the ``model.`` prefix) and a
    ``Seq2SeqTransformer`` of ``cfg``; the position tables are computed."""
    assert isinstance(cfg, Seq2SeqConfig)
    n, d = cfg.max_len, cfg.d_model
    rules = token_rules(cfg)
    rules += [Rule((), (q,), to_qkv=lambda ts: [marian_sinusoids(n, d)]) for q in POSITIONS]
    return rules + layer_rules(cfg)


def config_from_hf(
    hf: Mapping[str, Any], weights: Mapping[str, Tensor], what: str
) -> Seq2SeqConfig:
    """``MarianConfig`` -> :class:`~qkv.models.Seq2SeqConfig`.

    Raises:
        HFConversionError: values qkv cannot express (different encoder and decoder head
            counts or widths, an unknown activation), all listed.
    """
    issues = Issues(what)
    fields = stack_fields(hf, issues)
    issues.expect(hf, "normalize_before", (False,), False)
    issues.expect(hf, "normalize_embedding", (False,), False)
    issues.raise_if_any()
    return Seq2SeqConfig(**fields, **token_fields(hf, weights), embed_norm=False)


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """:class:`~qkv.models.Seq2SeqConfig` -> ``MarianConfig`` dict (``MarianMTModel``).

    Raises:
        HFConversionError: features Marian lacks (an embedding norm, pre-norm, an untied
            output, ...), all listed.
    """
    issues = check_to_hf(cfg, "Marian", embed_norm=False)
    assert isinstance(cfg, Seq2SeqConfig)
    out = stack_to_hf(cfg, issues)
    issues.raise_if_any()
    return {
        "model_type": "marian",
        "architectures": ["MarianMTModel"],
        **out,
        "decoder_vocab_size": cfg.target_vocab,
        "decoder_start_token_id": cfg.pad_token_id,  # Marian starts decoding from <pad>
        "share_encoder_decoder_embeddings": cfg.share_embeddings,
    }


#: Known tensors deliberately left unread: the sinusoids (fixed; older checkpoints stored
#: them) and the unused ``shared`` table saved beside separate source and target tables.
IGNORED: tuple[str, ...] = (
    "encoder.embed_positions.weight",
    "decoder.embed_positions.weight",
    "shared.weight",
)


def finalize(model: nn.Module) -> None:
    """Freeze the fixed position tables."""
    params = dict(model.named_parameters())
    for name in POSITIONS:
        params[name].requires_grad_(False)


FAMILY = HFFamily(
    name="marian",
    model_types=("marian",),
    config_family="seq2seq",
    prefix="model.",
    heads=("lm_head.", FINAL_LOGITS_BIAS),
    base_architectures=("MarianModel",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
    ignored=ignore_exactly(IGNORED),
    finalize=finalize,
)
