"""Sparse mask families: definitions by brute force, block bounds and layouts against a
per-tile reduction of the dense mask, FlexAttention BlockMasks, pictures, and errors."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qkv import masks


def _loop_dense(allowed, s_q: int, s_k: int) -> torch.Tensor:
    """Reference: evaluate ``allowed(p, j)`` for every query (absolute position p) and key."""
    off = s_k - s_q
    return torch.tensor(
        [[bool(allowed(i + off, j)) for j in range(s_k)] for i in range(s_q)], dtype=torch.bool
    ).reshape(s_q, s_k)


def _tile_reduce(dense: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference bounds: per-tile any/all of a dense (b, s_q, s_k) mask, by slicing."""
    b, s_q, s_k = dense.shape
    n_qb, n_kb = -(-s_q // block), -(-s_k // block)
    any_ = torch.zeros(b, n_qb, n_kb, dtype=torch.bool)
    all_ = torch.zeros(b, n_qb, n_kb, dtype=torch.bool)
    for i in range(n_qb):
        for j in range(n_kb):
            t = dense[:, i * block : (i + 1) * block, j * block : (j + 1) * block].flatten(1)
            any_[:, i, j], all_[:, i, j] = t.any(1), t.all(1)
    return any_, all_


def _dense3(mask: masks.Mask, s_q: int, s_k: int) -> torch.Tensor:
    d = mask.to_dense(s_q, s_k)
    return d[:, 0] if d.ndim == 4 else d[None]


SIZES = [(20, 20), (13, 20), (20, 13), (1, 17), (17, 1)]


@pytest.mark.parametrize(("s_q", "s_k"), SIZES)
def test_families_match_their_definitions(s_q, s_k):
    for w in (1, 2, 5, 8):
        got = masks.sliding_window(w, causal=True).to_dense(s_q, s_k)
        assert torch.equal(got, _loop_dense(lambda p, j, w=w: p - w < j <= p, s_q, s_k))
        got = masks.sliding_window(w).to_dense(s_q, s_k)
        assert torch.equal(got, _loop_dense(lambda p, j, w=w: abs(p - j) <= w // 2, s_q, s_k))
        for d in (1, 3):
            got = masks.dilated(w, d).to_dense(s_q, s_k)
            ref = _loop_dense(
                lambda p, j, w=w, d=d: (p - j) % d == 0 and abs(p - j) <= (w // 2) * d, s_q, s_k
            )
            assert torch.equal(got, ref)
            got = masks.dilated(w, d, causal=True).to_dense(s_q, s_k)
            ref = _loop_dense(
                lambda p, j, w=w, d=d: (p - j) % d == 0 and 0 <= p - j < w * d, s_q, s_k
            )
            assert torch.equal(got, ref)
    g = [0, s_k - 1]
    got = masks.global_tokens(g).to_dense(s_q, s_k)
    assert torch.equal(got, _loop_dense(lambda p, j: p in g or j in g, s_q, s_k))
    got = masks.prefix_lm(4).to_dense(s_q, s_k)
    assert torch.equal(got, _loop_dense(lambda p, j: j <= p or j < 4, s_q, s_k))


def test_prefix_lm_and_document_per_batch():
    pre = masks.prefix_lm([0, 3]).to_dense(5, 5)
    assert pre.shape == (2, 1, 5, 5)
    assert torch.equal(pre[0, 0], masks.causal().to_dense(5, 5))
    assert torch.equal(pre[1, 0, 0], torch.tensor([1, 1, 1, 0, 0], dtype=torch.bool))
    ids = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 2, 2, 2]])
    doc = masks.document(ids).to_dense(5, 5)
    assert torch.equal(doc[:, 0], ids[:, :, None] == ids[:, None, :])
    # queries are the last positions when s_q < s_k (a decoding step)
    assert torch.equal(
        masks.document(ids).to_dense(2, 5)[:, 0], ids[:, 3:, None] == ids[:, None, :]
    )
    cross = masks.document([0, 0, 1], q_ids=[1, 0]).to_dense(2, 3)
    assert torch.equal(cross, torch.tensor([[0, 0, 1], [1, 1, 0]], dtype=torch.bool))


def test_random_blocks_rows_and_determinism():
    m = masks.random_blocks(2, block=4, seed=3)
    d = m.to_dense(24, 24)
    tiles = d.view(6, 4, 6, 4)
    # constant on 4x4 tiles, exactly two key tiles per query tile
    assert torch.equal(tiles, tiles[:, :1, :, :1].expand_as(tiles))
    assert tiles[:, 0, :, 0].sum(1).tolist() == [2] * 6
    assert torch.equal(d, masks.random_blocks(2, block=4, seed=3).to_dense(24, 24))
    assert not torch.equal(d, masks.random_blocks(2, block=4, seed=4).to_dense(24, 24))
    # a query tile keeps its keys whatever s_q (rows are drawn per absolute tile)
    assert torch.equal(m.to_dense(8, 24), d[16:])
    assert masks.random_blocks(9, block=4).to_dense(8, 8).all()  # more than n_kb: all tiles


def test_bigbird_layout_properties():
    block, wb, gb, rb = 4, 3, 1, 2
    m = masks.bigbird(block, wb, gb, rb, seed=5)
    n = 10
    lay = m.to_block_layout(n * block, n * block, block)
    assert lay.shape == (n, n)
    assert lay[:gb].all() and lay[:, :gb].all()  # globals see all and are seen by all
    idx = torch.arange(n)
    band = (idx[:, None] - idx[None, :]).abs() <= wb // 2
    assert lay[band].all()  # the window band is there
    for r in range(gb, n):
        in_band = int(band[r].sum()) - int(band[r, :gb].sum())
        assert int(lay[r].sum()) == gb + in_band + rb  # globals + band + random, disjoint
    # tile-constant, and the block layout equals the per-tile reduction of the dense mask
    ref_any, ref_all = _tile_reduce(_dense3(m, n * block, n * block), block)
    assert torch.equal(lay, ref_any[0]) and torch.equal(ref_any, ref_all)
    assert torch.equal(
        m.to_dense(40, 40), masks.bigbird(block, wb, gb, rb, seed=5).to_dense(40, 40)
    )


def _family(kind: str, seed: int, s_k: int, w: int, b: int = 2):
    g = torch.Generator().manual_seed(seed)
    if kind == "window":
        return masks.sliding_window(w)
    if kind == "causal_window":
        return masks.sliding_window(w, causal=True)
    if kind == "dilated":
        return masks.dilated(w, 1 + seed % 3, causal=seed % 2 == 1)
    if kind == "global":
        return masks.global_tokens(torch.randint(0, s_k, (2,), generator=g))
    if kind == "random":
        return masks.random_blocks(1 + seed % 3, block=1 + w % 7, seed=seed)
    if kind == "bigbird":
        return masks.bigbird(1 + w % 5, 1 + 2 * (seed % 2), seed % 2, 1 + seed % 2, seed)
    if kind == "prefix":
        return masks.prefix_lm(torch.randint(0, s_k + 1, (b,), generator=g))
    if kind == "document":
        return masks.document(torch.randint(0, 3, (b, s_k), generator=g).sort(-1).values)
    if kind == "causal":
        return masks.causal()
    if kind == "padding":
        return masks.padding(torch.randint(0, s_k + 1, (b,), generator=g))
    raise AssertionError(kind)


KINDS = ["window", "causal_window", "dilated", "global", "random", "bigbird", "prefix", "document"]


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from([*KINDS, "causal", "padding"]),
    s_q=st.integers(1, 40),
    s_k=st.integers(1, 40),
    block=st.integers(1, 12),
    w=st.integers(1, 12),
    seed=st.integers(0, 100),
)
def test_block_bounds_of_families_are_exact(kind, s_q, s_k, block, w, seed):
    if kind == "document":
        s_q = min(s_q, s_k)  # queries are the last key positions
    m = _family(kind, seed, s_k, w)
    ref_any, ref_all = _tile_reduce(_dense3(m, s_q, s_k), block)
    maybe, full = m.block_bounds(s_q, s_k, block)
    assert torch.equal(maybe.expand_as(ref_any), ref_any)
    assert torch.equal(full.expand_as(ref_all), ref_all)


