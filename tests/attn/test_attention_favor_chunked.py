"""FAVOR+'s memory-lean path (chunked forward, hand-written chunked backward) against the
whole-tensor reference under autograd: forward and every input gradient, exact in float64,
and the peak memory of forward + backward: that of SDPA's fused kernel, not the reference's."""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from qkv.attn import FavorAttention, MultiHeadAttention, _favor_chunked
from qkv.attn._favor_chunked import FavorChunked
from qkv.attn.favor import favor_attention, orthogonal_gaussian


def _run(reference: bool, q: Tensor, k: Tensor, v: Tensor, w: Tensor, **kw) -> list[Tensor]:
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = favor_attention(q, k, v, w, reference=reference, **kw)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * grad).sum().backward()
    return [out.detach(), q.grad, k.grad, v.grad]


CASES = list(
    itertools.product(
        [True, False],  # causal
        [(37, 37), (5, 40), (40, 29), (1, 17), (64, 64)],  # (s_q, s_k): past keys, missing keys
        [False, True],  # padding
        [4, 2],  # key/value heads (grouped-query)
        [8, 16],  # chunk
        [1, 3, None],  # chunks per segment (None: the default, here one segment)
    )
)


@pytest.mark.parametrize(("causal", "lengths", "padded", "h_kv", "chunk", "per_segment"), CASES)
def test_chunked_equals_the_reference_forward_and_backward(
    causal, lengths, padded, h_kv, chunk, per_segment, monkeypatch
):
    s_q, s_k = lengths
    if per_segment is not None:  # rows per segment: SEGMENT_ELEMENTS / (b h m), b h m = 192
        monkeypatch.setattr(_favor_chunked, "SEGMENT_ELEMENTS", per_segment * chunk * 192)
    g = torch.Generator().manual_seed(s_q * 100 + s_k)
    f64 = torch.float64
    q = torch.randn(2, 4, s_q, 16, generator=g, dtype=f64)
    k = torch.randn(2, h_kv, s_k, 16, generator=g, dtype=f64)
    v = torch.randn(2, h_kv, s_k, 12, generator=g, dtype=f64)
    w = orthogonal_gaussian(24, 16, generator=torch.Generator().manual_seed(3), dtype=f64)
    padding_mask = None
    if padded:
        padding_mask = torch.ones(2, s_k, dtype=torch.bool)
        padding_mask[0, -3:] = False
        padding_mask[1, :2] = False
    kw = {"causal": causal, "padding_mask": padding_mask, "chunk": chunk}
    for want, got in zip(_run(True, q, k, v, w, **kw), _run(False, q, k, v, w, **kw), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("past", [0, 3])
def test_gradcheck_of_the_chunked_function(causal, past, monkeypatch):
    """Finite differences against the hand-written backward itself (float64), over several
    segments (some of whose states are not kept) with a short last chunk, keys before the
    first query and padded keys."""
    # b h m = 12: segments of one chunk of 2 rows, six of them: 3 and 5 are not kept
    monkeypatch.setattr(_favor_chunked, "SEGMENT_ELEMENTS", 12 * 2)
    g = torch.Generator().manual_seed(past)
    f64 = torch.float64
    q = torch.randn(1, 2, 11, 4, generator=g, dtype=f64, requires_grad=True)
    k = torch.randn(1, 2, 11 + past, 4, generator=g, dtype=f64, requires_grad=True)
    v = torch.randn(1, 2, 11 + past, 5, generator=g, dtype=f64, requires_grad=True)
    w = orthogonal_gaussian(6, 4, generator=g, dtype=f64)
    valid = torch.ones(1, 1, 11 + past, dtype=torch.bool)
    valid[..., 1] = False

    def run(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        # eps 0: the stabilizers then cancel exactly, so finite differences through them
        # (which the backward, like the reference, treats as constants) see no change
        return FavorChunked.apply(q, k, v, w, valid, 0.7, causal, 2, 0.0)  # type: ignore[no-any-return]

    assert torch.autograd.gradcheck(run, (q, k, v))


def test_every_key_padded_gives_zeros_and_zero_gradients():
    q, k, v = (torch.randn(1, 2, 9, 8, requires_grad=True) for _ in range(3))
    w = orthogonal_gaussian(8, 8, generator=torch.Generator().manual_seed(0))
    out = favor_attention(q, k, v, w, padding_mask=torch.zeros(1, 9, dtype=torch.bool))
    out.sum().backward()
    assert out.abs().max() == 0
    assert all(t.grad is not None and t.grad.abs().max() == 0 for t in (q, k, v))


def test_float32_agrees_with_the_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 300, 32, generator=g) for _ in range(3))
    w = orthogonal_gaussian(64, 32, generator=g)
    for want, got in zip(
        _run(True, q, k, v, w, causal=True), _run(False, q, k, v, w, causal=True), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-5)


