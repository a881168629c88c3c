"""Head masking and head importance (Michel et al. 2019)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qkv.interp import head_importance, mask_heads

IDS = torch.randint(0, 50, (3, 2, 10), generator=torch.Generator().manual_seed(1))


def _loss(model, ids):
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def _zero_head(model, layer, head):
    """Zero head ``head``'s slice of the output projection: the head no longer contributes."""
    attn = model.decoder.layers[layer].self_attn
    d_h = attn.head_dim
    with torch.no_grad():
        attn.out_proj.weight[:, head * d_h : (head + 1) * d_h] = 0.0


@pytest.mark.parametrize("method", ["gradient", "ablation"])
def test_a_head_whose_output_is_zeroed_has_importance_zero(method, tiny):
    model = tiny.lm()
    _zero_head(model, 1, 2)
    imp = head_importance(model, _loss, IDS, method=method)
    scores = imp.scores["decoder.layers.1.self_attn"]
    assert scores[2] == 0.0
    assert all(float(s) != 0.0 for i, s in enumerate(scores) if i != 2)
    assert ("decoder.layers.1.self_attn", 2, 0.0) in imp.ranking()
    with torch.no_grad():
        mean_loss = sum(float(_loss(model, b)) for b in IDS) / len(IDS)
    assert imp.loss == pytest.approx(mean_loss, rel=1e-5)


def test_gradient_importance_is_the_mask_gradient_and_leaves_params_alone(tiny):
    model = tiny.lm()
    imp = head_importance(model, _loss, IDS[:1], method="gradient")
    assert all(p.grad is None for p in model.parameters())
    # finite difference of the loss in the mask of one head
    eps = 1e-3
    name = "decoder.layers.0.self_attn"
    losses = []
    for sign in (1, -1):
        xi = torch.ones(4)
        xi[1] += sign * eps
        with torch.no_grad(), mask_heads(model, {name: xi}):
            losses.append(float(_loss(model, IDS[0])))
    fd = abs(losses[0] - losses[1]) / (2 * eps)
    assert float(imp.scores[name][1]) == pytest.approx(fd, rel=2e-2, abs=1e-4)
    normalized = head_importance(model, _loss, IDS[:1], normalize=True)
    for s in normalized.scores.values():
        assert float(s.norm()) == pytest.approx(1.0)


def test_mask_heads_zero_equals_zeroed_output_projection_and_removes_hooks(tiny):
    model = tiny.lm()
    name = "decoder.layers.1.self_attn"
    before = [(dict(m._forward_pre_hooks), dict(m._forward_hooks)) for m in model.modules()]
    with torch.no_grad(), mask_heads(model, {name: torch.tensor([1.0, 1.0, 0.0, 1.0])}):
        masked = model(IDS[0])
    assert before == [(dict(m._forward_pre_hooks), dict(m._forward_hooks)) for m in model.modules()]
    _zero_head(model, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(masked, model(IDS[0]))
    with pytest.raises(ValueError, match=r"must be \(h,\) or \(b, h\) with h = n_heads = 4"):
        with mask_heads(model, {name: torch.ones(3)}):
            pass
    with pytest.raises(ValueError, match="method must be"):
        head_importance(model, _loss, IDS, method="taylor")
