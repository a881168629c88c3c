"""A model family added from outside qkv: one folder (a package written under ``tmp_path``)
and one :class:`~qkv.models.Family` record, registered with :func:`qkv.models.register`,
and every part of qkv works with it: ``build``, ``save_pretrained``/``qkv.load``, the
memory check, the trainer's default objective and ``qkv info``. No qkv file knows it."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

import qkv
import qkv.models as M
from qkv import cli
from qkv.models import memory
from qkv.training import TrainConfig, Trainer

TOY = '''
"""A toy family: a stack of residual ReLU layers classifying feature vectors."""

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from qkv.models import Family, TransformerConfig, TransformerModel, register
from qkv.models.config import check_parameters, check_size


@dataclass
class ToyConfig(TransformerConfig):
    family: ClassVar[str] = "toy"

    d_model: int = 16
    n_heads: int = 2
    d_ff: int = 32
    n_features: int = 6
    n_classes: int = 3
    n_layers: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_features", "n_classes", "n_layers"):
            check_size(name, getattr(self, name))
        check_parameters(self)


class Toy(TransformerModel):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        d = config.d_model
        self.embed = nn.Linear(config.n_features, d)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(d, config.d_ff), nn.ReLU(), nn.Linear(config.d_ff, d))
            for _ in range(config.n_layers)
        )
        self.head = nn.Linear(d, config.n_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h = h + layer(h)
        return self.head(h)


FAMILY = register(
    Family(
        name="toy",
        config_class=ToyConfig,
        model_class=Toy,
        objective="classification",
        presets={"toy-tiny": {"d_model": 8, "d_ff": 16}},
        default_preset="toy-tiny",
        summary="a toy family registered by a test",
        depth_fields=("n_layers",),
    )
)
'''


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    root = tmp_path_factory.mktemp("plugin")
    (root / "qkv_toy_family").mkdir()
    (root / "qkv_toy_family" / "__init__.py").write_text(textwrap.dedent(TOY))
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("qkv_toy_family")
    finally:
        M.family.unregister("toy")
        sys.modules.pop("qkv_toy_family", None)
        sys.path.remove(str(root))


def test_build_and_presets(toy: ModuleType) -> None:
    cfg = M.preset_config("toy-tiny")
    assert isinstance(cfg, toy.ToyConfig) and cfg.d_model == 8
    assert "toy-tiny" in M.preset_names()
    model = M.build(cfg)
    assert isinstance(model, toy.Toy)
    # counts from the model on meta, extended from one and two layers
    assert M.parameter_count(cfg) == M.count_parameters(model) == 6 * 8 + 8 + 2 * 280 + 27
    deep = toy.ToyConfig(n_layers=40)
    with torch.device("meta"):
        assert M.parameter_count(deep) == M.count_parameters(M.build(deep))


def test_save_and_load(toy: ModuleType, tmp_path: Path) -> None:
    model = M.from_preset("toy-tiny")
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["family"] == "toy"
    again = qkv.load(tmp_path)
    assert isinstance(again, toy.Toy) and again.config == model.config
    x = torch.randn(4, 6)
    assert torch.equal(model.eval()(x), again(x))


def test_the_memory_check(toy: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"ToyConfig describes a model of [\d,]+ parameters"):
        toy.ToyConfig(d_model=2**20, d_ff=2**20, n_layers=1000)
    cfg = toy.ToyConfig(d_model=4096, d_ff=16384, n_layers=64)  # 8.6e9 parameters
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 2**30)
    with pytest.raises(M.MemoryLimitError, match=r"\(32.0 GiB\) does not fit in the 0.9 GiB"):
        M.build(cfg)


def test_trainer_picks_the_family_objective(toy: ModuleType) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(64, 6, generator=g)
    data = [(x, int(x[0] > 0) + int(x[1] > 0)) for x in xs]
    model = M.from_preset("toy-tiny")
    trainer = Trainer(model, data, data, config=TrainConfig(steps=60, batch_size=16, lr=1e-2))
    before = trainer.evaluate()
    trainer.fit()
    after = trainer.evaluate()
    assert after["loss"] < before["loss"]


def test_qkv_info(toy: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info", "toy-tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "toy" and info["model"] == "Toy"
    assert info["summary"] == "a toy family registered by a test"
    assert info["parameters"] == 6 * 8 + 8 + 2 * 280 + 27
