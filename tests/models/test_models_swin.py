"""Swin: window attention (partition + one bias per window on the ordinary attention
backends) against the dense math reference over the whole grid, shifted and padded; the
model's shapes, gradients, counts, recording, save/load and config errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import qkv.models as M
from qkv.attn.mha import MultiHeadAttention
from qkv.cli import main
from qkv.interp import record_attention
from qkv.layers import FeedForward, LayerNorm
from qkv.models.swin import PatchMerging, SwinBlock, stage_windows
from qkv.pos import WindowRelativeBias


def _block(d: int, heads: int, m: int, s: int, backend: str = "math") -> SwinBlock:
    torch.manual_seed(0)
    block = SwinBlock(
        MultiHeadAttention(d, heads, backend=backend),
        FeedForward(d, 2 * d, "gelu"),
        LayerNorm(d),
        LayerNorm(d),
        WindowRelativeBias(heads, m),
        window=m,
        shift=s,
    )
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
    return block.eval()


def _dense_reference(block: SwinBlock, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The block's attention branch as global attention over the (padded) grid with the
    ShiftedWindow mask and the whole-grid relative bias: no roll, no partition."""
    b, _, d = x.shape
    h, w = grid
    hp, wp = block.padded(grid)
    t = F.pad(block.self_attn_norm(x).view(b, h, w, d), (0, 0, 0, wp - w, 0, hp - h))
    t = t.reshape(b, hp * wp, d)
    bias = block.pos_bias.grid(hp, wp)  # (1, h, n, n)
    out = block.self_attn(t, mask=block.mask(grid), attn_bias=bias)  # (b, n, d)
    return out.view(b, hp, wp, d)[:, :h, :w].reshape(b, h * w, d)


@pytest.mark.parametrize(
    ("grid", "m", "s"),
    [((8, 8), 4, 0), ((8, 8), 4, 2), ((6, 9), 3, 1), ((7, 5), 4, 2), ((14, 14), 7, 3)],
)
@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_window_attention_equals_the_dense_masked_reference(grid, m, s, backend) -> None:
    """Forward and backward (input and every parameter): rtol/atol 1e-5 in float32."""
    block = _block(8, 2, m, s, backend)
    ref_block = _block(8, 2, m, s, "math")
    x = torch.randn(2, grid[0] * grid[1], 8, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = block.attend(block.self_attn_norm(x), grid)
    ref = _dense_reference(ref_block, x_ref, grid)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    for (name, p), (_, q) in zip(block.named_parameters(), ref_block.named_parameters()):
        if p.grad is None:
            assert name.startswith("ff"), name  # attend() leaves the feed-forward alone
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_shifted_windows_mix_across_window_borders_and_plain_ones_do_not() -> None:
    x = torch.zeros(1, 64, 8)
    x[0, 0] = 1.0  # one token at the top-left corner
    for s, side in ((0, 4), (2, 2)):
        block = _block(8, 2, 4, s)
        with torch.no_grad():
            out = block.attend(x, (8, 8)) - block.attend(torch.zeros_like(x), (8, 8))
        changed = out.abs().sum(-1)[0].view(8, 8) > 1e-6
        # the corner's window: rows/cols 0-3 unshifted; shifted by 2, the partial window
        # rows/cols 0-1 (the roll wraps it next to rows/cols 6-7, which the mask keeps apart)
        expect = torch.zeros(8, 8, dtype=torch.bool)
        expect[:side, :side] = True
        assert torch.equal(changed, expect)


def test_stage_windows_follow_the_reference() -> None:
    assert stage_windows(14, 7, 0) == (7, 0) and stage_windows(14, 7, 1) == (7, 3)
    assert stage_windows(7, 7, 1) == (7, 0)  # one window: no shift
    assert stage_windows(4, 7, 1) == (4, 0)  # smaller than a window: the whole grid


def test_patch_merging_concatenates_the_2x2_groups_in_the_reference_order() -> None:
    merge = PatchMerging(1, torch.nn.Identity())
    with torch.no_grad():
        merge.reduction.weight.copy_(torch.cat([torch.eye(2), torch.eye(2)], 1))  # (2, 4)
    x = torch.arange(16.0).view(1, 16, 1)  # a 4x4 grid, value = index
    with torch.no_grad():
        out = merge(x, (4, 4))  # (1, 4, 2): x0 + x2, x1 + x3
    # group (0, 0): x0 = 0, x1 = 4 (row 1), x2 = 1 (column 1), x3 = 5
    assert out[0, 0].tolist() == [0 + 1, 4 + 5]
    odd = merge(torch.ones(1, 9, 1), (3, 3))
    assert odd.shape == (1, 4, 2)  # padded to 4x4


def test_forward_backward_every_parameter_gets_a_gradient() -> None:
    model = M.from_preset("swin-tiny", dropout=0.1, pos="learned")
    model.train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing
    assert [len(s) for s in model.stages(x)] == [2, 2]
    assert [t.shape[1:] for t in model.stages(x)] == [(256, 32), (64, 64)]


def test_blocks_alternate_shifts_and_bias_tables_are_per_window() -> None:
    model = M.from_preset("swin-t")
    shifts = [(b.window, b.shift) for b in model.layers]
    assert shifts[:4] == [(7, 0), (7, 3), (7, 0), (7, 3)]
    assert shifts[-2:] == [(7, 0), (7, 0)]  # 7x7 grid in the last stage: one window
    table = model.layers[0].pos_bias.relative_position_bias_table
    assert table.shape == (13 * 13, 3)
    assert len(model.merges) == 3 and model.head.weight.shape == (1000, 768)


def test_backends_agree_and_without_a_head_the_model_pools() -> None:
    model = M.from_preset("swin-tiny", attn_backend="math").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model.set_backend("sdpa")
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
    bare = M.from_preset("swin-tiny", n_classes=0).eval()
    with torch.no_grad():
        assert bare(x).shape == (2, 64) and bare.head is None


def test_counts_and_round_trip(tmp_path) -> None:
    cfg = M.preset_config("swin-tiny", pos="learned")
    model = M.build(cfg).eval()
    assert M.parameter_count(cfg) == M.count_parameters(model)
    model.save_pretrained(tmp_path)
    back = M.load(tmp_path).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), back(x))
    assert back.config == cfg and M.SwinConfig.from_json(cfg.to_json()) == cfg


