"""``qkv bench train``'s peak memory of a step (a fresh subprocess per row) and the real
nanoGPT as a peer (a stand-in ``model.py`` of nanoGPT's interface: the real one cannot be
downloaded here). Sizes of tiny models are never compared; the method is checked on
allocations of known size."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from qkv.bench import _memory
from qkv.bench._timing import num_threads
from qkv.bench._train_steps import measure_step_memory
from qkv.bench._twins import count_parameters, load_nanogpt
from qkv.bench.train import TrainBenchConfig, format_train_table, run_train_bench
from qkv.cli import main

TINY = {"d_model": 32, "n_heads": 2, "n_layers": 2, "vocab_size": 64}
FAST = {"repeats": 1, "warmup": 1, "threads": 1, "matmul_size": 32, "seq_lens": (8,), "tokens": 16}
MIB = 2**20

#: nanoGPT's interface (karpathy/nanoGPT's model.py: ``GPTConfig``, ``GPT(config)``,
#: ``forward(idx, targets) -> (logits, loss)``, a print of the parameter count), written
#: here from torch.nn
NANOGPT_STANDIN = """
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c.n_embd
        self.ln_1 = nn.LayerNorm(d, bias=c.bias)
        self.attn = nn.MultiheadAttention(d, c.n_head, c.dropout, c.bias, batch_first=True)
        self.ln_2 = nn.LayerNorm(d, bias=c.bias)
        self.mlp = nn.Sequential(
            nn.Linear(d, 4 * d, bias=c.bias), nn.GELU(), nn.Linear(4 * d, d, bias=c.bias)
        )

    def forward(self, x):
        t = x.size(1)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=future, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight
        print("number of parameters: %.2fM" % (sum(p.numel() for p in self.parameters()) / 1e6,))

    def forward(self, idx, targets=None):
        b, t = idx.size()
        assert t <= self.config.block_size
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss
"""


@pytest.fixture
def nanogpt(tmp_path: Path) -> Path:
    """A nanoGPT "checkout": a folder holding the stand-in model.py."""
    (tmp_path / "nanoGPT").mkdir()
    (tmp_path / "nanoGPT" / "model.py").write_text(NANOGPT_STANDIN)
    return tmp_path / "nanoGPT"


def _standin_parameters(folder: Path, max_len: int) -> int:
    """The stand-in's parameter count, from a module imported here on its own."""
    spec = importlib.util.spec_from_file_location("standin_for_count", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.GPTConfig(block_size=max_len, vocab_size=64, n_layer=2, n_head=2, n_embd=32)
    return count_parameters(module.GPT(cfg))


# ---------------------------------------------------------------------------------------
# every row gets its memory
# ---------------------------------------------------------------------------------------
# 13 s: a memory subprocess per row
@pytest.mark.slow
def test_every_row_gets_its_peak_and_its_ratio_from_a_memory_subprocess(nanogpt, monkeypatch):
    """The rows' memory subprocesses, run here (each measurement as the subprocess makes
    it): every row that ran has a peak and a ratio to its qkv twin's."""
    pytest.importorskip("transformers")
    calls = []

    def here(module, spec, timeout, env=None):
        calls.append((module, spec["model"], env))
        with num_threads(None):  # the measurement sets its threads: keep this process's
            return json.loads(json.dumps(measure_step_memory(spec)))

    monkeypatch.setattr("qkv.bench.train.run_isolated", here)
    models = ("qkv", "nanogpt", "nanogpt_real", "x_transformers", "hf_gpt2", "torch_gpt",
              "qkv_bart", "hf_bart")  # fmt: skip
    cfg = TrainBenchConfig(**TINY, **FAST, models=models, nanogpt=str(nanogpt))
    result = run_train_bench(cfg)
    ran = [r for r in result.measurements if r.status == "ok"]
    assert [c[1] for c in calls] == [r.model for r in ran]
    assert {c[0] for c in calls} == {"qkv.bench._train_steps"}
    assert all(c[2] == _memory.MMAP_ENV for c in calls)
    assert {"qkv", "nanogpt_real", "hf_gpt2", "hf_bart"} <= {r.model for r in ran}
    for r in ran:
        assert isinstance(r.peak_bytes, int) and r.peak_bytes >= 0, r
        twin = next(t for t in ran if t.model == r.twin)
        if twin.peak_bytes:
            assert r.memory_vs_qkv == pytest.approx(r.peak_bytes / twin.peak_bytes)
    data = result.to_json()
    assert "MALLOC_MMAP_THRESHOLD_" in data["memory_method"]
    assert all({"peak_bytes", "memory_vs_qkv"} <= set(r) for r in data["results"])
    table = format_train_table(result)
    assert "peak MiB" in table and "mem/qkv" in table and "peak memory: a fresh" in table


# 14 s: a real training step in a subprocess
@pytest.mark.slow
def test_memory_subprocess_measures_a_real_step():
    """One row end to end, in its own subprocess: a step of a model whose activations
    and state are far above the noise of a page or two."""
    cfg = TrainBenchConfig(
        d_model=64, n_heads=2, n_layers=1, vocab_size=4096, models=("qkv",),
        **{**FAST, "seq_lens": (64,), "tokens": 512},
    )  # fmt: skip
    (row,) = run_train_bench(cfg).measurements
    assert row.status == "ok" and row.reason == "" and row.memory_vs_qkv == 1.0
    # the logits alone: (512, 4096) fp32 = 8 MiB, and cross-entropy keeps their softmax
    assert 16 * MIB < row.peak_bytes < 512 * MIB


def test_no_memory_leaves_the_columns_empty_and_says_so():
    cfg = TrainBenchConfig(**TINY, **FAST, models=("qkv", "nanogpt"), memory=False)
    result = run_train_bench(cfg)
    assert all(r.peak_bytes is None and r.memory_vs_qkv is None for r in result.measurements)
    assert result.to_json()["memory_method"].startswith("not measured")


# ---------------------------------------------------------------------------------------
# the real nanoGPT as a peer
# ---------------------------------------------------------------------------------------
def test_nanogpt_row_trains_the_checkouts_gpt(nanogpt, capsys):
    cfg = TrainBenchConfig(
        **TINY, **FAST, models=("qkv", "nanogpt_real"), nanogpt=str(nanogpt), memory=False
    )
    rows = {r.model: r for r in run_train_bench(cfg).measurements}
    assert "number of parameters" not in capsys.readouterr().out  # its print is swallowed
    real = rows["nanogpt_real"]
    assert real.status == "ok" and real.twin == "qkv" and "nanoGPT" in real.description
    assert math.isfinite(real.loss) and abs(real.loss - math.log(64)) < 0.5  # at the start
    assert real.parameters == _standin_parameters(nanogpt, max_len=8)
    assert real.parameters == rows["qkv"].parameters  # the same shape
    assert real.qkv_speedup > 0 and real.tokens_per_s > 0


# 10 s: two bench runs; the row itself is tested fast in test_nanogpt_row_trains_the_checkouts_gpt
@pytest.mark.slow
def test_nanogpt_row_is_absent_without_a_checkout_or_with_another_width(nanogpt):
    plain = TrainBenchConfig(**TINY, **FAST, models=("qkv", "nanogpt_real"), memory=False)
    assert [r.model for r in run_train_bench(plain).measurements] == ["qkv"]
    wide = TrainBenchConfig(
        **TINY, **FAST, d_ff=48, models=("qkv", "nanogpt_real"), nanogpt=str(nanogpt / "model.py"),
        memory=False,
    )  # fmt: skip
    real = {r.model: r for r in run_train_bench(wide).measurements}["nanogpt_real"]
    assert real.status == "n/a" and "4 d = 128" in real.reason and "d_ff=48" in real.reason


@pytest.mark.slow
def test_nanogpt_row_compiles_like_the_others_and_gets_its_memory(nanogpt):
    cfg = TrainBenchConfig(
        **TINY, **FAST, models=("qkv", "nanogpt_real"), nanogpt=str(nanogpt), compile=True
    )
    result = run_train_bench(cfg)
    rows = {r.model: r for r in result.measurements}
    for r in rows.values():
        assert r.status == "ok" and r.reason == "" and r.compile_s is not None, r
        assert math.isfinite(r.loss) and r.peak_bytes is not None and r.memory_vs_qkv > 0
    # the compiler's start-up was paid by a throwaway model before the first row, and said
    assert result.compiler_startup_s > 0
    assert result.to_json()["compiler_startup_s"] == result.compiler_startup_s
    assert "compiler start-up" in format_train_table(result)


def test_a_bad_checkout_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match=f"no model.py in '{tmp_path}'"):
        TrainBenchConfig(nanogpt=str(tmp_path))
    (tmp_path / "model.py").write_text("class GPTConfig: pass\n")
    with pytest.raises(ValueError, match="defines no GPT:"):
        load_nanogpt(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.py").write_text("import no_such_module_here\n")
    with pytest.raises(ValueError, match="importing .*ModuleNotFoundError"):
        load_nanogpt(tmp_path / "sub")


def test_cli_nanogpt_without_gpt_is_one_line_naming_the_flag_and_file(tmp_path, capsys):
    (tmp_path / "model.py").write_text("GPT = None\n")
    with pytest.raises(SystemExit) as e:
        main(["bench", "train", "--nanogpt", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and err.startswith("qkv: error: ")
    assert "--nanogpt" in err and str(tmp_path / "model.py") in err and "GPTConfig" in err


def test_cli_train_with_nanogpt_writes_its_row(nanogpt, tmp_path, capsys):
    out = tmp_path / "t.json"
    argv = ["bench", "train", "--models", "qkv,nanogpt_real", "--nanogpt", str(nanogpt)]
    argv += ["--d-model", "32", "--n-heads", "2", "--n-layers", "1", "--vocab-size", "64"]
    argv += ["--seq-lens", "8", "--tokens", "16", "--matmul-size", "32", "--repeats", "1"]
    argv += ["--min-repeats", "1", "--warmup", "0", "--threads", "1", "--no-memory"]
    assert main([*argv, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["nanogpt"] == str(nanogpt) and data["config"]["memory"] is False
    assert [r["model"] for r in data["results"]] == ["qkv", "nanogpt_real"]
    assert "nanogpt_real" in capsys.readouterr().out
