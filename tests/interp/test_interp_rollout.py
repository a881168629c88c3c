"""Attention rollout (Abnar & Zuidema 2020) against a two-layer example computed by hand."""

from __future__ import annotations

import pytest
import torch

from qkv.interp import record_attention, rollout

# two layers of two heads over two tokens, (layers, h, s, s)
HEADS = torch.tensor(
    [
        [[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]],  # mean A1 = [[1, 0], [.5, .5]]
        [[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]],  # mean A2 = [[.5, .5], [0, 1]]
    ]
)


def test_two_layer_rollout_by_hand():
    # Â1 = .5 A1 + .5 I = [[1, 0], [.25, .75]];  Â2 = [[.75, .25], [0, 1]]
    # R = Â2 Â1 = [[.75 + .25 * .25, .25 * .75], [.25, .75]]
    expected = torch.tensor([[[0.8125, 0.1875], [0.25, 0.75]]])
    torch.testing.assert_close(rollout(HEADS), expected)
    # without the residual identity: A2 A1 = [[.75, .25], [.5, .5]]
    torch.testing.assert_close(
        rollout(HEADS, residual=False), torch.tensor([[[0.75, 0.25], [0.5, 0.5]]])
    )
    # max fusion: [[1, 0], [1, 1]] -> rows of .5 A + .5 I normalized = [[1, 0], [1/3, 2/3]];
    # [[1, 1], [0, 1]] -> [[2/3, 1/3], [0, 1]];  product [[7/9, 2/9], [1/3, 2/3]]
    torch.testing.assert_close(
        rollout(HEADS, head_fusion="max"), torch.tensor([[[7 / 9, 2 / 9], [1 / 3, 2 / 3]]])
    )
    # starting at the last layer leaves Â2 alone
    torch.testing.assert_close(
        rollout(HEADS, start_layer=1), torch.tensor([[[0.75, 0.25], [0.0, 1.0]]])
    )


def test_rollout_of_a_record_matches_the_stacked_weights(tiny):
    model = tiny.lm()
    with record_attention(model) as rec:
        tiny.run(model)
    r = rollout(rec, kind="decoder_self")
    assert r.shape == (2, 9, 9)
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 9))
    assert r.triu(1).abs().max() == 0  # causal paths only reach earlier tokens
    torch.testing.assert_close(r, rollout(rec.stack("decoder_self")))


def test_rollout_errors(tiny):
    model = tiny.lm()
    with record_attention(model, rows=[-1]) as rec:
        tiny.run(model)
    with pytest.raises(ValueError, match="every query row"):
        rollout(rec, kind="decoder_self")
    with pytest.raises(ValueError, match="kind must be 'encoder_self' or 'decoder_self'"):
        rollout(rec, kind="cross")
    with pytest.raises(ValueError, match=r"start_layer \(2\) out of range"):
        rollout(HEADS, start_layer=2)
    with pytest.raises(ValueError, match="head_fusion"):
        rollout(HEADS, head_fusion="median")
