"""SpecAugment's masks: widths and counts within their bounds, time masks inside the real
frames, the identity in eval mode, and reproducible masks from a generator."""

from __future__ import annotations

import pytest
import torch

from qkv.layers.spec_augment import SpecAugment


def _runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    out, n = [], 0
    for v in [*row.tolist(), False]:
        if v:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out


def test_mask_bounds():
    aug = SpecAugment(freq_masks=2, freq_width=5, time_masks=3, time_width=10, time_ratio=0.2)
    x = torch.zeros(64, 100, 40)
    lengths = torch.randint(20, 101, (64,))
    g = torch.Generator().manual_seed(0)
    m = aug.masks(x, lengths, g)
    for i in range(64):
        freq = m[i].all(dim=0)  # channels masked at every frame
        time = m[i].all(dim=1)  # frames masked in every channel
        assert sum(_runs(freq)) <= 2 * 5 and all(r <= 10 for r in _runs(freq))
        cap = min(10, int(0.2 * lengths[i]))
        assert all(r <= 3 * cap for r in _runs(time))
        assert not time[lengths[i] :].any()  # never past the real frames
    assert m.any()


def test_eval_mode_is_identity_and_train_fills_value():
    aug = SpecAugment(value=-7.0)
    x = torch.randn(2, 50, 80)
    assert aug.eval()(x) is x
    g = torch.Generator().manual_seed(1)
    y = aug.train()(x, generator=g)
    masked = aug.masks(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(y[masked], torch.full_like(y[masked], -7.0))
    assert torch.equal(y[~masked], x[~masked])


def test_no_masks_and_reproducible():
    x = torch.randn(3, 30, 20)
    assert not SpecAugment(freq_masks=0, time_masks=0).masks(x).any()
    aug = SpecAugment()
    a = aug.masks(x, generator=torch.Generator().manual_seed(5))
    b = aug.masks(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize(("kw", "match"), [({"freq_width": -1}, "freq_width must be an int >= 0"),
                                          ({"time_ratio": 1.5}, r"time_ratio must be in \[0, 1\]")])  # fmt: skip
def test_errors_name_values(kw, match):
    with pytest.raises(ValueError, match=match):
        SpecAugment(**kw)
