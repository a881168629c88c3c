"""XLNet (Yang et al. 2019): a permutation language model with two-stream attention.

Each layer carries two streams over the same positions:

* the content stream ``h`` (eq. 4, top): position ``i`` attends to the positions before it
  in the factorization order *and to itself*: it represents token ``x_i``;
* the query stream ``g`` (eq. 4, bottom): position ``i`` attends to the positions before it
  but *not to itself*; it starts from a learned ``mask_emb``, knows only position ``i``,
  and predicts ``x_i``.

Both use Transformer-XL's relative attention (:class:`~qkv.pos.XLRelativeScore`) with one
more term, a segment bias (sec. 2.5): ``(q_i + b_s) . s_ij`` with ``s_ij`` one of two
learned vectors for "same segment" and "different segment". Keys and values always come
from the content stream. Layers are post-norm; the language-model head (tied to the word
embedding, with a bias) reads the query stream when targets are given, else the content
stream.

A factorization order is a mask, not a reordering of the input (sec. 2.3):
``factorization_mask[b, i, j]`` is True when position ``i`` may see position ``j`` (the
query stream; the content stream also sees itself). :func:`permutation_targets` draws a
random order and chooses the last tokens of it as the prediction targets (partial
prediction, sec. 2.3: the others are context, which sees the whole context). ``transformers``'
``perm_mask`` is the negation of ``factorization_mask`` (1 = may *not* attend).

Differences from ``transformers``' ``XLNetLMHeadModel``: no memory (``mems``), no
``bi_data`` or ``clamp_len``; a query row that may attend to nothing gives zeros (qkv's
convention) where ``transformers`` averages every position.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.attn.functional import attention
from qkv.attn.mha import MultiHeadAttention
from qkv.layers.dropout import dropout
from qkv.layers.feedforward import FeedForward
from qkv.layers.head import OutputHead
from qkv.layers.norms import make_norm
from qkv.models.base import TransformerModel
from qkv.models.init import init_weights
from qkv.models.stack import LayerStack
from qkv.models.xlnet.config import XLNetConfig
from qkv.pos.xl import XLRelativeScore


class TwoStreamAttention(MultiHeadAttention):
    """XLNet's relative attention for the content and query streams (see the module).

    :class:`~qkv.attn.MultiHeadAttention`'s projections without biases (``qkv_proj``,
    ``out_proj``), plus the relative score ``rel`` (``r_proj``, ``u`` = ``r_w_bias``,
    ``v`` = ``r_r_bias``), the segment bias ``seg_bias`` (``r_s_bias``) and the two
    segment vectors ``seg_embed``.

    Args:
        d_model: model width.
        n_heads: heads.
        head_dim: ``d_h`` (default ``d_model // n_heads``).
        dropout: dropout on the attention weights.
    """

    def __init__(
        self, d_model: int, n_heads: int, *, head_dim: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__(d_model, n_heads, head_dim=head_dim, bias=False, dropout=dropout)
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.rel = XLRelativeScore(d_model, n_heads, self.head_dim)
        self.seg_bias = nn.Parameter(torch.zeros(n_heads, self.head_dim))
        self.seg_embed = nn.Parameter(torch.zeros(2, n_heads, self.head_dim))

    def _score(self, other_segment: Tensor | None) -> Callable[[Tensor, Tensor], Tensor]:
        """The score function: relative score plus, given ``other_segment`` ``(b, s, s)``
        (True where query and key lie in different segments), the segment term."""

        def score(q: Tensor, k: Tensor) -> Tensor:
            s = self.rel(q, k)  # (b, h, s_q, s_k)
            if other_segment is None:
                return s
            seg = (q + self.seg_bias[:, None, :]) @ self.seg_embed.permute(
                1, 2, 0
            )  # (b, h, s_q, 2)
            return s + torch.where(other_segment[:, None], seg[..., 1:], seg[..., :1])

        return score

    def stream(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        allowed: Tensor | None,
        score: Callable[[Tensor, Tensor], Tensor],
    ) -> Tensor:
        """Attention of projected queries ``(b, h, s, d_h)`` to the content keys/values,
        back to ``(b, s, d_model)``."""
        drop = self.dropout if self.training else 0.0
        out = attention(q, k, v, allowed, score=score, scale=self.scale, dropout_p=drop)
        b, _, s, _ = q.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, s, self.q_width))  # type: ignore[union-attr]

    def two_streams(
        self,
        h: Tensor,
        g: Tensor | None,
        *,
        allowed_h: Tensor | None,
        allowed_g: Tensor | None,
        other_segment: Tensor | None = None,
        target_mapping: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Both streams' attention outputs (before the residual and norm).

        Args:
            h: ``(b, s, d)`` content stream.
            g: ``(b, p, d)`` query stream (``p`` targets with ``target_mapping``, else
                ``s``), or None.
            allowed_h, allowed_g: ``(b, 1, s, s)`` bool masks, True = may attend, or None.
            other_segment: ``(b, s, s)`` bool, True where query and key segments differ.
            target_mapping: ``(b, p, s)`` one-hot rows: target ``t`` sits at position ``j``
                where ``target_mapping[b, t, j] = 1``.

        Returns:
            ``(out_h (b, s, d), out_g (b, p, d) or None)``.
        """
        q, k, v = self._project_self(h)  # (b, h, s, d_h) each
        score = self._score(other_segment)
        out_h = self.stream(q, k, v, allowed_h, score)
        if g is None:
            return out_h, None
        q_g = self._heads(self._proj(g, "q"), self.n_heads)  # (b, h, p, d_h)
        if target_mapping is not None:  # targets to their positions, and back
            q_g = torch.einsum("bhpd,bps->bhsd", q_g, target_mapping.to(q_g.dtype))
            drop = self.dropout if self.training else 0.0
            att = attention(q_g, k, v, allowed_g, score=score, scale=self.scale, dropout_p=drop)
            att = torch.einsum("bhsd,bps->bhpd", att, target_mapping.to(att.dtype))  # type: ignore[arg-type]
            b, _, p, _ = att.shape
            return out_h, self.out_proj(att.transpose(1, 2).reshape(b, p, self.q_width))
        return out_h, self.stream(q_g, k, v, allowed_g, score)


class XLNetLayer(nn.Module):
    """Two-stream attention, then the feed-forward network, each post-norm, applied to both
    streams with the same weights (Yang et al. 2019)."""

    def __init__(self, cfg: XLNetConfig) -> None:
        super().__init__()
        self.self_attn = TwoStreamAttention(
            cfg.d_model, cfg.n_heads, head_dim=cfg.head_dim, dropout=cfg.attn_dropout
        )
        self.self_attn_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation, cfg.ff_dropout, bias=True)
        self.ff_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def _post(self, x: Tensor, out: Tensor, norm: nn.Module) -> Tensor:
        return norm(x + dropout(self.dropout, out))  # type: ignore[no-any-return]

    def forward(
        self, h: Tensor, g: Tensor | None, **kw: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """``(h, g) -> (h', g')``; ``kw`` are :meth:`TwoStreamAttention.two_streams`'s."""
        a_h, a_g = self.self_attn.two_streams(h, g, **kw)
        h = self._post(h, a_h, self.self_attn_norm)
        h = self._post(h, self.ff(h), self.ff_norm)
        if g is not None:
            assert a_g is not None
            g = self._post(g, a_g, self.self_attn_norm)
            g = self._post(g, self.ff(g), self.ff_norm)
        return h, g


class XLNetLM(TransformerModel):
    """XLNet with its language-model head (``XLNetLMHeadModel``).

    Modules: ``tok_emb``, ``mask_emb`` (the query stream's start), ``encoder`` (a
    :class:`~qkv.models.stack.LayerStack` of :class:`XLNetLayer` s), ``lm_head`` (tied to
    ``tok_emb``, with a bias).

    Args:
        config: an :class:`~qkv.models.config.XLNetConfig`.
    """

    config: XLNetConfig

    def __init__(self, config: XLNetConfig) -> None:
        if not isinstance(config, XLNetConfig):
            raise TypeError(f"XLNetLM needs an XLNetConfig, got {type(config).__name__}")
        super().__init__(config)
        cfg = config
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_token_id)
        self.mask_emb = nn.Parameter(torch.zeros(cfg.d_model))
        self.encoder = LayerStack([XLNetLayer(cfg) for _ in range(cfg.n_layers)])
        self.dropout = nn.Dropout(cfg.dropout)
        self.lm_head = OutputHead(cfg.d_model, cfg.vocab_size, bias=True)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        init_weights(self, cfg.init, std=cfg.init_std, n_layers=cfg.n_layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(("rel.u", "rel.v", "seg_bias", "seg_embed", "mask_emb")):
                    p.normal_(0.0, cfg.init_std)  # as transformers' XLNet initializes them

    def masks(
        self,
        s: int,
        *,
        padding_mask: Tensor | None = None,
        factorization_mask: Tensor | None = None,
        device: torch.device | None = None,
    ) -> tuple[Tensor | None, Tensor | None]:
        """``(allowed_h, allowed_g)``, ``(b | 1, 1, s, s)`` bool (True = may attend), or
        None for "everything": the factorization order, padding and, for
        ``attn_type="uni"``, causality; the content stream also sees itself."""
        allowed = None
        if self.config.attn_type == "uni":
            # causal, the diagonal included for both streams (as transformers' create_mask)
            allowed = torch.ones(s, s, dtype=torch.bool, device=device).tril()[None, None]
        if factorization_mask is not None:
            fm = factorization_mask[:, None]  # (b, 1, s, s)
            allowed = fm if allowed is None else allowed & fm
        if padding_mask is not None:
            pm = padding_mask[:, None, None, :]  # (b, 1, 1, s)
            allowed = pm if allowed is None else allowed & pm
        if allowed is None:
            return None, None
        eye = torch.eye(s, dtype=torch.bool, device=allowed.device)
        return allowed | eye, allowed.expand(-1, -1, s, s)

    def forward(
        self,
        input_ids: Tensor,
        *,
        padding_mask: Tensor | None = None,
        factorization_mask: Tensor | None = None,
        target_mapping: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Logits of the targets (query stream), or of every position (content stream).

        Args:
            input_ids: ``(b, s)``.
            padding_mask: ``(b, s)`` bool, True = real token.
            factorization_mask: ``(b, s, s)`` bool, True = position ``i`` may see ``j``
                (see the module); None = every position sees every other.
            target_mapping: ``(b, p, s)`` float one-hot: the ``p`` targets to predict
                (partial prediction); None = no query stream.
            token_type_ids: ``(b, s)`` segment ids (only equality matters).

        Returns:
            ``(b, p, vocab)`` with ``target_mapping``, else ``(b, s, vocab)``.
        """
        b, s = input_ids.shape
        allowed_h, allowed_g = self.masks(
            s,
            padding_mask=padding_mask,
            factorization_mask=factorization_mask,
            device=input_ids.device,
        )
        h = self.dropout(self.tok_emb(input_ids))  # (b, s, d)
        g = None
        if target_mapping is not None:
            p = target_mapping.shape[1]
            g = self.dropout(self.mask_emb.expand(b, p, -1))  # (b, p, d)
        other = None
        if token_type_ids is not None:
            other = token_type_ids[:, :, None] != token_type_ids[:, None, :]  # (b, s, s)
        for layer in self.encoder.layers:
            h, g = layer(
                h,
                g,
                allowed_h=allowed_h,
                allowed_g=allowed_g,
                other_segment=other,
                target_mapping=target_mapping,
            )
        out = self.dropout(g if g is not None else h)
        return self.lm_head(out)  # type: ignore[no-any-return]

    def permutation_loss(
        self,
        input_ids: Tensor,
        *,
        n_predict: int,
        padding_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The permutation language-modelling loss with partial prediction (Yang et al.
        2019, eq. 5): a random factorization order per sequence, the last ``n_predict``
        tokens of it predicted from the query stream.

        Returns:
            Mean cross-entropy over the targets (a scalar).
        """
        perm = permutation_targets(
            input_ids.shape[0],
            input_ids.shape[1],
            n_predict,
            padding_mask=padding_mask,
            generator=generator,
            device=input_ids.device,
        )
        logits = self(
            input_ids,
            padding_mask=padding_mask,
            factorization_mask=perm.factorization_mask,
            target_mapping=perm.target_mapping,
        )
        labels = input_ids.gather(1, perm.targets)  # (b, p)
        labels = labels.masked_fill(~perm.target_valid, -100)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


@dataclass
class PermutationTargets:
    """A factorization order and its prediction targets.

    Attributes:
        factorization_mask: ``(b, s, s)`` bool, True = position ``i`` may see ``j``.
        target_mapping: ``(b, p, s)`` float one-hot rows of the targets.
        targets: ``(b, p)`` long positions of the targets (last in the order last).
        target_valid: ``(b, p)`` bool, False for targets beyond a short row's real tokens.
    """

    factorization_mask: Tensor
    target_mapping: Tensor
    targets: Tensor
    target_valid: Tensor


def permutation_targets(
    batch: int,
    length: int,
    n_predict: int,
    *,
    padding_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> PermutationTargets:
    """Draw a factorization order per row and its last ``n_predict`` tokens as targets
    (Yang et al. 2019, sec. 2.3, partial prediction; the masks of XLNet's ``_local_perm``).

    Context tokens (not targets) see every context token; a target sees the context and
    the targets before it in the order. Padding comes last in every order and is never a
    target or seen.

    Raises:
        ValueError: ``n_predict`` not in ``[1, length]``.
    """
    if (
        isinstance(n_predict, bool)
        or not isinstance(n_predict, int)
        or not 1 <= n_predict <= length
    ):
        raise ValueError(f"n_predict must be an int in [1, {length}], got {n_predict!r}")
    real = (
        torch.ones(batch, length, dtype=torch.bool)
        if padding_mask is None
        else padding_mask.detach().cpu().bool()
    )
    keys = torch.rand(batch, length, generator=generator) + (~real).float() * 2  # pads last
    order = keys.argsort(-1)  # (b, s) positions in factorization order
    rank = order.argsort(-1)  # (b, s) place of each position in the order
    n_real = real.sum(-1, keepdim=True)  # (b, 1)
    is_target = (rank >= n_real - n_predict) & real  # the last n_predict real tokens
    # i sees j when j is context, or j comes earlier in the order; nobody sees padding
    sees = ~is_target[:, None, :] | (rank[:, None, :] < rank[:, :, None])
    sees = sees & real[:, None, :]
    idx = torch.arange(n_predict)[None, :] + (n_real - n_predict).clamp(min=0)  # (b, p)
    targets = order.gather(1, idx.clamp(max=length - 1))
    valid = idx < n_real
    mapping = F.one_hot(targets, length).float() * valid[..., None]
    return PermutationTargets(
        sees.to(device), mapping.to(device), targets.to(device), valid.to(device)
    )


__all__ = [
    "PermutationTargets",
    "TwoStreamAttention",
    "XLNetLM",
    "XLNetLayer",
    "permutation_targets",
]
