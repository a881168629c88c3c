"""Capture attention weights from any backend, returned as a record.

Inside :func:`record_attention`, every :class:`~qkv.attn.MultiHeadAttention` of a model
hands its :class:`~qkv.attn.Problem` (queries, keys, mask, scale after projection and
rotary embeddings) to a recorder just before running its backend. The recorder computes
the weights ``softmax(f(q, k) * scale + mask)`` with the math reference and stores them in
an :class:`AttentionRecord`. Nothing is stored on the modules.

Two paths, one result:

* **every head and row of a call** (the default), no dropout: attention is computed once.
  :func:`qkv.attn.weights.weights_and_output` computes the weights a few rows at a time
  and each chunk's output rows ``weights @ V`` from them; the module uses that output
  instead of running its backend (SDPA, flash, block-sparse, ...). It equals the backend's
  output within the numerics contract's tolerance, ``1e-5`` absolute and relative in
  float32, forward and backward (``docs/architecture.md``); it is no longer bit-identical
  to a forward without recording. Storing the weights in a compact ``dtype`` does not
  change it: the output comes from the float32 weights before they are rounded.
* **a selection of heads or rows**, attention dropout in training, a custom score
  function, or a module asked for its weights (``return_weights``): only the selected
  weights are computed (:func:`selected_weights`, :func:`qkv.attn.attention_weights`),
  beside the backend, which computes the output as without recording (bit-identical).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn

from qkv.attn import _record
from qkv.attn.functional import Problem, attention_weights, dense_mask
from qkv.attn.mha import MultiHeadAttention
from qkv.attn.weights import weights_and_output, zeroed
from qkv.masks import Causal
from qkv.models.naming import KINDS, Kind, attention_modules, layer_index, layer_kind

LayerSelector: TypeAlias = int | str


@dataclass(frozen=True)
class AttentionEntry:
    """The weights one attention module produced in one call.

    Attributes:
        name: module path in the model, e.g. ``"decoder.layers.1.cross_attn"``.
        kind: ``"encoder_self"``, ``"decoder_self"`` or ``"cross"``.
        layer_index: ``N`` of ``layers.N`` in the path (0 when there is none).
        weights: ``(b, len(heads), len(rows), s_k)`` attention weights (pre-dropout,
            detached); ``weights[:, i, r]`` is head ``heads[i]`` at query row ``rows[r]``.
        heads: the module's head indices held along dim 1.
        rows: the query rows of this call held along dim 2 (non-negative).
        s_q: query length of the call (all rows, also those not recorded).
        call: 0 for the module's first call inside the context, 1 for the second, ...
    """

    name: str
    kind: Kind
    layer_index: int
    weights: Tensor
    heads: tuple[int, ...]
    rows: tuple[int, ...]
    s_q: int
    call: int = 0

    @property
    def s_k(self) -> int:
        """Key length."""
        return int(self.weights.shape[-1])

    @property
    def key_offset(self) -> int:
        """Position of query row 0 among the keys: ``s_k - s_q`` for self-attention (so
        decoding with a KV cache aligns new queries to the end), 0 for cross-attention."""
        return self.s_k - self.s_q if self.kind != "cross" else 0

    def head(self, head: int, batch: int = 0) -> Tensor:
        """``(len(rows), s_k)`` weights of module head ``head`` for batch row ``batch``.

        Raises:
            ValueError: a head that was not recorded, or a batch row out of range.
        """
        if head not in self.heads:
            raise ValueError(
                f"head ({head}) was not recorded for {self.name!r}; heads {self.heads}"
            )
        if not 0 <= batch < self.weights.shape[0]:
            raise ValueError(f"batch ({batch}) out of range [0, {self.weights.shape[0]})")
        return self.weights[batch, self.heads.index(head)]


class AttentionRecord(Mapping[str, AttentionEntry]):
    """Attention weights per module, filled while :func:`record_attention` is active.

    A mapping from module name to the :class:`AttentionEntry` of its **latest** call, in
    the order modules first ran. A module that ran several times inside the context (e.g.
    once per generated token with a KV cache) keeps every call in :meth:`calls`.
    """

    def __init__(self) -> None:
        self._calls: dict[str, list[AttentionEntry]] = {}

    def __getitem__(self, name: str) -> AttentionEntry:
        if name not in self._calls:
            raise KeyError(f"no attention recorded for {name!r}; recorded: {list(self._calls)}")
        return self._calls[name][-1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._calls)

    def __len__(self) -> int:
        return len(self._calls)

    def __repr__(self) -> str:
        parts = [f"{n}: {tuple(e.weights.shape)}" for n, e in self.items()]
        return f"AttentionRecord({', '.join(parts)})"

    def add(self, entry: AttentionEntry) -> None:
        """Append an entry (used by the recorder; ``entry.call`` is renumbered)."""
        calls = self._calls.setdefault(entry.name, [])
        calls.append(dataclasses.replace(entry, call=len(calls)))

    def calls(self, name: str) -> list[AttentionEntry]:
        """Every recorded call of module ``name``, in order.

        Raises:
            KeyError: a module that did not run inside the context.
        """
        if name not in self._calls:
            raise KeyError(f"no attention recorded for {name!r}; recorded: {list(self._calls)}")
        return list(self._calls[name])

    @property
    def kinds(self) -> tuple[Kind, ...]:
        """The kinds present, in the order ``encoder_self, decoder_self, cross``."""
        present = {e.kind for e in self.values()}
        return tuple(k for k in KINDS if k in present)  # type: ignore[misc]

    def by_kind(self, kind: Kind) -> list[AttentionEntry]:
        """The entries of one kind, sorted by layer index.

        Raises:
            ValueError: an unknown kind.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return sorted((e for e in self.values() if e.kind == kind), key=lambda e: e.layer_index)

    def stack(self, kind: Kind) -> Tensor:
        """The weights of every layer of one kind, ``(layers, b, h, s_q, s_k)``.

        Raises:
            ValueError: no entries of that kind, or layers with different shapes (e.g.
                different head or row selections).
        """
        entries = self.by_kind(kind)
        if not entries:
            raise ValueError(f"no {kind!r} attention recorded; recorded kinds: {self.kinds}")
        shapes = {tuple(e.weights.shape) for e in entries}
        if len(shapes) > 1:
            raise ValueError(f"cannot stack {kind!r} layers of different shapes {sorted(shapes)}")
        return torch.stack([e.weights for e in entries])  # (layers, b, h, s_q, s_k)