def test_recording_gives_every_windows_weights() -> None:
    model = M.from_preset("swin-tiny").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), record_attention(model, dtype=None) as rec:
        out = model(x)
    with torch.no_grad():  # outputs from the recorded weights: the backend's within 1e-5
        torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-5)
    first = rec["layers.0.self_attn"]
    assert first.weights.shape == (2 * 16, 2, 16, 16)  # 16x16 grid, 4x4 windows of 16
    shifted = rec["layers.1.self_attn"].weights
    # wrapped windows: the last window holds four regions, none sees another
    last = shifted[15, 0]
    assert (last > 0).sum() == 4 * 4 * 4 and torch.allclose(last.sum(-1), torch.ones(16))
    assert rec["layers.2.self_attn"].weights.shape == (2 * 4, 4, 16, 16)


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"depths": []}, "depths must be a non-empty list"),
        ({"depths": [2, 0]}, r"depths\[1\] must be a positive int, got 0"),
        ({"stage_heads": [2]}, r"stage_heads must list one head count per stage \(2\)"),
        ({"stage_heads": [4, 4]}, r"stage_heads\[0\] \(4\) must equal n_heads \(2\)"),
        ({"stage_heads": [2, 5]}, r"stage 1: its heads \(5\) must divide its width"),
        ({"patch_size": 5}, r"patch_size \(5\) must divide image_size \(32\)"),
        ({"norm_placement": "post"}, "Swin is pre-norm"),
        ({"pos": "rope"}, "Swin's pos must be 'none' or 'learned'"),
        ({"n_kv_heads": 1}, r"Swin does not support n_kv_heads"),
        ({"drop_path": 1.0}, r"drop_path must be a finite number in \[0.0, 1.0\)"),
    ],
)
def test_config_errors_name_the_values(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        M.preset_config("swin-tiny", **kw)


def test_swin_t_has_the_published_count_and_info_has_no_flops_per_token(capsys) -> None:
    with torch.device("meta"):
        model = M.from_preset("swin-t")
    # transformers' SwinForImageClassification(SwinConfig()) and timm's
    # swin_tiny_patch4_window7_224: sum(p.numel() for p in model.parameters())
    assert M.count_parameters(model) == 28_288_354
    with pytest.raises(ValueError, match="no FLOPs per token"):
        M.flops_per_token(M.preset_config("swin-t"))
    assert main(["info", "swin-t"]) == 0
    assert "n/a (the stages have different token counts)" in capsys.readouterr().out
