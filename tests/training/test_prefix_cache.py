"""The frozen-prefix cache (``cache_frozen``): the same steps as without it (loss, gradients
and weights, same seeds, dropout 0), and refused where the frozen layers' output is not
the same every time (dropout in them, augmented batches) or there is nothing to cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qkv.models import EncoderConfig, build
from qkv.tasks import TaskOptions, TextClassifyTask, build_trainer
from qkv.training import TrainConfig
from qkv.training.prefix_cache import frozen_depth

WORDS = ["network socket server", "game player chess", "editor font latex", "tcp http client"]
SMALL = {"d_model": 16, "d_ff": 32, "n_heads": 2, "n_layers": 3, "dropout": 0.0}


def _task(tmp_path: Path) -> TextClassifyTask:
    lines = []
    for label, words in zip(["net", "games", "text", "net"], WORDS):
        w = words.split()
        # lengths from 2 to 9 words: the batches are padded
        lines += [f"{label}\t{' '.join(w[j % 3] for j in range(2 + i % 8))} {i}" for i in range(12)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / "texts.tsv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return TextClassifyTask(TaskOptions(data=str(p), n_valid=8, n_test=8, vocab_size=300))


def _trainer(tmp_path: Path, cache: bool, freeze: str = "embed,encoder.layers.0", **model):
    cfg = TrainConfig(
        steps=8, batch_size=8, progress=False, freeze=freeze, lr=1e-2, cache_frozen=cache,
        label_smoothing=0.0, seed=3,
    )  # fmt: skip
    return build_trainer(_task(tmp_path), cfg, None, model_overrides={**SMALL, **model})


def test_the_prefix_splits_the_forward_pass_exactly() -> None:
    torch.manual_seed(0)
    model = build(EncoderConfig(**SMALL, vocab_size=50, max_len=16, n_classes=3)).eval()
    ids = torch.randint(1, 50, (4, 9))
    mask = torch.arange(9)[None] < torch.tensor([[9], [5], [2], [7]])
    whole = model(ids, padding_mask=mask).logits
    for depth in (1, 2, 4):  # the embeddings; with layer 0; every layer (then the norm)
        h = model.forward_prefix(ids, depth=depth, padding_mask=mask)
        out = model.forward_from(h, depth=depth, padding_mask=mask).logits
        torch.testing.assert_close(out, whole, rtol=0, atol=0)
    assert model.split_points() == ["embed", *(f"encoder.layers.{i}" for i in range(3))]
    # a position bias every layer reads and trains: no prefix can be cached
    shared = build(EncoderConfig(**SMALL, vocab_size=50, max_len=16, n_classes=3, pos="relative"))
    assert shared.encoder.pos_bias is not None and shared.split_points() == []


def test_training_on_the_cache_takes_the_same_steps(tmp_path) -> None:
    runs = {}
    for cache in (False, True):
        torch.manual_seed(0)
        trainer = _trainer(tmp_path / str(cache), cache)
        grads, losses = [], []
        for _ in range(8):  # two epochs: the second reads the cache
            # the gradients of the last step, read before the optimizer clears them
            trainer.optimizer.zero_grad = lambda set_to_none=True: None  # type: ignore[method-assign]
            logs = trainer.train_step()
            losses.append(logs["loss"])
            grads.append(
                {
                    n: p.grad.clone()
                    for n, p in trainer.model.named_parameters()
                    if p.grad is not None
                }
            )
            for p in trainer.model.parameters():
                p.grad = None
        runs[cache] = losses, grads, trainer.model.state_dict(), trainer
    (l0, g0, w0, plain), (l1, g1, w1, cached) = runs[False], runs[True]
    assert plain.prefix_cache is None and cached.prefix_cache is not None
    pc = cached.prefix_cache
    assert pc.depth == 2  # embed and encoder.layers.0
    # 8 steps of 8 over 32 examples: the first epoch computes, the second reads
    assert len(cached.train_examples) == 32 and (pc.computed, pc.reused) == (32, 32)
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
    assert set(g0[0]) == set(g1[0]) and not any(n.startswith("embed.") for n in g0[0])
    for a, b in zip(g0, g1):
        for n in a:
            torch.testing.assert_close(b[n], a[n], rtol=1e-4, atol=1e-6)
    for n in w0:
        torch.testing.assert_close(w1[n], w0[n], rtol=1e-4, atol=1e-6)
    assert "frozen prefix (embed, encoder.layers.0) cached" in dict(cached.describe())["model"]


def test_the_cache_is_refused_where_the_frozen_layers_are_random(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"cache_frozen: the frozen layers \(embed, encoder"):
        _trainer(tmp_path, True, dropout=0.1)
    with pytest.raises(ValueError, match=r"dropouts to 0 \(--model attn_dropout=0\)"):
        _trainer(tmp_path / "attn", True, attn_dropout=0.1)  # dropout on attention alone
    plain = _trainer(tmp_path / "plain", False, dropout=0.1)  # without the cache: trains
    assert plain.prefix_cache is None and plain.train_step()["loss"] > 0


def test_the_cache_is_refused_with_augmented_batches_or_nothing_frozen(tmp_path) -> None:
    task = _task(tmp_path)
    task.augment = lambda batch: batch  # type: ignore[attr-defined]
    cfg = TrainConfig(steps=1, batch_size=8, progress=False, freeze="embed", cache_frozen=True)
    with pytest.raises(ValueError, match="augments its batches"):
        build_trainer(task, cfg, None, model_overrides=SMALL)
    with pytest.raises(ValueError, match="nothing to cache: freeze a prefix"):
        _trainer(tmp_path / "b", True, freeze="encoder.layers.0")  # not the embeddings


def test_the_frozen_depth_counts_only_a_prefix() -> None:
    model = build(EncoderConfig(**SMALL, vocab_size=50, max_len=16, n_classes=3))
    names = [n for n, _ in model.named_parameters()]

    def under(*mods: str) -> list[str]:
        return [n for n in names if n.startswith(tuple(m + "." for m in mods))]

    assert frozen_depth(model, under("embed", "encoder.layers.0", "encoder.layers.2")) == 2
    assert frozen_depth(model, under("encoder.layers.0")) == 0
    assert frozen_depth(model, under("embed")[:-1]) == 0  # part of a module: not frozen
    assert frozen_depth(torch.nn.Linear(2, 2), names) == 0  # no split points