# ---------------------------------------------------------------------------------------
# naming
# ---------------------------------------------------------------------------------------
def token_sides(kind: Kind, has_target: bool) -> tuple[str, str]:
    """Which token sequence the queries and the keys of a kind index: ``"input"`` (the
    encoder's, or a decoder-only model's) or ``"target"`` (the decoder's input of an
    encoder-decoder).

    Raises:
        ValueError: an unknown kind, or cross-attention without target tokens.
    """
    if kind == "encoder_self":
        return "input", "input"
    if kind == "decoder_self":
        return ("target", "target") if has_target else ("input", "input")
    if kind != "cross":
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not has_target:
        raise ValueError("cross-attention was recorded: pass target_tokens (the decoder's input)")
    return "target", "input"


def select_modules(
    model: nn.Module, layers: Iterable[LayerSelector] | None
) -> dict[str, MultiHeadAttention]:
    """Resolve a ``layers=`` selection to attention modules.

    Args:
        model: the model.
        layers: None (all), or ints (layer index ``N``, in every stack), module names, or
            kinds (``"encoder_self"``, ``"decoder_self"``, ``"cross"``).

    Raises:
        ValueError: a model without attention modules, or a selector that matches nothing
            (the available names are listed).
    """
    mods = attention_modules(model)
    if not mods:
        raise ValueError(f"model ({type(model).__name__}) has no qkv MultiHeadAttention modules")
    if layers is None:
        return mods
    if isinstance(layers, (int, str)):
        layers = [layers]
    chosen: dict[str, MultiHeadAttention] = {}
    for sel in layers:
        if isinstance(sel, bool) or not isinstance(sel, (int, str)):
            raise TypeError(f"layers entries must be ints or strings, got {sel!r}")
        if isinstance(sel, int):
            hit = [n for n in mods if layer_index(n) == sel]
        elif sel in KINDS:
            hit = [n for n in mods if layer_kind(n) == sel]
        else:
            hit = [sel] if sel in mods else []
        if not hit:
            indices = sorted({layer_index(n) for n in mods})
            raise ValueError(
                f"layers entry {sel!r} matches no attention module; use a layer index in "
                f"{indices}, a kind in {KINDS} or a name in {list(mods)}"
            )
        for n in hit:
            chosen[n] = mods[n]
    return {n: m for n, m in mods.items() if n in chosen}  # model order


