"""Saved models and ``config.json`` files of an earlier format still load, to the same model.

The fixtures in ``tests/fixtures/configs/`` were written by ``scripts/make_config_fixtures.py``
with the code of commit 3827402 (flat attention fields such as ``attn_kind``,
``favor_features``, ``lsh_*``, ``linformer_k``, ``reversible``); its ``manifest.json`` holds the
parameter and buffer counts that code built, and one fixed forward pass of each saved model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import qkv
import qkv.models as M

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "manifest.json").read_text())


def _forward(model: M.TransformerModel) -> list[float]:
    """As the script: the sum and first values of one fixed forward pass."""
    g = torch.Generator().manual_seed(0)
    cfg: Any = model.config
    if isinstance(model, (M.ViT, M.Swin)):
        x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    else:
        x = torch.randint(1, cfg.vocab_size, (2, 8), generator=g)
    with torch.no_grad():
        if isinstance(model, M.Seq2SeqTransformer):
            out = model(x, x[:, :5])
        elif isinstance(model, M.EncoderModel):
            out = model(x).logits
        else:
            out = model(x)
    out = out.float()
    return [float(out.sum()), *[float(v) for v in out.flatten()[:8]]]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_old_config_builds_the_same_model(name: str) -> None:
    cfg = M.config_from_dict(json.loads((FIXTURES / name / "config.json").read_text()))
    with torch.device("meta"):
        model = M.build(cfg)
    assert M.count_parameters(model) == MANIFEST[name]["parameters"]
    assert sum(b.numel() for b in model.buffers()) == MANIFEST[name]["buffers"]
    # the config, written again in today's format, reads back to itself
    assert M.config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("name", sorted(k for k, v in MANIFEST.items() if "output" in v))
def test_old_checkpoint_loads_bit_exactly(name: str) -> None:
    model = qkv.load(FIXTURES / name)
    want = MANIFEST[name]["output"]
    assert _forward(model) == pytest.approx(want, rel=1e-5, abs=1e-6)
