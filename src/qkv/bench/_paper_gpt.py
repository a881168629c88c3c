"""A GPT-2 written directly from its papers, shaped like nanoGPT: the baseline a user who
writes their own small GPT would compare qkv with (``qkv bench train``'s ``nanogpt`` row).

What the papers specify, and nothing else:

* Radford et al. 2018 ("Improving Language Understanding by Generative Pre-Training",
  sec. 3.1 and 4.1): a decoder-only Transformer over token plus learned position
  embeddings, masked (causal) multi-head self-attention, a position-wise feed-forward of
  width ``4 d`` with GELU, and an output projection tied to the token embedding, followed
  by a softmax; weights initialized from ``N(0, 0.02^2)``.
* Radford et al. 2019 ("Language Models are Unsupervised Multitask Learners", sec. 2.3):
  layer normalization moved to the input of each sub-block, one more after the last block,
  and the residual projections' initial weights scaled by ``1/sqrt(N)``, ``N`` the number of
  residual layers (two per block).

Shaped like nanoGPT: one ``(d, 3 d)`` projection for queries, keys and values per block,
``F.scaled_dot_product_attention(is_causal=True)``, the tanh approximation of GELU that
GPT-2 uses, biases everywhere, no dropout (the benchmark trains without it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Block(nn.Module):
    """``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, d: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln_1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.fc_in = nn.Linear(d, d_ff)
        self.fc_out = nn.Linear(d_ff, d)

    def _attend(self, x: Tensor) -> Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        # (b, s, d) -> (b, h, s, d_h)
        q, k, v = (t.view(b, s, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (b, h, s, d_h)
        return self.attn_out(y.transpose(1, 2).reshape(b, s, d))  # (b, s, d)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self._attend(self.ln_1(x))
        return x + self.fc_out(F.gelu(self.fc_in(self.ln_2(x)), approximate="tanh"))


class PaperGPT(nn.Module):
    """GPT-2 from Radford et al. 2018/2019 (see the module docstring).

    Args:
        vocab_size: tokens.
        max_len: positions.
        d_model: width ``d``.
        n_heads: heads (dividing ``d``).
        n_layers: blocks.
        d_ff: feed-forward width (the papers: ``4 d``).
    """

    def __init__(
        self, vocab_size: int, max_len: int, d_model: int, n_heads: int, n_layers: int, d_ff: int
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied (2018, sec. 3.1: W_e^T in the softmax)
        residual_std = 0.02 / math.sqrt(2 * n_layers)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.ndim == 2:
                last = name.endswith(("attn_out.weight", "fc_out.weight"))
                nn.init.normal_(p, std=residual_std if last else 0.02)

    def forward(self, ids: Tensor) -> Tensor:
        """``(b, s)`` token ids -> ``(b, s, vocab)`` logits."""
        s = ids.shape[1]
        x = self.tok(ids) + self.pos(torch.arange(s, device=ids.device))  # (b, s, d)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (b, s, vocab)