@settings(max_examples=60, deadline=None)
@given(
    a=st.sampled_from(KINDS),
    op=st.sampled_from(["&", "|", "~&"]),
    extra=st.sampled_from(["causal", "padding"]),
    s=st.integers(1, 40),
    block=st.integers(1, 12),
    w=st.integers(1, 12),
    seed=st.integers(0, 100),
)
def test_compositions_have_sound_bounds_and_exact_layouts(a, op, extra, s, block, w, seed):
    m1, m2 = _family(a, seed, s, w), _family(extra, seed + 1, s, w)
    m = m1 & m2 if op == "&" else (m1 | m2 if op == "|" else ~m1 & m2)
    dense = _dense3(m, s, s)
    d1, d2 = _dense3(m1, s, s), _dense3(m2, s, s)
    expect = d1 & d2 if op == "&" else (d1 | d2 if op == "|" else ~d1 & d2)
    assert torch.equal(dense, expect)  # the algebra itself
    ref_any, ref_all = _tile_reduce(dense, block)
    maybe, full = m.block_bounds(s, s, block)
    assert not (ref_any & ~maybe).any(), "maybe must cover every tile with an allowed pair"
    assert not (full & ~ref_all).any(), "full must only list tiles allowed everywhere"
    layout = m.to_block_layout(s, s, block)
    assert torch.equal(layout if layout.ndim == 3 else layout[None], ref_any)


