"""T5 relative position bias against Hugging Face's T5Attention."""

from __future__ import annotations

import pytest
import torch

from qkv.pos import RelativeBias

t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
from transformers import T5Config  # noqa: E402

BUCKET_SETTINGS = [(32, 128), (16, 64), (8, 20), (64, 256), (4, 8), (10, 37)]


@pytest.mark.parametrize(("num_buckets", "max_distance"), BUCKET_SETTINGS)
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("dtype", [torch.long, torch.int32])
def test_bucket_matches_hf(
    num_buckets: int, max_distance: int, bidirectional: bool, dtype: torch.dtype
) -> None:
    rel = torch.arange(-300, 301, dtype=dtype)
    ref = t5.T5Attention._relative_position_bucket(
        rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    ours = RelativeBias.bucket(rel, bidirectional, num_buckets, max_distance)
    assert ours.dtype == torch.long
    assert torch.equal(ours, ref.long())
    assert int(ours.min()) >= 0 and int(ours.max()) < num_buckets


def test_bucket_known_values() -> None:
    """T5 defaults, bidirectional: 8 exact buckets per direction, positive offsets from 16."""
    rel = torch.tensor([0, -1, -7, -8, -127, -128, -1000, 1, 7, 1000])
    got = RelativeBias.bucket(rel, True, 32, 128).tolist()
    assert got[:3] == [0, 1, 7] and got[7:9] == [17, 23]
    assert got[3] == 8 and got[4] == 15 and got[5] == got[6] == 15 and got[9] == 31
    # Unidirectional: future keys share bucket 0.
    assert RelativeBias.bucket(torch.tensor([5, 0, -3]), False, 32, 128).tolist() == [0, 0, 3]


def _hf_attention(n_heads: int, num_buckets: int, max_distance: int, is_decoder: bool):
    cfg = T5Config(
        d_model=n_heads * 4,
        d_kv=4,
        num_heads=n_heads,
        relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=max_distance,
        is_decoder=is_decoder,
    )
    torch.manual_seed(0)
    return t5.T5Attention(cfg, has_relative_attention_bias=True, layer_idx=0)


@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (8, 20)])
@pytest.mark.parametrize("is_decoder", [False, True])
@pytest.mark.parametrize(("s_q", "s_k", "offset"), [(7, 7, None), (1, 300, None), (3, 9, 2)])
def test_forward_matches_hf_compute_bias(
    num_buckets: int, max_distance: int, is_decoder: bool, s_q: int, s_k: int, offset: int | None
) -> None:
    n_heads = 3
    hf = _hf_attention(n_heads, num_buckets, max_distance, is_decoder)
    mod = RelativeBias(n_heads, num_buckets, max_distance, bidirectional=not is_decoder)
    weights = {k: v for k, v in hf.state_dict().items() if k.startswith("relative_attention_bias")}
    mod.load_state_dict(weights)  # strict: the names map 1:1
    past = s_k - s_q if offset is None else offset
    with torch.no_grad():
        ref = hf.compute_bias(s_q, s_k, past_seen_tokens=past)
        ours = mod(s_q, s_k, offset=offset)
    assert ours.shape == (1, n_heads, s_q, s_k)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_decode_step_equals_last_row_and_gradients_flow() -> None:
    torch.manual_seed(0)
    mod = RelativeBias(4, bidirectional=False)
    full = mod(10, 10)
    torch.testing.assert_close(mod(1, 10), full[:, :, -1:], rtol=0, atol=0)
    full.sum().backward()
    assert mod.relative_attention_bias.weight.grad is not None
    assert mod.relative_attention_bias.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_heads": 0}, r"n_heads must be a positive int, got 0"),
        ({"n_heads": 2, "num_buckets": 0}, r"num_buckets must be a positive int, got 0"),
        ({"n_heads": 2, "num_buckets": 2}, r"num_buckets must be >= 4 .* got 2"),
        ({"n_heads": 2, "max_distance": -5}, r"max_distance must be a positive int, got -5"),
        ({"n_heads": 2, "max_distance": 8}, r"max_distance \(8\) must exceed the 8 exact"),
    ],
)
def test_bad_constructor_args(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RelativeBias(**kwargs)


def test_bad_forward_args() -> None:
    mod = RelativeBias(2)
    with pytest.raises(ValueError, match=r"s_q must be a positive int, got 0"):
        mod(0, 4)
    with pytest.raises(ValueError, match=r"offset must be an int or None, got 'a'"):
        mod(2, 4, offset="a")  # type: ignore[arg-type]
