"""translate on Debian's translated package descriptions: a hand-made fixture of the apt
file format in two languages, many-to-English splits and per-language scores, and the
option errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qkv.data import debian_parallel
from qkv.models import build
from qkv.tasks import TaskError, TranslateTask

WORDS_EN = ["red", "green", "blue", "small", "large", "fast", "quiet", "bright", "old", "new"]
WORDS_DE = ["rot", "grün", "blau", "klein", "groß", "schnell", "leise", "hell", "alt", "neu"]
WORDS_FR = ["rouge", "vert", "bleu", "petit", "grand", "rapide", "calme", "clair", "vieux", "neuf"]


def _record(lang: str, i: int, synopsis: str, sentence: str) -> str:
    return (
        f"Package: pkg{i}\nDescription-md5: {i:032x}\nDescription-{lang}: {synopsis}\n"
        f" {sentence}\n\n"
    )


@pytest.fixture
def lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """200 descriptions ("tool N": "The tool is red.") in English, German and French."""
    files = {"en": [], "de": [], "fr": []}
    for i in range(200):
        w = i % 10
        files["en"].append(_record("en", i, f"tool {i}", f"The tool {i} is {WORDS_EN[w]}."))
        files["de"].append(
            _record("de", i, f"Werkzeug {i}", f"Das Werkzeug {i} ist {WORDS_DE[w]}.")
        )
        files["fr"].append(_record("fr", i, f"outil {i}", f"L'outil {i} est {WORDS_FR[w]}."))
    for lang, records in files.items():
        (tmp_path / f"x_main_i18n_Translation-{lang}").write_text("".join(records))
    monkeypatch.setattr(debian_parallel, "LISTS_DIR", tmp_path)
    return tmp_path


def test_one_language_by_package(lists: Path) -> None:
    task = TranslateTask({"corpus": "debian", "pair": "de-en", "n_valid": 5, "n_test": 5})
    splits = {s: task.examples(s) for s in ("train", "valid", "test")}
    assert len(splits["valid"]) == len(splits["test"]) == 5
    assert all("Werkzeug" in p.src or "Das" in p.src for s in splits.values() for p in s)
    # a package's synopsis and sentence stay in one split
    for split, pairs in splits.items():
        numbers = {p.src.split()[1 if p.src.startswith("Werkzeug") else 2] for p in pairs}
        others = {p.src for s in splits if s != split for p in splits[s]}
        assert not any(f"Werkzeug {n}" in others for n in numbers)
    assert task.groups == {}  # one language: no per-language scores


def test_many_to_english_scores_each_language(lists: Path) -> None:
    task = TranslateTask(
        {"corpus": "debian", "pair": "de,fr-en", "n_valid": 6, "n_test": 6, "vocab_size": 300}
    )
    test = task.examples("test")
    assert len(test) == 12
    assert sorted(set(task.groups.values())) == ["de", "fr"]
    assert sum(1 for p in test if task.groups[p.src] == "fr") == 6
    torch.manual_seed(0)
    cfg = task.model_config(d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1)
    scores = task.evaluate(build(cfg), "test", batch_size=8)
    for key in ("bleu_de", "chrf_de", "bleu_fr", "chrf_fr"):
        assert key in scores and 0.0 <= scores[key] <= 100.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"corpus": "wmt"}, "corpus must be ding, debian or both"),
        ({"corpus": "debian,debian"}, "corpus must be ding, debian or both"),
        ({"corpus": "debian", "pair": "de"}, "pair must be SOURCE-en"),
        ({"corpus": "debian", "pair": "de-fr"}, "pair must be SOURCE-en"),
        ({"corpus": "debian", "pair": "en-en"}, "pair must be SOURCE-en"),
        ({"corpus": "debian", "pair": "../x-en"}, "pair must be SOURCE-en"),
        ({"corpus": "ding", "pair": "fr-en"}, "corpus ding is German -> English"),
        ({"corpus": "debian", "pair": "it-en"}, r"no \*_i18n_Translation-it\* file"),
    ],
)
def test_option_errors_are_one_line(lists: Path, options: dict, message: str) -> None:
    with pytest.raises(TaskError, match=message):
        TranslateTask(options).examples("train")