class _PeakBytes(TorchDispatchMode):
    """The peak of the bytes held by tensors made inside the mode: every op's output storage
    counts from its creation until it is freed (a finalizer on the storage), so the result
    is exact and the same on every run, whatever else the machine does."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.seen: set[int] = set()

    def _free(self, key: int, n: int) -> None:
        self.live -= n
        self.seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                storage = t.untyped_storage()
                if id(storage) not in self.seen:
                    n = storage.nbytes()
                    self.seen.add(id(storage))
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, id(storage), n)
        return out


def _excess(run: Callable[[Tensor, Tensor, Tensor], Tensor], s: int) -> int:
    """Peak bytes of ``run``'s forward + backward beyond SDPA's on the same inputs."""
    peaks = []
    for fn in (run, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)):
        with _PeakBytes() as mode:
            q, k, v = (torch.randn(1, 1, s, 32, requires_grad=True) for _ in range(3))
            fn(q, k, v).sum().backward()
        peaks.append(mode.peak)
    return peaks[0] - peaks[1]


@pytest.mark.parametrize("causal", [True, False])
def test_peak_memory_beyond_sdpa_grows_only_by_the_kept_states(causal, monkeypatch):
    """SDPA's fused kernel holds O(s d) (inputs, output, gradients); the chunked path holds
    the same plus one segment's blocks, whatever the length, and (causal) the
    ``(m, d + 1)`` states kept for ``log2`` of the segments; the reference's (s, m)
    features grow with the length."""
    rows, m, d = 128, 32, 32
    monkeypatch.setattr(_favor_chunked, "SEGMENT_ELEMENTS", rows * m)  # b h = 1
    w = orthogonal_gaussian(m, d, generator=torch.Generator().manual_seed(0))

    def chunked(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return favor_attention(q, k, v, w, causal=causal, chunk=64)

    def reference(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return favor_attention(q, k, v, w, causal=causal, chunk=64, reference=True)

    short, long = _excess(chunked, 512), _excess(chunked, 2048)
    anchors = len(_favor_chunked._anchors(2048 // rows)) - len(_favor_chunked._anchors(512 // rows))
    kept = anchors * m * (d + 1) * 4 if causal else 0  # the float32 states kept in addition
    ref_short, ref_long = _excess(reference, 512), _excess(reference, 2048)
    assert long - short <= kept + 0.1 * short, (short, long, kept)
    assert ref_long > 3 * ref_short and long < ref_long / 4, (ref_short, ref_long, long)


def _layer_excess(s: int) -> int:
    """Peak bytes of a FAVOR+ layer's forward + backward beyond the same layer on SDPA's
    fused kernel (the same weights, a packed projection): heads split from it are strided
    views of one ``(b, s, 3 d)`` tensor."""
    peaks = []
    torch.manual_seed(0)
    favor = FavorAttention(64, 2, n_features=16, chunk=64, seed=0)
    sdpa = MultiHeadAttention(64, 2, backend="sdpa")
    sdpa.load_state_dict(favor.state_dict(), strict=False)
    for layer in (favor, sdpa):
        x = torch.randn(1, s, 64, requires_grad=True)
        with _PeakBytes() as mode:
            layer(x, is_causal=True).sum().backward()
        peaks.append(mode.peak)
    return peaks[0] - peaks[1]


def test_a_layers_excess_over_sdpa_does_not_grow_with_the_length(monkeypatch):
    """The whole layer (projections, head split and merge, backward into them) beside the
    same layer on SDPA's fused kernel: what FAVOR+ holds beyond it is one segment's blocks
    and the kept states, whatever the length. A ``(s, d)`` copy of the heads (a contiguous
    ``q``, ``k`` or ``v``, a cast) live at the peak, or any ``(s, m)`` features, would grow
    it by at least half an ``(s, d)`` tensor per token."""
    monkeypatch.setattr(_favor_chunked, "SEGMENT_ELEMENTS", 128 * 16 * 2)  # 128 rows
    short, long = _layer_excess(512), _layer_excess(2048)
    per_token = 64 * 4  # one float32 (s, d) tensor, per token
    assert long - short < 0.5 * per_token * (2048 - 512), (short, long)