# ---------------------------------------------------------------------------------------
# the recorder
# ---------------------------------------------------------------------------------------
def _check_indices(name: str, values: Sequence[int] | None) -> tuple[int, ...] | None:
    if values is None:
        return None
    if isinstance(values, int):
        values = [values]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be ints, got {v!r}")
        out.append(int(v))
    if not out:
        raise ValueError(f"{name} must not be empty; pass None for all")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has duplicates: {out}")
    return tuple(out)


def _resolve_rows(rows: tuple[int, ...] | None, s_q: int, name: str) -> tuple[int, ...]:
    if rows is None:
        return tuple(range(s_q))
    bad = [r for r in rows if not -s_q <= r < s_q]
    if bad:
        raise ValueError(f"rows {bad} out of range for {name!r} with s_q={s_q}")
    return tuple(r % s_q for r in rows)


def _to_4d(m: Tensor) -> Tensor:
    while m.ndim < 4:
        m = m[None]
    return m


def selected_weights(
    p: Problem,
    heads: Sequence[int],
    rows: Sequence[int],
    out: Tensor | None = None,
    *,
    out_zeroed: bool = False,
) -> Tensor:
    """Weights ``(b, len(heads), len(rows), s_k)`` of a problem, computing only those
    (written into ``out`` when given, ``out_zeroed`` when it holds zeros already: see
    :func:`qkv.attn.attention_weights`).

    Queries (and, for grouped heads, the keys of the selected heads' groups) are sliced
    before the scores, so memory is ``O(b * len(heads) * len(rows) * s_k)``; a causal
    mask stays causal (all rows) or gives only the selected rows' masks. A custom
    score function may mix positions, so for those the full weights are computed and
    then sliced.

    Raises:
        ValueError: a problem that is not ``(b, h, s, d)``.
    """
    if p.q.ndim != 4:
        raise ValueError(f"expected (b, h, s_q, d_h) queries, got {tuple(p.q.shape)}")
    h, s_q = p.q.shape[1], p.q.shape[2]
    all_heads, all_rows = list(heads) == list(range(h)), list(rows) == list(range(s_q))
    if all_heads and all_rows:
        return attention_weights(p, out, out_zeroed=out_zeroed)  # (b, h, s_q, s_k)
    if p.score != "dot":
        w = attention_weights(p)[:, list(heads)][:, :, list(rows)]
        return w if out is None else out.copy_(w)
    hi = torch.tensor(list(heads), device=p.q.device)
    ri = torch.tensor(list(rows), device=p.q.device)
    q = p.q.index_select(1, hi).index_select(2, ri)  # (b, h', r, d_h)
    k, v = p.k, p.v
    if k.ndim == 4 and k.shape[1] > 1:
        kv_index = hi // p.groups  # query head i reads kv head i // groups
        k, v = k.index_select(1, kv_index), v.index_select(1, kv_index)  # (b, h', s_k, d_h)
    mask: Tensor | Causal | None
    if isinstance(p.mask, Causal) and all_rows:
        mask = p.mask  # heads only: the causal shortcut (half the keys) still applies
    elif isinstance(p.mask, Causal):
        # the selected rows of the causal mask, without building the (s_q, s_k) square
        off = p.mask.key_offset(s_q, p.s_k)
        kj = torch.arange(p.s_k, device=p.q.device)
        mask = (kj[None, :] <= ri[:, None] + off)[None, None]  # (1, 1, r, s_k)
    else:
        mask = dense_mask(p)
        if mask is not None:
            mask = _to_4d(mask)  # (b | 1, h | 1, s_q | 1, s_k)
            if mask.shape[1] > 1:
                mask = mask.index_select(1, hi)
            if mask.shape[2] > 1:
                mask = mask.index_select(2, ri)
    sub = dataclasses.replace(p, q=q, k=k, v=v, mask=mask, groups=1, return_weights=True)
    return attention_weights(sub, out, out_zeroed=out_zeroed)  # (b, h', r, s_k)


