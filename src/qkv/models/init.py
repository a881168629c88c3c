"""Weight initialization per model family."""

from __future__ import annotations

import math

import torch
from torch import nn

from qkv.attn.mha import MultiHeadAttention
from qkv.layers.norms import RMSNorm
from qkv.models.config import INIT_SCHEMES, InitScheme
from qkv.pos.relative import RelativeBias


@torch.no_grad()
def init_weights(
    model: nn.Module, scheme: InitScheme, *, std: float = 0.02, n_layers: int = 1
) -> None:
    """Re-initialize every linear, convolution, embedding and norm of ``model`` in place.

    * ``"xavier"``: the original Transformer as in fairseq and the Annotated Transformer:
      linear weights Xavier-uniform (Glorot & Bengio 2010), embeddings ``N(0, 1/d)`` (unit
      variance once scaled by ``sqrt(d)``).
    * ``"normal"``: BERT, ViT: linear, convolution and embedding weights ``N(0, std^2)``.
    * ``"gpt2"``: ``"normal"``, then the projections that write into the residual stream
      (``out_proj``, ``fc2``) get ``std / sqrt(2 n_layers)`` (Radford et al. 2019, sec. 2.3).
    * ``"t5"``: T5's Mesh TensorFlow initialization (Raffel et al. 2020; ``transformers``'
      ``T5PreTrainedModel._init_weights`` with ``initializer_factor`` 1; ``std`` is unused):
      every linear weight ``N(0, 1/fan_in)``, except the query projection, which also takes
      the ``1/sqrt(d_h)`` that T5's unscaled attention (``attn_scale=1.0``) leaves out:
      ``N(0, 1/(d * d_h))``; embeddings and an untied output head ``N(0, 1)``; the relative
      position bias ``N(0, 1/d)``.

    Biases are zero, norm weights one, padding rows of embeddings zero. A linear layer whose
    weight is tied to an embedding is left to the embedding's rule. A stacked ``qkv_proj``
    gets Xavier per projection.

    Args:
        model: the module to initialize.
        scheme: one of :data:`qkv.models.config.INIT_SCHEMES`.
        std: standard deviation of the normal schemes.
        n_layers: residual layers for the ``"gpt2"`` scaling.

    Raises:
        ValueError: an unknown scheme.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
    if all(p.is_meta for p in model.parameters()):
        return  # meta tensors hold no values (a model built only to be measured)
    done = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for m in model.modules():
        if isinstance(m, MultiHeadAttention) and m.packed and scheme == "xavier":
            # Xavier per projection, as if W_q, W_k, W_v were separate (the stacked
            # qkv_proj's fan-out would otherwise shrink the bound by sqrt(2))
            for which in ("q", "k", "v"):
                nn.init.xavier_uniform_(m.projection(which)[0])
            done.add(id(m.qkv_proj.weight))
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            if id(m.weight) not in done:
                if scheme == "xavier":
                    nn.init.xavier_uniform_(m.weight)
                elif scheme == "t5":
                    nn.init.normal_(m.weight, mean=0.0, std=_t5_linear_std(model, m))
                else:
                    nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            s = {"xavier": m.embedding_dim**-0.5, "t5": 1.0}.get(scheme, std)
            nn.init.normal_(m.weight, mean=0.0, std=s)
            if m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
        elif isinstance(m, (nn.LayerNorm, RMSNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    if scheme == "t5":
        _t5_attention(model)
    if scheme == "gpt2":
        scaled = std / math.sqrt(2 * n_layers)
        for name, p in model.named_parameters():
            if name.endswith(("out_proj.weight", "fc2.weight")):
                nn.init.normal_(p, mean=0.0, std=scaled)


def _t5_linear_std(model: nn.Module, linear: nn.Module) -> float:
    """T5's standard deviation of a linear weight: ``1/sqrt(fan_in)``; 1 for an output head
    (an untied one: a tied head was initialized as its embedding)."""
    head = getattr(model, "lm_head", None)
    return 1.0 if linear is head else linear.weight.shape[1] ** -0.5


@torch.no_grad()
def _t5_attention(model: nn.Module) -> None:
    """The T5 rules of attention: queries ``N(0, 1/(d * d_h))`` (the rows of a stacked
    ``qkv_proj``), the relative bias ``N(0, 1/d)`` (``d``: the queries' input width)."""
    attention = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    for m in attention:
        weight = m.projection("q")[0]  # (h * d_h, d): a view of qkv_proj when packed
        nn.init.normal_(weight, mean=0.0, std=(weight.shape[1] * m.head_dim) ** -0.5)
    d = attention[0].projection("q")[0].shape[1] if attention else 1
    for m in model.modules():
        if isinstance(m, RelativeBias):
            nn.init.normal_(m.relative_attention_bias.weight, mean=0.0, std=d**-0.5)
