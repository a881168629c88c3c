"""Swin on the image tasks: ``--preset swin`` (the task's own Swin, at the ViT's parameter
count), Swin presets sized to the task, and a short training run from the command line."""

from __future__ import annotations

import json

import pytest

import qkv.models as M
from qkv.cli import main
from qkv.tasks.run import load_trained
from qkv.tasks.vision.digits import DigitsTask
from qkv.tasks.vision.fashion_mnist import FashionMNISTTask


@pytest.mark.parametrize(
    ("task", "patch", "tolerance"), [(DigitsTask, 1, 0.1), (FashionMNISTTask, 4, 0.02)]
)
def test_the_tasks_swin_has_about_the_vits_parameters(task, patch, tolerance) -> None:
    t = task()
    swin = t.model_config("swin")
    assert isinstance(swin, M.SwinConfig)
    assert (swin.image_size, swin.patch_size, swin.in_channels, swin.n_classes) == (
        t.image_size, patch, 1, 10,
    )  # fmt: skip
    vit = t.model_config()
    assert isinstance(vit, M.ViTConfig)
    n_swin, n_vit = M.parameter_count(swin), M.parameter_count(vit)
    assert abs(n_swin - n_vit) <= tolerance * n_vit, (n_swin, n_vit)
    assert swin.stage_grids[0] > swin.window_size  # the first stage really has windows


def test_swin_presets_and_overrides_are_sized_to_the_task() -> None:
    t = DigitsTask()
    cfg = t.model_config("swin-tiny")
    assert isinstance(cfg, M.SwinConfig) and (cfg.image_size, cfg.patch_size) == (8, 1)
    cfg = t.model_config("swin", depths=[1, 1, 1], d_model=16)
    assert cfg.depths == [1, 1, 1] and cfg.stage_grids == [8, 4, 2]
    model = M.build(cfg)
    batch = t.collate([t.examples("train")[i] for i in range(4)])
    assert model(batch["inputs"]).shape == (4, 10)


def test_train_and_eval_a_swin_from_the_command_line(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "--task", "digits", "--preset", "swin", "--model", "depths=[1,1]",
            "--steps", "3", "--batch-size", "16", "--no-progress", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    model, task = load_trained(run)
    assert isinstance(model, M.Swin) and model.config.depths == [1, 1] and task.name == "digits"
    assert main(["eval", "--checkpoint", str(run), "--json", "--limit", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 <= out["accuracy"] <= 100