def _one_pass(p: Problem, heads: Sequence[int], rows: Sequence[int]) -> bool:
    """Whether the recorder computes a call's output with its weights
    (:func:`qkv.attn.weights.weights_and_output`) instead of letting the module run its
    backend beside them: every head and row recorded, a dot-product score, no dropout
    (the weights are recorded pre-dropout, and the output needs the dropped ones), and no
    weights asked of the module itself."""
    if p.q.ndim != 4 or p.score != "dot" or p.dropout_p > 0 or p.return_weights:
        return False
    h, s_q = p.q.shape[1], p.q.shape[2]
    return tuple(heads) == tuple(range(h)) and tuple(rows) == tuple(range(s_q))


@contextmanager
def record_attention(
    model: nn.Module,
    layers: Iterable[LayerSelector] | LayerSelector | None = None,
    heads: Sequence[int] | int | None = None,
    rows: Sequence[int] | int | None = None,
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    on_entry: Callable[[AttentionEntry], None] | None = None,
) -> Iterator[AttentionRecord]:
    """Record the attention weights of a qkv model while it runs.

    >>> with record_attention(model, layers=[0], heads=[1, 3], rows=[-1]) as rec:
    ...     logits = model(ids)
    >>> rec["decoder.layers.0.self_attn"].weights.shape  # (b, 2, 1, s_k)

    The weights are ``softmax(f(Q, K) * scale + M)`` of each selected module (Vaswani et al.
    2017, eq. 1), computed by the math reference from the very queries, keys and mask the
    backend receives, so they equal the math backend's weights whatever backend the
    module has. They are pre-dropout and detached.

    Outputs: when a call is recorded with every head and row and without dropout, its
    output is computed from the recorded weights (``weights @ V``, attention computed once)
    instead of by the module's backend: it equals the backend's within ``1e-5`` (absolute
    and relative, float32), the numerics contract's tolerance, forward and backward, but
    not bit for bit. Selections of heads or rows, and attention dropout in training, keep
    the backend's output bit-identical (see the module docstring).

    Storage: **bfloat16 by default**, half float32's bytes: each weight rounded to 8
    significant bits (relative error at most ``2^-8``, 0.4%; the dtype keeps float32's
    range, so no weight underflows), enough for every plot, statistic and rollout of
    :mod:`qkv.interp`, which compute in float32. The outputs do not depend on it (they
    come from the weights before rounding). Pass ``dtype=None`` to keep the weights in
    the queries' own dtype (float32 or float64: the math reference's weights bit for bit),
    or any floating dtype.

    Memory: one ``(b, len(heads), len(rows), s_k)`` tensor per selected module and call
    (all heads and rows by default: ``2 * b * h * s_q * s_k`` bytes per layer in bfloat16);
    the scores are computed a few rows at a time (a causal layer only below the diagonal,
    the rest of its memory left untouched), so nothing else of that size is held. Select
    heads and rows to record long inputs or, when each layer is looked at and dropped
    (statistics, a plot per layer), pass ``on_entry``: the record then keeps nothing and
    every module writes into one reused buffer, so the memory is one layer's and fresh
    pages are touched once (on a CPU, first-touching new memory costs about as much as
    computing the weights: ``docs/performance.md``; bfloat16 halves it, which is what
    keeps a full record within 1.5x of a plain forward at 4096 tokens).

    Recorders nest: an enclosing ``record_attention`` still sees every call.

    Args:
        model: a module containing :class:`~qkv.attn.MultiHeadAttention` modules.
        layers: None (all), or ints (layer index ``N`` of ``layers.N``, matched in every
            stack), module names, or kinds (``"encoder_self"``, ``"decoder_self"``,
            ``"cross"``).
        heads: head indices to keep (None = all); each must exist in every selected module.
        rows: query rows to keep (None = all); negative rows count from the end (``-1`` =
            the last query, e.g. the token being predicted).
        dtype: the floating dtype the weights are stored in (bfloat16 by default; None =
            the queries'); they are computed in float32 (or the queries' wider dtype) and
            rounded once, after the output was computed from them.
        on_entry: called with each :class:`AttentionEntry` as soon as its module ran;
            its ``weights`` are a view of a buffer the next module of the same shape
            overwrites (``.clone()`` what must outlive the call). The record stays empty.

    Yields:
        The :class:`AttentionRecord`, filled as the model runs.

    Raises:
        ValueError: selections that match nothing or are out of range (naming the values),
            or a ``dtype`` that is not floating.
    """
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    mods = select_modules(model, [layers] if isinstance(layers, (int, str)) else layers)
    head_sel = _check_indices("heads", heads)  # type: ignore[arg-type]
    row_sel = _check_indices("rows", rows)  # type: ignore[arg-type]
    if head_sel is not None:
        for n, m in mods.items():
            bad = [i for i in head_sel if not 0 <= i < m.n_heads]
            if bad:
                raise ValueError(f"heads {bad} out of range for {n!r} with n_heads={m.n_heads}")
    names = {id(m): n for n, m in mods.items()}
    record = AttentionRecord()
    outer = _record.current()
    buffers: dict[tuple[Any, ...], Tensor] = {}  # on_entry: one per shape, dtype, device
    calls: dict[str, int] = {}  # on_entry: calls of each module so far

    def buffer(p: Problem, n_heads: int, n_rows: int) -> tuple[Tensor | None, bool]:
        """Where a call's weights go, and whether it holds zeros already."""
        if on_entry is None and dtype is None:
            return None, False  # attention_weights allocates in the queries' dtype
        b = torch.broadcast_shapes(p.q.shape[:1], p.k.shape[:1])[0]
        shape = (b, n_heads, n_rows, int(p.k.shape[-2]))  # (b, h', r, s_k)
        key = (shape, dtype or p.q.dtype, p.q.device)
        if on_entry is None:
            # fresh zeros: the keys a causal row cannot see are never touched
            return zeroed(shape, key[1], p.q.device), True
        if key not in buffers:
            buffers[key] = torch.empty(shape, dtype=key[1], device=p.q.device)
        return buffers[key], False

    def recorder(module: nn.Module, problem: Problem, info: dict[str, Any]) -> Tensor | None:
        out = None if outer is None else outer(module, problem, info)
        name = names.get(id(module))
        if name is None:
            return out
        s_q = int(problem.q.shape[-2])
        n_heads = int(problem.q.shape[-3])
        hs = head_sel if head_sel is not None else tuple(range(n_heads))
        rs = _resolve_rows(row_sel, s_q, name)
        buf, zero = buffer(problem, len(hs), len(rs))
        if out is None and _one_pass(problem, hs, rs):
            # every weight of the call: computed once, with the output from them
            out, w = weights_and_output(problem, buf, out_zeroed=zero)
        else:
            with torch.no_grad():
                w = selected_weights(problem, hs, rs, buf, out_zeroed=zero)
        entry = AttentionEntry(
            name=name,
            kind=layer_kind(name, bool(info.get("self_attention", True))),
            layer_index=layer_index(name),
            weights=w.detach(),  # (b, h', r, s_k)
            heads=hs,
            rows=rs,
            s_q=s_q,
        )
        if on_entry is None:
            record.add(entry)
        else:
            calls[name] = calls.get(name, -1) + 1
            on_entry(dataclasses.replace(entry, call=calls[name]))
        return out

    with _record.recording(recorder):
        yield record