def test_algebra_identities():
    for w in (1, 4, 7):
        causal_window = masks.sliding_window(w, causal=True).to_dense(30, 30)
        via_and = (masks.causal() & masks.sliding_window(2 * w - 1)).to_dense(30, 30)
        assert torch.equal(causal_window, via_and)
        assert torch.equal(
            masks.dilated(w, 1).to_dense(30, 30), masks.sliding_window(w).to_dense(30, 30)
        )
    lm = masks.sliding_window(4) | masks.global_tokens([0])
    d = lm.to_dense(10, 10)
    assert d[0].all() and d[:, 0].all() and not d[9, 1]
    assert (lm & masks.padding([3, 10])).batch_size == 2
    assert torch.equal((~~lm).to_dense(10, 10), d)


def test_generic_masks_fall_back_to_the_dense_reduction():
    r = torch.rand(30, 26, generator=torch.Generator().manual_seed(0)) < 0.1
    ref_any, ref_all = _tile_reduce(r[None], 8)
    maybe, full = masks.DenseMask(r).block_bounds(30, 26, 8)
    assert torch.equal(maybe, ref_any) and torch.equal(full, ref_all)
    m = masks.causal() & masks.DenseMask(r)  # '&' keeps a superset; the layout refines it
    ref_any, _ = _tile_reduce(_dense3(m, 30, 26), 8)
    assert not (ref_any & ~m.block_bounds(30, 26, 8).maybe).any()
    assert torch.equal(m.to_block_layout(30, 26, 8), ref_any[0])

    class Odd(masks.Mask):  # a user mask with no registered bounds
        def mod(self, s_q, s_k):
            return lambda b, h, q, k: (q + k) % 3 == 0

    class MyWindow(masks.SlidingWindow):  # a subclass redefining mod must not inherit bounds
        def mod(self, s_q, s_k):
            return lambda b, h, q, k: q == k

    for m in (Odd(), MyWindow(9)):
        ref_any, ref_all = _tile_reduce(_dense3(m, 20, 20), 4)
        assert torch.equal(m.to_block_layout(20, 20, 4), ref_any[0])
        assert torch.equal(m.block_bounds(20, 20, 4).full, ref_all)


def test_block_layouts_of_long_sequences_need_no_dense_mask(monkeypatch):
    # bounds of structured families never evaluate the mask pair by pair
    from qkv.masks import _tiles

    def boom(*args, **kwargs):
        raise AssertionError("dense evaluation")

    monkeypatch.setattr(_tiles, "dense_block_bounds", boom)
    m = (masks.sliding_window(256, causal=True) | masks.global_tokens([0])) & masks.padding([60000])
    maybe = m.block_bounds(65536, 65536, 128).maybe
    assert maybe.shape == (1, 512, 512)
    assert int(maybe.sum()) < 512 * 5  # a band of 3 tiles, the global column, the global row
    lay = masks.bigbird(64, 3, 1, 3).to_block_layout(65536, 65536, 64, exact=False)
    assert lay.shape == (1024, 1024) and int(lay[5].sum()) == 1 + 3 + 3


