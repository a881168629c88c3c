"""Mixed precision: every tiny preset runs forward, backward and cached decoding under
autocast (bf16 on CPU always; fp16 and bf16 on CUDA when a GPU is present)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import qkv.models as M

DEVICES = [("cpu", torch.bfloat16)]
if torch.cuda.is_available():
    DEVICES += [("cuda", torch.float16), ("cuda", torch.bfloat16)]


def _run(model: nn.Module, device: str) -> Tensor:
    g = torch.Generator().manual_seed(0)
    if isinstance(model, M.ViT):
        return model(torch.randn(2, 3, 32, 32, generator=g).to(device))
    ids = torch.randint(1, 128, (2, 7), generator=g).to(device)
    mask = torch.ones(2, 7, dtype=torch.bool, device=device)
    mask[1, 5:] = False
    if isinstance(model, M.Seq2SeqTransformer):
        return model(ids, ids[:, :5], src_padding_mask=mask)
    if isinstance(model, M.EncoderModel):
        out = model(ids, padding_mask=mask)
        return out.mlm_logits.float().mean() + out.pooled.float().mean()  # type: ignore[union-attr]
    return model(ids, padding_mask=mask)


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi", "relative"])
@pytest.mark.parametrize("name", ["transformer-tiny", "gpt2-tiny", "bert-tiny", "vit-tiny"])
@pytest.mark.parametrize(("device", "dtype"), DEVICES, ids=lambda v: str(v))
def test_autocast_forward_backward(name: str, pos: str, device: str, dtype: torch.dtype) -> None:
    model = M.from_preset(name, pos=pos).to(device).eval()
    with torch.no_grad():
        ref = _run(model, device).float()
        with torch.autocast(device, dtype=dtype):
            out = _run(model, device)
    assert out.dtype == dtype or out.ndim == 0
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)
    model.train()
    with torch.autocast(device, dtype=dtype):
        loss = _run(model, device).float().square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi", "relative"])
@pytest.mark.parametrize(("device", "dtype"), DEVICES, ids=lambda v: str(v))
@torch.no_grad()
def test_autocast_cached_decoding(pos: str, device: str, dtype: torch.dtype) -> None:
    lm: M.DecoderLM = M.from_preset("gpt2-tiny", pos=pos).to(device).eval()  # type: ignore[assignment]
    s2s: M.Seq2SeqTransformer = M.from_preset("transformer-tiny", pos=pos).to(device).eval()  # type: ignore[assignment]
    ids = torch.randint(1, 128, (2, 8), device=device)
    with torch.autocast(device, dtype=dtype):
        full = lm(ids)
        cache = lm.make_cache(2, 8)
        assert cache[0].k.dtype == dtype  # the autocast dtype, so keys match the projections
        steps = torch.cat([lm(ids[:, t : t + 1], cache=cache) for t in range(8)], dim=1)
        torch.testing.assert_close(steps.float(), full.float(), atol=0.05, rtol=0.05)
        memory = s2s.encode(ids)
        full2 = s2s.decode(ids[:, :5], memory)
        cache2 = s2s.make_cache(2, 5)
        steps2 = torch.cat(
            [s2s.decode(ids[:, t : t + 1], memory, cache=cache2) for t in range(5)], dim=1
        )
        torch.testing.assert_close(steps2.float(), full2.float(), atol=0.05, rtol=0.05)
