"""``VisionEncoderDecoderModel`` with a ViT encoder and a GPT-2 decoder <-> :class:`qkv.models.Captioner`.

The checkpoint holds the encoder (a ``ViTModel``) under ``encoder.`` and the decoder (a
``GPT2LMHeadModel`` with ``add_cross_attention``) under ``decoder.``. The encoder's tensors
map as :func:`qkv.interop.hf.vit.encoder_rules`, the decoder's blocks as
:func:`qkv.interop.hf.gpt2.block_rules`; each block's cross-attention keeps the query
(``q_attn``) apart from the key and value (``c_attn``, stacked) in ``Conv1D`` weights, which
qkv stacks as one ``qkv_proj``. ``VisionEncoderDecoderModel`` feeds the decoder the
encoder's last hidden state (class token and patches after the final norm); the ViT
pooler is unused and not read.

Both halves share qkv's one set of stack fields: the same width, heads, feed-forward width,
activation, norm epsilon and dropout; a checkpoint whose halves differ (or that projects the
encoder's width to the decoder's, ``enc_to_dec_proj``) is refused with every difference
listed. A BERT decoder (post-norm) is not read: qkv's captioner is pre-norm.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from qkv.interop._convert import Rule, copy, modules, transposed
from qkv.interop.hf import gpt2, vit
from qkv.interop.hf._common import HFFamily, Issues, pad_id, required, tied
from qkv.models import CaptionerConfig, LMConfig, TransformerConfig, ViTConfig

ENCODER, DECODER = "encoder.", "decoder.transformer."
LM_HEAD = "decoder.lm_head.weight"
#: GPT-2 cross-attention ``Conv1D`` modules -> qkv's cross-attention (query, then key and
#: value, stacked in ``qkv_proj``), its output projection and its norm.
CROSS_Q, CROSS_KV, CROSS_OUT = (
    "crossattention.q_attn",
    "crossattention.c_attn",
    "crossattention.c_proj",
)
CROSS_NORM: dict[str, str] = {"ln_cross_attn": "cross_attn_norm"}
#: The ViT pooler (unused by ``VisionEncoderDecoderModel``) and GPT-2's old causal-mask buffers.
IGNORED = re.compile(
    r"encoder\.pooler\..*|decoder\.transformer\.h\.\d+\.(crossattention|attn)\.(bias|masked_bias)"
)


def _stack_cross(ts: Sequence[Tensor]) -> list[Tensor]:
    """``q_attn`` ``(d, d)`` and ``c_attn`` ``(d, 2d)`` ``Conv1D`` weights (or their biases)
    -> one ``(3d, d)`` weight (or ``(3d,)`` bias), rows q, k, v."""
    q, kv = ts
    if q.ndim == 2:
        q, kv = q.t(), kv.t()  # Conv1D (in, out) -> Linear (out, in)
    return [torch.cat((q, kv), 0)]


def _split_cross(ts: Sequence[Tensor]) -> list[Tensor]:
    """The inverse of :func:`_stack_cross`."""
    (w,) = ts
    d = w.shape[0] // 3
    q, kv = w[:d], w[d:]
    return [q.t(), kv.t()] if w.ndim == 2 else [q, kv]


def weight_map(cfg: TransformerConfig) -> list[Rule]:
    """The rules between a ``VisionEncoderDecoderModel`` (ViT + GPT-2) checkpoint and a
    :class:`~qkv.models.Captioner` of ``cfg``."""
    assert isinstance(cfg, CaptionerConfig)
    rules = [
        Rule(tuple(ENCODER + h for h in r.hf), r.qkv, r.to_qkv, r.to_hf, r.aliases, r.optional)
        for r in vit.encoder_rules(cfg.n_encoder_layers)
    ]
    rules += [
        copy(
            f"{DECODER}wte.weight",
            "tgt_embed.tok_emb.weight",
            aliases=(LM_HEAD,) if cfg.tie_embeddings else (),
        ),
        copy(f"{DECODER}wpe.weight", "tgt_embed.pos_emb.emb.weight"),
    ]
    rules += gpt2.block_rules(cfg.n_decoder_layers, DECODER)
    for i in range(cfg.n_decoder_layers):
        hf, qk = f"{DECODER}h.{i}.", f"decoder.layers.{i}."
        rules += modules(CROSS_NORM, hf, qk)
        for s in ("weight", "bias"):
            rules.append(
                Rule(
                    (f"{hf}{CROSS_Q}.{s}", f"{hf}{CROSS_KV}.{s}"),
                    (f"{qk}cross_attn.qkv_proj.{s}",),
                    to_qkv=_stack_cross,
                    to_hf=_split_cross,
                )
            )
        rules.append(transposed(f"{hf}{CROSS_OUT}.weight", f"{qk}cross_attn.out_proj.weight"))
        rules.append(copy(f"{hf}{CROSS_OUT}.bias", f"{qk}cross_attn.out_proj.bias"))
    if not cfg.tie_embeddings:
        rules.append(copy(LM_HEAD, "lm_head.weight"))
    return rules


# -- config map ------------------------------------------------------------------------
def _same(issues: Issues, name: str, enc: Any, dec: Any) -> None:
    if enc != dec:
        issues.add(f"{name}: encoder {enc!r} vs decoder {dec!r} (qkv's captioner shares it)")


def config_from_hf(
    hf: Mapping[str, Any], weights: Mapping[str, Tensor], what: str
) -> CaptionerConfig:
    """``VisionEncoderDecoderConfig`` (ViT + GPT-2) -> :class:`~qkv.models.CaptionerConfig`.

    Raises:
        HFConversionError: another encoder or decoder, halves that differ in a shared field,
            a decoder without cross-attention, or values qkv cannot express, all listed.
    """
    issues = Issues(what)
    enc, dec = hf.get("encoder") or {}, hf.get("decoder") or {}
    if enc.get("model_type") != "vit":
        issues.add(f"encoder model_type={enc.get('model_type')!r} (qkv reads 'vit')")
    if dec.get("model_type") != "gpt2":
        issues.add(f"decoder model_type={dec.get('model_type')!r} (qkv reads 'gpt2')")
    issues.raise_if_any()
    required(
        enc,
        issues,
        "hidden_size",
        "num_attention_heads",
        "num_hidden_layers",
        "image_size",
        "patch_size",
    )
    required(dec, issues, "n_embd", "n_head", "n_layer", "vocab_size")
    issues.expect(dec, "add_cross_attention", (True,), False)
    issues.expect(enc, "qkv_bias", (True,), True)
    issues.expect(dec, "scale_attn_weights", (True,), True)
    issues.expect(dec, "scale_attn_by_inverse_layer_idx", (False,), False)
    issues.raise_if_any()
    d = dec["n_embd"]
    enc_act = issues.activation("encoder hidden_act", enc.get("hidden_act", "gelu"))
    dec_act = issues.activation(
        "decoder activation_function", dec.get("activation_function", "gelu_new")
    )
    _same(issues, "width", enc["hidden_size"], d)
    _same(issues, "heads", enc["num_attention_heads"], dec["n_head"])
    _same(
        issues,
        "feed-forward width",
        enc.get("intermediate_size", 3072),
        dec.get("n_inner") or 4 * d,
    )
    _same(issues, "activation", enc_act, dec_act)
    _same(
        issues,
        "norm epsilon",
        enc.get("layer_norm_eps", 1e-12),
        dec.get("layer_norm_epsilon", 1e-5),
    )
    for key in ("image_size", "patch_size"):
        if not isinstance(enc.get(key, 0), int):
            issues.add(f"encoder {key}={enc.get(key)!r} (qkv supports square images and patches)")
    issues.raise_if_any()
    return CaptionerConfig(
        d_model=d,
        n_heads=dec["n_head"],
        d_ff=dec.get("n_inner") or 4 * d,
        activation=dec_act,  # type: ignore[arg-type]
        norm="layer",
        norm_eps=dec.get("layer_norm_epsilon", 1e-5),
        bias=True,
        dropout=dec.get("resid_pdrop", 0.1),
        attn_dropout=dec.get("attn_pdrop", 0.1),
        init_std=dec.get("initializer_range", 0.02),
        image_size=enc["image_size"],
        patch_size=enc["patch_size"],
        in_channels=enc.get("num_channels", 3),
        n_encoder_layers=enc["num_hidden_layers"],
        n_decoder_layers=dec["n_layer"],
        vocab_size=dec["vocab_size"],
        max_len=dec.get("n_positions", 1024),
        pad_token_id=pad_id(
            {**dec, "pad_token_id": hf.get("pad_token_id", dec.get("pad_token_id"))}
        ),
        tie_embeddings=tied(dec, weights, f"{DECODER}wte.weight", LM_HEAD),
    )


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """:class:`~qkv.models.CaptionerConfig` -> ``VisionEncoderDecoderConfig`` dict: the
    ViT and GPT-2 halves are written by :mod:`qkv.interop.hf.vit` and
    :mod:`qkv.interop.hf.gpt2` from the captioner's fields.

    Raises:
        HFConversionError: features ViT or GPT-2 lack, all listed.
    """
    assert isinstance(cfg, CaptionerConfig)
    shared = {f: getattr(cfg, f) for f in (
        "d_model", "n_heads", "d_ff", "activation", "norm", "norm_eps", "bias", "dropout",
        "attn_dropout", "init_std", "pruned_heads",
    )}  # fmt: skip
    enc = vit.config_to_hf(
        ViTConfig(
            **shared,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            in_channels=cfg.in_channels,
            n_classes=1,
            n_layers=cfg.n_encoder_layers,
        )
    )
    for key in ("architectures", "id2label", "label2id"):
        enc.pop(key)
    dec = gpt2.config_to_hf(
        LMConfig(
            **shared,
            init="gpt2",
            vocab_size=cfg.vocab_size,
            n_layers=cfg.n_decoder_layers,
            max_len=cfg.max_len,
            pad_token_id=cfg.pad_token_id,
            tie_embeddings=cfg.tie_embeddings,
        )
    )
    dec |= {"add_cross_attention": True, "is_decoder": True}
    return {
        "model_type": "vision-encoder-decoder",
        "architectures": ["VisionEncoderDecoderModel"],
        "is_encoder_decoder": True,
        "tie_word_embeddings": False,
        "pad_token_id": cfg.pad_token_id,
        "encoder": enc,
        "decoder": dec,
    }


def _ignored(name: str) -> bool:
    return IGNORED.fullmatch(name) is not None


FAMILY = HFFamily(
    name="vision-encoder-decoder",
    model_types=("vision-encoder-decoder",),
    config_family="captioner",
    prefix="",
    heads=(),
    base_architectures=("VisionEncoderDecoderModel",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
    ignored=_ignored,
)

__all__ = ["FAMILY", "config_from_hf", "config_to_hf", "weight_map"]
