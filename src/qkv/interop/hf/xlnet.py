"""XLNet (Yang et al. 2019) <-> :class:`qkv.models.XLNetLM`.

``transformers`` keeps each projection as one ``(d_model, n_head, d_head)`` parameter
applied with ``einsum("ibh,hnd->ibnd")``; qkv's are ``nn.Linear`` weights ``(h d_h,
d_model)``, the query, key and value stacked in ``qkv_proj``. The map reshapes and
transposes them; the relative-attention biases keep their shapes under qkv's names
(``r_w_bias`` -> ``rel.u``, ``r_r_bias`` -> ``rel.v``, ``r_s_bias`` -> ``seg_bias``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from qkv.interop._convert import Rule, copy, modules
from qkv.interop.hf._common import (
    HFFamily,
    Issues,
    activation_to_hf,
    common_to_hf,
    pad_id,
    required,
    tied,
    to_hf_issues,
)
from qkv.models import TransformerConfig, XLNetConfig

# -- weight map ------------------------------------------------------------------------
LM_HEAD = "lm_loss.weight"
#: HF ``XLNetLayer`` modules -> qkv ``XLNetLayer`` modules (weight and bias).
LAYER_MODULES: dict[str, str] = {
    "rel_attn.layer_norm": "self_attn_norm",
    "ff.layer_norm": "ff_norm",
    "ff.layer_1": "ff.fc1",
    "ff.layer_2": "ff.fc2",
}
#: HF relative-attention parameters kept as they are.
LAYER_BIASES: dict[str, str] = {
    "rel_attn.r_w_bias": "self_attn.rel.u",
    "rel_attn.r_r_bias": "self_attn.rel.v",
    "rel_attn.r_s_bias": "self_attn.seg_bias",
    "rel_attn.seg_embed": "self_attn.seg_embed",
}


def _in_proj(ts: Sequence[Tensor]) -> list[Tensor]:
    """``(d, n, d_h)`` einsum weights -> stacked ``nn.Linear`` rows ``(k n d_h, d)``."""
    return [torch.cat([t.reshape(t.shape[0], -1).t() for t in ts], dim=0)]


def _in_proj_back(ts: Sequence[Tensor], n: int, d_h: int, parts: int) -> list[Tensor]:
    return [w.t().reshape(-1, n, d_h) for w in ts[0].chunk(parts, dim=0)]


def weight_map(cfg: TransformerConfig) -> list[Rule]:
    """The rules between an XLNet checkpoint (without ``transformer.``) and an
    ``XLNetLM`` of ``cfg``."""
    assert isinstance(cfg, XLNetConfig)
    n, d_h, d = cfg.n_heads, cfg.resolved_head_dim, cfg.d_model
    rules = [
        copy(
            "word_embedding.weight",
            "tok_emb.weight",
            aliases=(LM_HEAD,) if cfg.tie_embeddings else (),
        ),
        Rule(
            ("mask_emb",),
            ("mask_emb",),
            to_qkv=lambda ts: [ts[0].reshape(-1)],
            to_hf=lambda ts: [ts[0].reshape(1, 1, -1)],
        ),
    ]
    for i in range(cfg.n_layers):
        hf, qk = f"layer.{i}.", f"encoder.layers.{i}."
        rules += modules(LAYER_MODULES, hf, qk)
        rules += [copy(f"{hf}{h}", f"{qk}{q}") for h, q in LAYER_BIASES.items()]
        rules.append(
            Rule(
                tuple(f"{hf}rel_attn.{w}" for w in "qkv"),
                (f"{qk}self_attn.qkv_proj.weight",),
                to_qkv=_in_proj,
                to_hf=lambda ts: _in_proj_back(ts, n, d_h, 3),
            )
        )
        rules.append(
            Rule(
                (f"{hf}rel_attn.r",),
                (f"{qk}self_attn.rel.r_proj.weight",),
                to_qkv=_in_proj,
                to_hf=lambda ts: _in_proj_back(ts, n, d_h, 1),
            )
        )
        rules.append(  # out = einsum("ibnd,hnd->ibh"): a (d, n d_h) Linear weight as is
            Rule(
                (f"{hf}rel_attn.o",),
                (f"{qk}self_attn.out_proj.weight",),
                to_qkv=lambda ts: [ts[0].reshape(ts[0].shape[0], -1)],
                to_hf=lambda ts: [ts[0].reshape(d, n, d_h)],
            )
        )
    rules.append(copy("lm_loss.bias", "lm_head.bias"))
    if not cfg.tie_embeddings:
        rules.append(copy(LM_HEAD, "lm_head.weight"))
    return rules


# -- config map ------------------------------------------------------------------------
def config_from_hf(hf: Mapping[str, Any], weights: Mapping[str, Tensor], what: str) -> XLNetConfig:
    """``XLNetConfig`` (transformers) -> :class:`~qkv.models.XLNetConfig`.

    Raises:
        HFConversionError: values qkv cannot express (``bi_data``, ``clamp_len > 0``,
            ``same_length`` with ``attn_type="uni"``, a ``d_head`` other than
            ``d_model / n_head``, an unknown activation), all listed.
    """
    issues = Issues(what)
    required(hf, issues, "d_model", "n_head", "n_layer", "d_inner", "vocab_size")
    issues.expect(hf, "bi_data", (False,), False)
    if (hf.get("clamp_len") or -1) > 0:
        issues.add(f"clamp_len={hf['clamp_len']!r} (qkv supports -1: no clamping)")
    if hf.get("attn_type", "bi") == "uni":
        issues.expect(hf, "same_length", (False,), False)
    issues.expect(hf, "attn_type", ("bi", "uni"), "bi")
    d, n = hf.get("d_model"), hf.get("n_head")
    if isinstance(d, int) and isinstance(n, int) and n and hf.get("d_head", d // n) != d // n:
        issues.add(f"d_head={hf.get('d_head')!r} (qkv needs d_model / n_head = {d // n})")
    act = issues.activation("ff_activation", hf.get("ff_activation", "gelu"))
    issues.raise_if_any()
    drop = hf.get("dropout", 0.1)
    return XLNetConfig(
        d_model=hf["d_model"],
        n_heads=hf["n_head"],
        d_ff=hf["d_inner"],
        activation=act,  # type: ignore[arg-type]
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        dropout=drop,
        attn_dropout=drop,
        init_std=hf.get("initializer_range", 0.02),
        vocab_size=hf["vocab_size"],
        n_layers=hf["n_layer"],
        pad_token_id=pad_id(hf),
        attn_type=hf.get("attn_type", "bi"),
        tie_embeddings=tied(hf, weights, "word_embedding.weight", LM_HEAD),
    )


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """:class:`~qkv.models.XLNetConfig` -> ``XLNetConfig`` dict (``XLNetLMHeadModel``).

    Raises:
        HFConversionError: features XLNet lacks (RMSNorm, a separate attention dropout,
            an activation without a name there), all listed.
    """
    issues = to_hf_issues(cfg, "XLNet", XLNetConfig, article="an")
    assert isinstance(cfg, XLNetConfig)
    common_to_hf(cfg, issues, norm="layer", head_dim=None, ff_dropout=0.0, attn_scale=None)
    if cfg.attn_dropout != cfg.dropout:
        issues.add(f"attn_dropout={cfg.attn_dropout!r} != dropout={cfg.dropout!r} (XLNet has one)")
    act = activation_to_hf(cfg, issues, ("gelu", "gelu_tanh", "relu", "silu"))
    issues.raise_if_any()
    return {
        "model_type": "xlnet",
        "architectures": ["XLNetLMHeadModel"],
        "d_model": cfg.d_model,
        "n_head": cfg.n_heads,
        "d_head": cfg.resolved_head_dim,
        "d_inner": cfg.d_ff,
        "n_layer": cfg.n_layers,
        "vocab_size": cfg.vocab_size,
        "ff_activation": act,
        "layer_norm_eps": cfg.norm_eps,
        "dropout": cfg.dropout,
        "attn_type": cfg.attn_type,
        "initializer_range": cfg.init_std,
        "pad_token_id": cfg.pad_token_id,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bi_data": False,
        "clamp_len": -1,
        "same_length": False,
        "mem_len": None,
    }


FAMILY = HFFamily(
    name="xlnet",
    model_types=("xlnet",),
    config_family="xlnet",
    prefix="transformer.",
    heads=("lm_loss.",),
    base_architectures=("XLNetModel",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
)
