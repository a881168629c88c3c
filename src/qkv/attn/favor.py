"""FAVOR+ (Choromanski et al. 2021, "Rethinking Attention with Performers"): softmax
attention approximated with positive orthogonal random features, in time and memory linear
in the sequence length.

The softmax kernel is an expectation over ``w ~ N(0, I_d)`` (sec. 2.3, lemma 1)::

    exp(q . k) = E_w[ exp(w . q - |q|^2 / 2) exp(w . k - |k|^2 / 2) ],

so with ``m`` draws ``w_1..w_m`` (rows of :func:`orthogonal_gaussian`, orthogonal within
each block of ``d``, sec. 2.4) and the positive features
``phi(x) = exp(W x - |x|^2 / 2) / sqrt(m)`` (:func:`positive_features`)::

    softmax(Q K^T * scale) V  ~  D^-1 phi(Q') (phi(K')^T V),   D = diag(phi(Q') phi(K')^T 1),

with ``Q' = Q sqrt(scale)``, ``K' = K sqrt(scale)`` (the paper's ``d^-1/4`` on each side).
The product is taken right to left, never forming the ``(s_q, s_k)`` matrix
(:func:`linear_attention`). Causal attention (sec. 2.6) uses prefix sums of
``phi(k_j) v_j^T``; here they run chunk by chunk (exact within a chunk, a running state
between chunks), so memory stays ``O(s (m + d) + (s / chunk) m d)``.

:class:`FavorAttention` is :class:`~qkv.attn.MultiHeadAttention` with this in place of
exact attention, its random features a buffer shared by the heads (redraw them with
:meth:`FavorAttention.redraw_features`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from qkv.attn._favor_chunked import FavorChunked
from qkv.attn.functional import MaskLike
from qkv.attn.mha import MultiHeadAttention
from qkv.attn.problem import compute_dtype
from qkv.masks import Causal

#: Added to every feature (the Performer code's ``kernel_epsilon``, there 1e-3 or 1e-4):
#: keeps a key whose features all underflow visible to the normalizer ``D``. Kept small:
#: against the global key stabilizer it is a bias towards uniform attention that grows
#: with ``m`` (with 1e-4 and 200k features, 8% on the kernel's ratios).
FEATURE_EPS: float = 1e-6
#: Queries per chunk of causal linear attention (exact within a chunk, a prefix state
#: between chunks): ``(chunk, chunk)`` scores per chunk against ``m d`` state elements.
#: The products within a chunk cost ``~ 2 chunk m`` per row, those with the states
#: ``~ 2 m d`` whatever the chunk: at ``m = 266``, ``d_h = 64`` a chunk of 64 saves about a
#: fifth of the FLOPs of 128, and smaller ones lose more to small matrix products.
CHUNK: int = 64


def default_features(head_dim: int) -> int:
    """The Performer default number of random features, ``m = round(d log d)``."""
    return max(1, round(head_dim * math.log(max(head_dim, 2))))


def orthogonal_gaussian(
    m: int,
    d: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``m`` random feature directions ``(m, d)``: orthogonal within each block of ``d``
    rows (QR of a Gaussian matrix), each row rescaled to the norm of an independent
    ``N(0, I_d)`` vector so that every row is still marginally Gaussian (Choromanski et al.
    2021, sec. 2.4, "regularized" orthogonal features).

    Args:
        m: number of features.
        d: dimension of the queries and keys.
        generator: CPU random generator (draws are made on the CPU, then moved).
        device, dtype: of the result.

    Raises:
        ValueError: non-positive sizes.
    """
    for name, val in (("m", m), ("d", d)):
        if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    n_blocks = -(-m // d)
    g = torch.randn(n_blocks, d, d, generator=generator, dtype=torch.float64)
    qmat, r = torch.linalg.qr(g)  # (n_blocks, d, d), orthonormal columns
    # signs of R's diagonal on Q's columns: Q is then Haar-distributed (Mezzadri 2007);
    # without it the directions are biased and so is the kernel estimate
    qmat = qmat * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    w = qmat.transpose(-2, -1).reshape(n_blocks * d, d)[:m]  # (m, d), rows orthonormal per block
    norms = torch.randn(m, d, generator=generator, dtype=torch.float64).norm(dim=1)
    return (w * norms[:, None]).to(device=device, dtype=dtype)  # (m, d)


def positive_features(
    x: Tensor, projection: Tensor, *, is_query: bool, valid: Tensor | None = None
) -> Tensor:
    """FAVOR+'s positive random features ``phi(x) = exp(W x - |x|^2 / 2 - c) / sqrt(m)``.

    The constant ``c`` keeps ``exp`` from overflowing and cancels in attention's
    normalization: the row maximum for queries (each row is normalized on its own), the
    maximum over every key and feature for keys (one constant per head, so causal prefix
    sums share it). It carries no gradient.

    Args:
        x: ``(..., s, d)``, already multiplied by ``sqrt(scale)``.
        projection: ``(m, d)`` from :func:`orthogonal_gaussian`.
        is_query: choose the query (row) or key (global) stabilizer.
        valid: ``(..., s)`` bool broadcastable to ``x.shape[:-1]``: rows to keep (padding
            is False); the others get zero features and do not enter the stabilizer.

    Returns:
        ``(..., s, m)`` non-negative features (plus :data:`FEATURE_EPS` on valid rows).
    """
    m = projection.shape[0]
    wx = x @ projection.to(x.dtype).T  # (..., s, m)
    logits = wx - x.square().sum(-1, keepdim=True) / 2
    keep = None if valid is None else valid.unsqueeze(-1)  # (..., s, 1)
    if keep is not None:  # before exp: padded rows give exp(-inf) = 0 and zero gradients
        logits = logits.masked_fill(~keep, float("-inf"))
    if is_query:
        c = logits.amax(dim=-1, keepdim=True)
    elif logits.shape[-2] == 0:
        c = logits.new_zeros(())
    else:
        c = logits.amax(dim=(-1, -2), keepdim=True)
        c = torch.where(torch.isinf(c), torch.zeros_like(c), c)  # every key padded
    phi = (torch.exp(logits - c.detach()) + FEATURE_EPS) / math.sqrt(m)  # (..., s, m)
    return phi if keep is None else phi.masked_fill(~keep, 0.0)


def _nonzero(den: Tensor) -> Tensor:
    """The normalizer with rows that see no key (``den == 0``, numerator 0) divided by 1:
    zeros and zero gradients, never NaN (as :func:`qkv.attn.safe_softmax`)."""
    return torch.where(den > 0, den, torch.ones_like(den))


def linear_attention(
    phi_q: Tensor,
    phi_k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    chunk: int = CHUNK,
) -> Tensor:
    """``D^-1 phi_q (phi_k^T v)`` (Katharopoulos et al. 2020; Choromanski et al. 2021).

    Causal attention is aligned to the end of the keys, as everywhere in qkv: query ``i``
    sees keys ``j <= i + s_k - s_q``. It runs in chunks of ``chunk`` queries: within a
    chunk the ``(chunk, chunk)`` products are masked exactly; earlier chunks enter through
    the prefix sums ``sum_j phi(k_j) v_j^T`` and ``sum_j phi(k_j)``.

    Args:
        phi_q: ``(..., s_q, m)`` non-negative query features.
        phi_k: ``(..., s_k, m)`` non-negative key features (zero rows for keys to ignore).
        v: ``(..., s_k, d_v)`` values.
        causal: causal attention.
        chunk: queries per chunk (causal only).

    Returns:
        ``(..., s_q, d_v)``; rows with no key to attend to give zeros.
    """
    s_q, s_k = phi_q.shape[-2], phi_k.shape[-2]
    if not causal:
        kv = phi_k.transpose(-2, -1) @ v  # (..., m, d_v)
        num = phi_q @ kv  # (..., s_q, d_v)
        den = phi_q @ phi_k.sum(-2).unsqueeze(-1)  # (..., s_q, 1)
        return num / _nonzero(den)
    past = s_k - s_q
    if past < 0:  # the first -past queries see no key: give them zero keys to see
        pad = (0, 0, -past, 0)
        phi_k, v = F.pad(phi_k, pad), F.pad(v, pad)
        past = 0
    # keys before the first query: seen by every query, one non-causal state
    kv0 = phi_k[..., :past, :].transpose(-2, -1) @ v[..., :past, :]  # (..., m, d_v)
    z0 = phi_k[..., :past, :].sum(-2)  # (..., m)
    phi_k, v = phi_k[..., past:, :], v[..., past:, :]  # (..., s_q, .) aligned to the queries
    n = -(-s_q // chunk)
    pad = n * chunk - s_q
    if pad:
        phi_q, phi_k, v = (F.pad(t, (0, 0, 0, pad)) for t in (phi_q, phi_k, v))
    lead = phi_q.shape[:-2]
    qc = phi_q.reshape(*lead, n, chunk, phi_q.shape[-1])  # (..., n, c, m)
    kc = phi_k.reshape(*lead, n, chunk, phi_k.shape[-1])  # (..., n, c, m)
    vc = v.reshape(*lead, n, chunk, v.shape[-1])  # (..., n, c, d_v)
    kv = kc.transpose(-2, -1) @ vc  # (..., n, m, d_v) per chunk
    z = kc.sum(-2)  # (..., n, m)
    state = kv.cumsum(-3) - kv + kv0.unsqueeze(-3)  # (..., n, m, d_v) before each chunk
    zstate = z.cumsum(-2) - z + z0.unsqueeze(-2)  # (..., n, m)
    tril = torch.ones(chunk, chunk, dtype=torch.bool, device=qc.device).tril()
    a = (qc @ kc.transpose(-2, -1)).masked_fill(~tril, 0.0)  # (..., n, c, c)
    num = qc @ state + a @ vc  # (..., n, c, d_v)
    den = (qc @ zstate.unsqueeze(-1)).squeeze(-1) + a.sum(-1)  # (..., n, c)
    out = num / _nonzero(den).unsqueeze(-1)
    return out.reshape(*lead, n * chunk, v.shape[-1])[..., :s_q, :]  # (..., s_q, d_v)


def favor_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor,
    *,
    causal: bool = False,
    padding_mask: Tensor | None = None,
    scale: float | None = None,
    chunk: int = CHUNK,
    reference: bool = False,
) -> Tensor:
    """FAVOR+ approximation of ``softmax(q k^T * scale) v`` (see the module docstring).

    By default it runs chunk by chunk with a hand-written backward
    (:class:`~qkv.attn._favor_chunked.FavorChunked`), in ``O(s d)`` live memory: no
    ``(s, m)`` feature matrix is ever whole. ``reference=True`` (and features that take a
    gradient, or tracing by ``torch.compile``) runs the readable whole-tensor version under
    autograd instead: the correctness oracle, equal within float tolerance.

    Args:
        q: ``(b, h, s_q, d)``.
        k: ``(b, h_kv, s_k, d)``, ``h_kv`` dividing ``h``.
        v: ``(b, h_kv, s_k, d_v)``.
        projection: ``(m, d)`` random features (:func:`orthogonal_gaussian`).
        causal: causal attention (queries aligned to the end of the keys).
        padding_mask: ``(b, s_k)`` bool, True = real key; padded keys get zero features.
        scale: score scale, default ``1/sqrt(d)``.
        chunk: queries (and keys) per chunk.
        reference: run the whole-tensor reference under autograd.

    Returns:
        ``(b, h, s_q, d_v)`` in ``q``'s dtype (computed in float32 for half inputs).

    Raises:
        ValueError: mismatched shapes.
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4 or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"favor_attention needs q (b, h, s_q, d), k (b, h_kv, s_k, d), v (b, h_kv, s_k, d_v), "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if projection.ndim != 2 or projection.shape[1] != q.shape[-1]:
        raise ValueError(f"projection must be (m, d={q.shape[-1]}), got {tuple(projection.shape)}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    groups = q.shape[1] // k.shape[1]
    if groups > 1:  # grouped heads: kv head j serves query heads j*g .. j*g+g-1
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    args = (q, k, v, projection, padding_mask, math.sqrt(scale), causal, chunk)
    if not reference and not projection.requires_grad and not torch.compiler.is_compiling():
        return _favor_lean(*args)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        # the (s, m) features are recomputed in the backward pass instead of kept
        return checkpoint(_favor_core, *args, use_reentrant=False)  # type: ignore[no-any-return]
    return _favor_core(*args)


def _favor_lean(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor,
    padding_mask: Tensor | None,
    root: float,
    causal: bool,
    chunk: int,
) -> Tensor:
    """:func:`_favor_core` in ``O(s d)`` live memory (:class:`FavorChunked`)."""
    ctype = compute_dtype(q.dtype)
    valid = None if padding_mask is None else padding_mask[:, None, :]  # (b, 1, s_k)
    k, v = k.to(ctype), v.to(ctype)
    missing = q.shape[-2] - k.shape[-2] if causal else 0
    if missing > 0:  # more queries than keys: the first ones see none (padded keys)
        k, v = F.pad(k, (0, 0, missing, 0)), F.pad(v, (0, 0, missing, 0))
        if valid is None:
            valid = torch.ones(
                k.shape[0], 1, k.shape[-2] - missing, dtype=torch.bool, device=q.device
            )
        valid = F.pad(valid, (missing, 0), value=False)
    w = projection.to(ctype)
    out = FavorChunked.apply(q.to(ctype), k, v, w, valid, root, causal, chunk, FEATURE_EPS)
    return out.to(q.dtype)  # type: ignore[no-any-return]


def _favor_core(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    projection: Tensor,
    padding_mask: Tensor | None,
    root: float,
    causal: bool,
    chunk: int,
) -> Tensor:
    ctype = compute_dtype(q.dtype)
    w = projection.to(ctype)
    phi_q = positive_features(q.to(ctype) * root, w, is_query=True)  # (b, h, s_q, m)
    valid = None if padding_mask is None else padding_mask[:, None, :]  # (b, 1, s_k)
    phi_k = positive_features(k.to(ctype) * root, w, is_query=False, valid=valid)
    out = linear_attention(phi_q, phi_k, v.to(ctype), causal=causal, chunk=chunk)
    return out.to(q.dtype)  # (b, h, s_q, d_v)


class FavorAttention(MultiHeadAttention):
    """Multi-head attention with FAVOR+ in place of softmax attention (Choromanski et al.
    2021): the same projections as :class:`~qkv.attn.MultiHeadAttention` (so the same
    weights load into either), linear time and memory in the sequence length.

    Causal masking, key padding and a self-attention :class:`~qkv.attn.KVCache` work
    (decoding attends to the cached keys, aligned to their end); any other mask, an
    additive bias (ALiBi, T5), attention weights or weight dropout have no FAVOR+
    counterpart and are refused.

    Args:
        d_model, n_heads: as in :class:`~qkv.attn.MultiHeadAttention`.
        n_features: random features ``m`` (default :func:`default_features` of ``d_h``).
        seed: seed of the first draw of the features (default: torch's global generator).
        chunk: queries per chunk of causal attention.
        **kwargs: the other arguments of :class:`~qkv.attn.MultiHeadAttention` (not
            ``score``, which must stay the dot product).

    Raises:
        ValueError: a non-positive ``n_features`` or ``chunk``, or a custom score.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        n_features: int | None = None,
        seed: int | None = None,
        chunk: int = CHUNK,
        **kwargs: object,
    ) -> None:
        super().__init__(d_model, n_heads, **kwargs)  # type: ignore[arg-type]
        if not isinstance(self.score, str):
            raise ValueError("FavorAttention approximates the dot-product score only")
        m = default_features(self.head_dim) if n_features is None else n_features
        if isinstance(m, bool) or not isinstance(m, int) or m <= 0:
            raise ValueError(f"n_features must be a positive int, got {n_features!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
            raise ValueError(f"chunk must be a positive int, got {chunk!r}")
        self.n_features, self.chunk = m, chunk
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        # persistent: a saved model reloads with the features it was trained with
        self.register_buffer("features", orthogonal_gaussian(m, self.head_dim, generator=gen))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_features={self.n_features}"

    @torch.no_grad()
    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Draw new random features in place (Performers redraw them during training)."""
        new = orthogonal_gaussian(self.n_features, self.head_dim, generator=generator)
        self.features.copy_(new)

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        mask: MaskLike = None,
        padding_mask: Tensor | None = None,
        attn_bias: Tensor | None = None,
        is_causal: bool = False,
        return_weights: bool = False,
        self_attention: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """FAVOR+ of the projected heads (see :meth:`MultiHeadAttention.attend`).

        Raises:
            ValueError: a mask other than :class:`~qkv.masks.Causal` (use ``is_causal``),
                an ``attn_bias`` or ``return_weights``.
        """
        if isinstance(mask, Causal) and mask.offset is None:
            mask, is_causal = None, True
        refused = [
            what
            for what, bad in (
                ("a mask (only is_causal and padding_mask)", mask is not None),
                ("an additive attn_bias (ALiBi, relative positions)", attn_bias is not None),
                ("return_weights (no attention matrix is formed)", return_weights),
            )
            if bad
        ]
        if refused:
            raise ValueError(f"FavorAttention cannot take {', '.join(refused)}")
        b, s_k = k.shape[0], k.shape[2]
        if padding_mask is not None and (
            padding_mask.dtype != torch.bool or tuple(padding_mask.shape) != (b, s_k)
        ):
            raise ValueError(
                f"padding_mask must be a bool (b, s_k) = ({b}, {s_k}) tensor with True = real "
                f"token, got {padding_mask.dtype} {tuple(padding_mask.shape)}"
            )
        out = favor_attention(
            q,
            k,
            v,
            self.features,
            causal=is_causal,
            padding_mask=padding_mask,
            scale=self.scale,
            chunk=self.chunk,
        )
        return out, None


__all__ = [
    "CHUNK",
    "FEATURE_EPS",
    "FavorAttention",
    "default_features",
    "favor_attention",
    "linear_attention",
    "orthogonal_gaussian",
    "positive_features",
]
