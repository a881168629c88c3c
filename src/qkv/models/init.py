"""Weight initialization per model family."""

from __future__ import annotations

import math

import torch
from torch import nn

from qkv.attn.mha import MultiHeadAttention
from qkv.layers.norms import RMSNorm
from qkv.models.config import INIT_SCHEMES, InitScheme


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
                else:
                    nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            s = m.embedding_dim**-0.5 if scheme == "xavier" else std
            nn.init.normal_(m.weight, mean=0.0, std=s)
            if m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
        elif isinstance(m, (nn.LayerNorm, RMSNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    if scheme == "gpt2":
        scaled = std / math.sqrt(2 * n_layers)
        for name, p in model.named_parameters():
            if name.endswith(("out_proj.weight", "fc2.weight")):
                nn.init.normal_(p, mean=0.0, std=scaled)
