"""Causality and padding invariance for every family and position kind."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import qkv.models as M

POS = ("learned", "sinusoidal", "rope", "alibi", "relative", "none")
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _lm(pos: str, **kw: object) -> M.DecoderLM:
    return M.from_preset("gpt2-tiny", pos=pos, **kw).eval()  # type: ignore[return-value]


def _s2s(pos: str, **kw: object) -> M.Seq2SeqTransformer:
    return M.from_preset("transformer-tiny", pos=pos, **kw).eval()  # type: ignore[return-value]


# -- causality ---------------------------------------------------------------------------
@pytest.mark.parametrize("pos", POS)
@torch.no_grad()
def test_lm_is_causal(pos: str) -> None:
    model = _lm(pos)
    ids = torch.randint(1, 128, (2, 10))
    ref = model(ids)
    for t in (0, 4, 9):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1) % 128
        out = model(changed)
        torch.testing.assert_close(out[:, :t], ref[:, :t], atol=0, rtol=0)
        assert not torch.allclose(out[:, t], ref[:, t])


@pytest.mark.parametrize("pos", POS)
@torch.no_grad()
def test_seq2seq_decoder_is_causal(pos: str) -> None:
    model = _s2s(pos)
    src, tgt = torch.randint(1, 128, (2, 7)), torch.randint(1, 128, (2, 8))
    ref = model(src, tgt)
    for t in (0, 3, 7):
        changed = tgt.clone()
        changed[:, t] = (changed[:, t] + 1) % 128
        out = model(src, changed)
        torch.testing.assert_close(out[:, :t], ref[:, :t], atol=0, rtol=0)
        assert not torch.allclose(out[:, t], ref[:, t])
    # every target position depends on the source
    src2 = src.clone()
    src2[:, -1] = (src2[:, -1] + 1) % 128
    assert not torch.allclose(model(src2, tgt)[:, 0], ref[:, 0])


# -- padding invariance ------------------------------------------------------------------
def _pad(seqs: list[Tensor], side: str, pad: int = 0) -> tuple[Tensor, Tensor]:
    """Batch 1-d sequences with garbage-free padding on one side; returns (ids, mask)."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros(len(seqs), n, dtype=torch.bool)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(n - len(s), n)
        ids[i, sl], mask[i, sl] = s, True
    return ids, mask


def _real(out: Tensor, mask: Tensor, i: int) -> Tensor:
    return out[i][mask[i]]


SEQS = [torch.randint(1, 128, (n,), generator=torch.Generator().manual_seed(n)) for n in (9, 4, 6)]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("pos", POS)
@torch.no_grad()
def test_lm_padding_invariance(pos: str, side: str) -> None:
    model = _lm(pos, pad_token_id=0)
    ids, mask = _pad(SEQS, side)
    out = model(ids, padding_mask=mask)
    for i, s in enumerate(SEQS):
        alone = model(s[None])[0]
        torch.testing.assert_close(_real(out, mask, i), alone, **TOL)
    assert torch.isfinite(out).all()  # padded query rows give zeros, not NaN


@pytest.mark.parametrize("pos", POS)
@torch.no_grad()
def test_seq2seq_padding_invariance(pos: str) -> None:
    model = _s2s(pos)
    srcs = SEQS
    tgts = [torch.randint(1, 128, (n,)) for n in (3, 7, 5)]
    src, src_padding_mask = _pad(srcs, "right")
    tgt, tgt_padding_mask = _pad(tgts, "right")
    out = model(src, tgt, src_padding_mask=src_padding_mask, tgt_padding_mask=tgt_padding_mask)
    for i in range(len(srcs)):
        alone = model(srcs[i][None], tgts[i][None])[0]
        torch.testing.assert_close(_real(out, tgt_padding_mask, i), alone, **TOL)


@pytest.mark.parametrize("pos", POS)
@torch.no_grad()
def test_encoder_model_padding_invariance(pos: str) -> None:
    model: M.EncoderModel = M.from_preset("bert-tiny", pos=pos).eval()  # type: ignore[assignment]
    ids, mask = _pad(SEQS, "right")
    types = (torch.arange(ids.shape[1]) >= 2).long().expand_as(ids)
    out = model(ids, padding_mask=mask, token_type_ids=types)
    for i, s in enumerate(SEQS):
        alone = model(s[None], token_type_ids=types[:1, : len(s)])
        torch.testing.assert_close(
            _real(out.last_hidden_state, mask, i), alone.last_hidden_state[0], **TOL
        )
        torch.testing.assert_close(out.pooled[i], alone.pooled[0], **TOL)  # type: ignore[index]
        torch.testing.assert_close(_real(out.mlm_logits, mask, i), alone.mlm_logits[0], **TOL)  # type: ignore[arg-type,index]


@torch.no_grad()
def test_padding_mask_matters() -> None:
    """Without the mask the padded batch differs (the test above is not vacuous)."""
    model: M.EncoderModel = M.from_preset("bert-tiny").eval()  # type: ignore[assignment]
    ids, mask = _pad(SEQS, "right")
    with_mask = model(ids, padding_mask=mask).last_hidden_state
    without = model(ids).last_hidden_state
    assert not torch.allclose(_real(with_mask, mask, 1), _real(without, mask, 1))


@torch.no_grad()
def test_custom_mask_passes_through_the_encoder() -> None:
    """A qkv.masks object reaches every layer: a causal mask makes an encoder causal."""
    from qkv.masks import causal

    model: M.EncoderModel = M.from_preset("bert-tiny", pooler=False).eval()  # type: ignore[assignment]
    x = model.embed(torch.randint(1, 128, (1, 6)))
    ref = model.encoder(x, mask=causal())
    x2 = x.clone()
    x2[:, -1] += 1.0
    torch.testing.assert_close(model.encoder(x2, mask=causal())[:, :-1], ref[:, :-1], **TOL)
