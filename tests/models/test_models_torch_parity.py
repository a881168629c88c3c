"""Parity with independent implementations: ``torch.nn.TransformerEncoder`` and
``torch.nn.TransformerDecoder`` (post-norm and ``norm_first=True``), weights copied over."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import qkv.models as M
from qkv.attn.mha import MultiHeadAttention
from qkv.models.parts import decoder_for, encoder_for

D, H, FF, N = 16, 4, 32, 2
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _cfg(placement: str) -> M.TransformerConfig:
    return M.TransformerConfig(
        d_model=D, n_heads=H, d_ff=FF, dropout=0.0, pos="none", norm_placement=placement
    )


def _copy_mha(dst: MultiHeadAttention, src: nn.MultiheadAttention) -> None:
    dst.load_state_dict(MultiHeadAttention.from_torch(src).state_dict())


def _copy_ln(dst: nn.Module, src: nn.LayerNorm) -> None:
    dst.load_state_dict(src.state_dict())


def _copy_ff(dst: nn.Module, layer: nn.Module) -> None:
    dst.fc1.load_state_dict(layer.linear1.state_dict())
    dst.fc2.load_state_dict(layer.linear2.state_dict())


def _randomize(module: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


def _masks(b: int, s: int) -> torch.Tensor:
    real = torch.ones(b, s, dtype=torch.bool)
    real[1, s - 3 :] = False
    real[2, s - 1 :] = False
    return real


@pytest.mark.parametrize("norm_first", [False, True])
@torch.no_grad()
def test_encoder_matches_torch(norm_first: bool) -> None:
    layer = nn.TransformerEncoderLayer(
        D, H, FF, dropout=0.0, activation="relu", batch_first=True, norm_first=norm_first
    )
    ref = nn.TransformerEncoder(
        layer, N, norm=nn.LayerNorm(D) if norm_first else None, enable_nested_tensor=False
    )
    _randomize(ref)
    ref.eval()
    ours = encoder_for(_cfg("pre" if norm_first else "post"), N).eval()
    for q, t in zip(ours.layers, ref.layers):
        _copy_mha(q.self_attn, t.self_attn)
        _copy_ff(q.ff, t)
        _copy_ln(q.self_attn_norm, t.norm1)
        _copy_ln(q.ff_norm, t.norm2)
    if norm_first:
        _copy_ln(ours.norm, ref.norm)
    else:
        assert ours.norm is None
    x = torch.randn(3, 7, D)
    real = _masks(3, 7)
    expected = ref(x, src_key_padding_mask=~real)
    got = ours(x, padding_mask=real)
    torch.testing.assert_close(got[real], expected[real], **TOL)
    torch.testing.assert_close(ours(x), ref(x), **TOL)


@pytest.mark.parametrize("norm_first", [False, True])
@torch.no_grad()
def test_decoder_matches_torch(norm_first: bool) -> None:
    layer = nn.TransformerDecoderLayer(
        D, H, FF, dropout=0.0, activation="relu", batch_first=True, norm_first=norm_first
    )
    ref = nn.TransformerDecoder(layer, N, norm=nn.LayerNorm(D) if norm_first else None)
    _randomize(ref)
    ref.eval()
    ours = decoder_for(_cfg("pre" if norm_first else "post"), N, cross_attention=True).eval()
    for q, t in zip(ours.layers, ref.layers):
        _copy_mha(q.self_attn, t.self_attn)
        _copy_mha(q.cross_attn, t.multihead_attn)
        _copy_ff(q.ff, t)
        _copy_ln(q.self_attn_norm, t.norm1)
        _copy_ln(q.cross_attn_norm, t.norm2)
        _copy_ln(q.ff_norm, t.norm3)
    if norm_first:
        _copy_ln(ours.norm, ref.norm)
    x, memory = torch.randn(3, 6, D), torch.randn(3, 8, D)
    tgt_real, mem_real = _masks(3, 6), _masks(3, 8)
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)  # torch: True = masked out
    expected = ref(
        x,
        memory,
        tgt_mask=causal,
        tgt_is_causal=True,
        tgt_key_padding_mask=~tgt_real,
        memory_key_padding_mask=~mem_real,
    )
    got = ours(x, memory, padding_mask=tgt_real, src_padding_mask=mem_real)
    torch.testing.assert_close(got[tgt_real], expected[tgt_real], **TOL)
