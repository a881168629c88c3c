"""The README's "Your own data" examples run as written, on real text and real pairs, and
learn: each code block is executed in a fresh directory holding the files it reads."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from qkv.data import grammar

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    from pydoc_data.topics import topics

    lines = [line for k in sorted(topics) for line in topics[k].splitlines() if line.strip()]
    (tmp_path / "poems.txt").write_text("\n".join(lines[:2000]) + "\n", encoding="utf-8")
    pairs = grammar.make_splits({"test": 0, "valid": 0, "train": 1500}, seed=1)["train"]
    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), "utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    return tmp_path


# 28 s: trains on every README data example
@pytest.mark.slow
def test_your_own_data_examples_run_and_learn(data_dir, capsys):
    lm, seq2seq = _blocks("Your own data")
    for code in (lm, seq2seq):
        assert len([line for line in code.splitlines() if line.strip()]) < 15
    ns: dict = {}
    exec(compile(lm, "README: language model", "exec"), ns)
    assert (data_dir / "my-lm" / "tokenizer.json").is_file() and ns["out"].ids.shape == (1, 40)
    uniform = math.log(ns["tok"].vocab_size)  # nats per character of a model that knows nothing
    assert ns["summary"]["train_loss"] < uniform - 1.0, (ns["summary"], uniform)
    ns = {}
    exec(compile(seq2seq, "README: sequence to sequence", "exec"), ns)
    valid = ns["summary"]["valid"]
    assert valid["token_acc"] > 50 and valid["loss"] < 2.0, valid
    assert capsys.readouterr().out.count("\n") >= 3
