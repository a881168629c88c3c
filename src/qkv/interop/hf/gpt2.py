"""GPT-2 (Radford et al. 2019) <-> :class:`qkv.models.DecoderLM`.

GPT-2 stores its projections as ``Conv1D`` weights of shape ``(in, out)``, the transpose of
``nn.Linear``'s ``(out, in)``, which the weight map transposes. Its ``c_attn`` stacks the
query, key and value projections as qkv's ``qkv_proj`` does. Everything else
(pre-norm with a final ``ln_f``, learned positions, tanh-GELU, tied output) is
``LMConfig``'s default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from qkv.interop._convert import Rule, copy, modules, transposed
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
from qkv.models import LMConfig, TransformerConfig

# -- weight map ------------------------------------------------------------------------
#: HF ``GPT2Model`` tensor -> qkv ``DecoderLM`` tensor, outside the blocks.
EMBEDDINGS: dict[str, str] = {
    "wte.weight": "embed.tok_emb.weight",
    "wpe.weight": "embed.pos_emb.emb.weight",
}
FINAL_NORM: dict[str, str] = {"ln_f": "decoder.norm"}
#: HF ``GPT2Block`` LayerNorms -> qkv ``DecoderLayer`` norms (weight and bias).
LAYER_NORMS: dict[str, str] = {"ln_1": "self_attn_norm", "ln_2": "ff_norm"}
#: HF ``Conv1D`` modules -> qkv ``nn.Linear`` modules: weights transposed, biases as is.
LAYER_CONV1D: dict[str, str] = {
    "attn.c_attn": "self_attn.qkv_proj",  # query, key and value stacked in both
    "attn.c_proj": "self_attn.out_proj",
    "mlp.c_fc": "ff.fc1",
    "mlp.c_proj": "ff.fc2",
}
LM_HEAD = "lm_head.weight"
#: The causal-mask buffers that older checkpoints saved (``h.N.attn.bias``,
#: ``h.N.attn.masked_bias``): not weights.
IGNORED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")


def weight_map(cfg: TransformerConfig) -> list[Rule]:
    """The rules between a GPT-2 checkpoint (without the ``transformer.`` prefix) and a
    ``DecoderLM`` of ``cfg``."""
    assert isinstance(cfg, LMConfig)
    rules = [
        copy(h, q, aliases=(LM_HEAD,) if h == "wte.weight" and cfg.tie_embeddings else ())
        for h, q in EMBEDDINGS.items()
    ]
    rules += block_rules(cfg.n_layers)
    if not cfg.tie_embeddings:
        rules.append(copy(LM_HEAD, "lm_head.weight"))
    return rules


def block_rules(n_layers: int, hf_prefix: str = "") -> list[Rule]:
    """The rules of GPT-2's ``h.N`` blocks (self-attention, feed-forward and their norms)
    and ``ln_f`` <-> qkv's ``decoder.layers.N`` and ``decoder.norm``."""
    rules: list[Rule] = []
    for i in range(n_layers):
        hf, qk = f"{hf_prefix}h.{i}.", f"decoder.layers.{i}."
        rules += modules(LAYER_NORMS, hf, qk)
        for h, q in LAYER_CONV1D.items():
            rules.append(transposed(f"{hf}{h}.weight", f"{qk}{q}.weight"))
            rules.append(copy(f"{hf}{h}.bias", f"{qk}{q}.bias"))
    return rules + modules(FINAL_NORM, hf_prefix)


# -- config map ------------------------------------------------------------------------
def config_from_hf(hf: Mapping[str, Any], weights: Mapping[str, Tensor], what: str) -> LMConfig:
    """``GPT2Config`` -> :class:`~qkv.models.LMConfig`.

    ``scale_attn_weights=False`` becomes ``attn_scale=1.0``; ``reorder_and_upcast_attn`` only
    changes fp16 numerics and is accepted. Dropout: ``resid_pdrop`` (qkv has one dropout for
    embeddings and residuals).

    Raises:
        HFConversionError: values qkv cannot express (per-layer attention scaling,
            cross-attention, an unknown activation), all listed.
    """
    issues = Issues(what)
    required(hf, issues, "n_embd", "n_head", "n_layer", "vocab_size")
    issues.expect(hf, "scale_attn_by_inverse_layer_idx", (False,), False)
    issues.expect(hf, "add_cross_attention", (False,), False)
    act = issues.activation("activation_function", hf.get("activation_function", "gelu_new"))
    issues.raise_if_any()
    d = hf["n_embd"]
    return LMConfig(
        d_model=d,
        n_heads=hf["n_head"],
        d_ff=hf.get("n_inner") or 4 * d,
        activation=act,  # type: ignore[arg-type]
        norm="layer",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        norm_placement="pre",
        bias=True,
        dropout=hf.get("resid_pdrop", 0.1),
        attn_dropout=hf.get("attn_pdrop", 0.1),
        pos="learned",
        attn_scale=None if hf.get("scale_attn_weights", True) else 1.0,
        init="gpt2",
        init_std=hf.get("initializer_range", 0.02),
        vocab_size=hf["vocab_size"],
        n_layers=hf["n_layer"],
        max_len=hf.get("n_positions", hf.get("n_ctx", 1024)),
        pad_token_id=pad_id(hf),
        tie_embeddings=tied(hf, weights, "wte.weight", LM_HEAD),
        scale_embeddings=False,
        embed_norm=False,
    )


def config_to_hf(cfg: TransformerConfig) -> dict[str, Any]:
    """:class:`~qkv.models.LMConfig` -> ``GPT2Config`` dict (``GPT2LMHeadModel``).

    Raises:
        HFConversionError: features GPT-2 lacks (RoPE, RMSNorm, post-norm, grouped-query
            heads, ...), all listed.
    """
    issues = to_hf_issues(cfg, "GPT-2", LMConfig, article="an")
    assert isinstance(cfg, LMConfig)
    common_to_hf(
        cfg,
        issues,
        norm="layer",
        norm_placement="pre",
        bias=True,
        pos="learned",
        n_kv_heads=None,
        head_dim=None,
        scale_embeddings=False,
        embed_norm=False,
        sliding_window=0,
    )
    if cfg.attn_scale not in (None, 1.0):
        issues.add(f"attn_scale={cfg.attn_scale!r} (GPT-2 has 1/sqrt(d_h) or 1.0)")
    act = activation_to_hf(cfg, issues, ("gelu", "gelu_tanh", "relu", "silu"))
    issues.raise_if_any()
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_embd": cfg.d_model,
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_ff,
        "n_layer": cfg.n_layers,
        "n_positions": cfg.max_len,
        "vocab_size": cfg.vocab_size,
        "activation_function": act,
        "layer_norm_epsilon": cfg.norm_eps,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.attn_dropout,
        "initializer_range": cfg.init_std,
        "scale_attn_weights": cfg.attn_scale is None,
        "pad_token_id": cfg.pad_token_id,
        "tie_word_embeddings": cfg.tie_embeddings,
    }


def _ignored(name: str) -> bool:
    return IGNORED.fullmatch(name) is not None


FAMILY = HFFamily(
    name="gpt2",
    model_types=("gpt2",),
    config_family="lm",
    prefix="transformer.",
    heads=("lm_head.",),
    base_architectures=("GPT2Model",),
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    weight_map=weight_map,
    ignored=_ignored,
)
