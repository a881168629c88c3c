"""CLIP and the LLaVA-style model: the contrastive loss against hand computations, the
temperature clamp, end-of-text pooling, causal text, and the image prefix's padding."""

from __future__ import annotations

import math

import pytest
import torch

import qkv.models as M
from qkv.training.contrastive import contrastive_loss


def _ce(row: list[float], target: int) -> float:
    """``-log softmax(row)[target]`` by hand."""
    return -(row[target] - math.log(sum(math.exp(v) for v in row)))


def test_contrastive_loss_by_hand() -> None:
    logits = [[2.0, 0.0], [1.0, 3.0]]
    # rows: image i -> text i; columns: text j -> image j
    by_hand = (
        _ce([2.0, 0.0], 0) + _ce([1.0, 3.0], 1) + _ce([2.0, 1.0], 0) + _ce([0.0, 3.0], 1)
    ) / 4
    got = contrastive_loss(torch.tensor(logits))
    assert float(got) == pytest.approx(by_hand, rel=1e-6)


def test_contrastive_loss_with_duplicate_captions_by_hand() -> None:
    # texts 0 and 1 are the same caption: images 0 and 1 each have two positives
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0], [0.0, 1.0, 3.0]])
    pos = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)

    def soft(row: list[float], targets: list[int]) -> float:  # -sum_t (1/|T|) log p_t
        return sum(_ce(row, t) for t in targets) / len(targets)

    rows = (
        soft([1.0, 2.0, 0.0], [0, 1]) + soft([0.5, 0.0, 1.0], [0, 1]) + soft([0.0, 1.0, 3.0], [2])
    )
    cols = (
        soft([1.0, 0.5, 0.0], [0, 1]) + soft([2.0, 0.0, 1.0], [0, 1]) + soft([0.0, 1.0, 3.0], [2])
    )
    got = contrastive_loss(logits, pos)
    assert float(got) == pytest.approx((rows / 3 + cols / 3) / 2, rel=1e-6)
    assert float(contrastive_loss(logits, torch.eye(3, dtype=torch.bool))) == pytest.approx(
        float(contrastive_loss(logits)), rel=1e-6
    )
    with pytest.raises(ValueError, match="square"):
        contrastive_loss(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="every row and every column"):
        contrastive_loss(logits, torch.zeros(3, 3, dtype=torch.bool))


def _clip() -> M.CLIP:
    return M.from_preset("clip-tiny").eval()


def test_logit_scale_is_clamped_at_max_logit_scale() -> None:
    model = _clip()
    with torch.no_grad():
        assert float(model.scale()) == pytest.approx(math.exp(2.6592), rel=1e-6)
        model.logit_scale.fill_(10.0)
        assert float(model.scale()) == pytest.approx(100.0)
    img, txt = torch.randn(2, 16), torch.randn(3, 16)
    cos = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    assert torch.allclose(model.similarity(img, txt), 100.0 * cos, atol=1e-5)


def test_text_is_read_at_the_first_end_token_and_sees_only_what_precedes_it() -> None:
    model = _clip()
    eos = model.config.eos_token_id
    ids = torch.tensor([[5, 6, eos, 9, 9], [5, 6, eos, 3, eos]])
    with torch.no_grad():
        a, b = model.text_features(ids)
        alone = model.text_features(torch.tensor([[5, 6, eos]]))[0]
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, alone, atol=1e-5)
    with pytest.raises(ValueError, match=r"texts \[0\] hold no end-of-text token"):
        model.text_features(torch.tensor([[5, 6, 7]]))


def test_forward_logits_are_the_scaled_cosines_and_both_ways() -> None:
    model = _clip()
    images = torch.rand(3, 1, 16, 16)
    ids = torch.tensor([[4, 127], [8, 127], [10, 127]])
    with torch.no_grad():
        out = model(images, ids)
        sim = model.similarity(model.image_features(images), model.text_features(ids))
    assert out.logits_per_image.shape == (3, 3)
    assert torch.allclose(out.logits_per_image, sim, atol=1e-5)
    assert torch.equal(out.logits_per_text, out.logits_per_image.T)
    assert torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_config_errors_name_the_values() -> None:
    with pytest.raises(ValueError, match=r"eos_token_id \(128\) must be < vocab_size \(128\)"):
        M.preset_config("clip-tiny", eos_token_id=128)
    with pytest.raises(ValueError, match=r"vision_n_heads \(3\) must divide vision_d_model \(32\)"):
        M.preset_config("clip-tiny", vision_n_heads=3)
    with pytest.raises(ValueError, match=r"max_len \(16\) must exceed the 16 image tokens"):
        M.preset_config("llava-tiny", max_len=16)


def test_llava_left_padding_changes_nothing() -> None:
    model = M.from_preset("llava-tiny", dropout=0.0, attn_dropout=0.0).eval()
    images = torch.rand(2, 1, 16, 16)
    ids = torch.randint(4, 128, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, :3] = False  # row 1: three pads, then a 4-token text
    with torch.no_grad():
        padded = model(images, ids, padding_mask=mask)
        alone = model(images[1:], ids[1:, 3:])
        tokens = model.image_tokens(images)
        again = model(None, ids, padding_mask=mask, image_tokens=tokens)
    assert padded.shape == (2, 7, 128)
    assert torch.allclose(padded[1, 3:], alone[0], atol=1e-5)
    assert torch.equal(padded, again)
    with pytest.raises(ValueError, match="exceed max_len"):
        model(images, torch.ones(2, 40, dtype=torch.long))


def test_llava_text_sees_the_image_and_the_image_not_the_text() -> None:
    model = M.from_preset("llava-tiny", dropout=0.0, attn_dropout=0.0).eval()
    ids = torch.randint(4, 128, (1, 5))
    a, b = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(model(a, ids), model(b, ids))
        # causal: an earlier text position never depends on a later token
        changed = ids.clone()
        changed[0, -1] = (changed[0, -1] + 1) % 128
        assert torch.allclose(model(a, ids)[:, :-1], model(a, changed)[:, :-1], atol=1e-6)