@pytest.mark.parametrize(
    "mask",
    [
        masks.sliding_window(50, causal=True),
        masks.bigbird(32, 3, 1, 1, seed=2) & masks.causal(),
        masks.document(torch.tensor([[0] * 100 + [1] * 200, [0] * 250 + [1] * 50])),
        masks.sliding_window(30) | masks.global_tokens([0, 299]),
        masks.prefix_lm([0, 130]) & masks.padding([300, 200]),
    ],
    ids=repr,
)
def test_block_mask_equals_create_block_mask(mask):
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    s_q, s_k, block = 300, 300, 64
    ours = mask.to_block_mask(s_q, s_k, block)
    ref = flex.create_block_mask(
        masks.flex_mask_mod(mask, s_q, s_k),
        mask.batch_size,
        None,
        s_q,
        s_k,
        device="cpu",
        BLOCK_SIZE=block,
    )
    assert torch.equal(ours.kv_num_blocks.expand_as(ref.kv_num_blocks), ref.kv_num_blocks)
    assert torch.equal(
        ours.full_kv_num_blocks.expand_as(ref.full_kv_num_blocks), ref.full_kv_num_blocks
    )
    # the listed tiles are the same sets (their order within a row is free)
    for mine, theirs, n in (
        (ours.kv_indices, ref.kv_indices, ref.kv_num_blocks),
        (ours.full_kv_indices, ref.full_kv_indices, ref.full_kv_num_blocks),
    ):
        mine = mine.expand_as(theirs)
        for idx in itertools.product(*map(range, n.shape)):
            k = int(n[idx])
            assert sorted(mine[idx][:k].tolist()) == sorted(theirs[idx][:k].tolist())


def test_draw_small_and_large():
    pic = masks.sliding_window(2, causal=True).draw(4, 4)
    assert pic.splitlines()[1:] == ["█···", "██··", "·██·", "··██"]
    assert "sliding_window(2, causal=True)" in pic.splitlines()[0]
    big = masks.sliding_window(256, causal=True).draw(4096, 4096, max_size=32).splitlines()
    assert len(big) == 33 and all(len(r) == 32 for r in big[1:])
    assert big[2][:3] == "█▒·"  # tile 1 fully sees tile 0, partly its own tile, not tile 2
    doc = masks.document(torch.tensor([[0, 0, 1], [0, 1, 1]]))
    assert doc.draw(3, 3, batch=1).splitlines()[1:] == ["█··", "·██", "·██"]
    with pytest.raises(ValueError, match=r"batch must be in \[0, 2\)"):
        doc.draw(3, 3, batch=2)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="w must be a positive int, got 0"):
        masks.sliding_window(0)
    with pytest.raises(ValueError, match="w must be a positive int, got -3"):
        masks.dilated(-3, 2)
    with pytest.raises(ValueError, match="d must be a positive int, got 0"):
        masks.dilated(3, 0)
    with pytest.raises(ValueError, match=r"global_tokens\(indices\) must be >= 0, got \[1, -2\]"):
        masks.global_tokens([1, -2])
    with pytest.raises(ValueError, match=r"index 70 is out of range for s_k=64"):
        masks.global_tokens([3, 70]).to_dense(64, 64)
    with pytest.raises(ValueError, match=r"index 70 is out of range for s_k=64"):
        masks.global_tokens([70]).to_block_layout(64, 64, 16)
    with pytest.raises(TypeError, match="integer positions"):
        masks.global_tokens(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="block must be a positive int, got 0"):
        masks.random_blocks(2, block=0)
    with pytest.raises(ValueError, match="n must be a non-negative int, got -1"):
        masks.random_blocks(-1, block=4)
    with pytest.raises(ValueError, match="window_blocks must be odd .* got 2"):
        masks.bigbird(64, window_blocks=2)
    with pytest.raises(ValueError, match="global_blocks must be a non-negative int, got -1"):
        masks.bigbird(64, global_blocks=-1)
    with pytest.raises(ValueError, match=r"prefix_lm\(n\) must be >= 0, got -1"):
        masks.prefix_lm(-1)
    with pytest.raises(ValueError, match=r"document\(ids\) covers 3 keys but s_k=4"):
        masks.document([0, 0, 1]).to_dense(4, 4)
    with pytest.raises(ValueError, match="needs s_q <= s_k"):
        masks.document([0, 0, 1]).to_dense(4, 3)
    with pytest.raises(TypeError, match="integer document ids"):
        masks.document(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="block must be a positive int, got 0"):
        masks.causal().to_block_layout(8, 8, 0)
    with pytest.raises(ValueError, match="s_k must be a non-negative int, got -1"):
        masks.sliding_window(3).block_bounds(8, -1, 4)
