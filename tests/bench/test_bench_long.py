"""``qkv bench long`` and ``qkv bench approx``: the structure of tiny runs (never their
timings), the layers they time, and their errors against exact attention."""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from qkv.bench import (
    ApproxBenchConfig,
    LongBenchConfig,
    long_memory,
    run_approx_bench,
    run_long_bench,
)
from qkv.bench._memory import MMAP_ENV
from qkv.bench._timing import num_threads
from qkv.bench.long import format_long_table
from qkv.bench.long_config import SPEED_IMPLS
from qkv.bench.long_quality import Windows, lm_config
from qkv.bench.long_speed import build_layer
from qkv.cli import main
from qkv.data.tokenizers import CharTokenizer

TINY = {
    "lengths": (64,),
    "d_model": 16,
    "n_heads": 2,
    "window": 16,
    "bucket_size": 8,
    "linformer_k": 8,
    "xl_segment": 8,
    "xl_memory": 16,
    "xl_tokens": 48,
    "lm_d_model": 16,
    "lm_n_heads": 2,
    "lm_n_layers": 1,
    "repeats": 1,
    "warmup": 0,
    "isolate": False,
    "threads": 1,
}


def test_tiny_speed_and_xl_run_has_every_row_and_its_ratios():
    cfg = LongBenchConfig(sections=("speed", "xl"), **TINY)
    result = run_long_bench(cfg)
    rows = result.to_json()["results"]
    speed = [r for r in rows if r["section"] == "speed"]
    assert [r["impl"] for r in speed] == list(SPEED_IMPLS)
    assert all(r["status"] == "ok" and r["length"] == 64 and r["time_s"] > 0 for r in speed)
    assert speed[0]["impl"] == "sdpa" and speed[0]["speedup"] == 1.0
    assert all(r["speedup"] > 0 and r["peak_bytes"] is None for r in speed)  # in-process: no RSS
    xl = {r["impl"]: r for r in rows if r["section"] == "xl"}
    assert set(xl) == {"recompute", "memory"} and xl["recompute"]["speedup"] == 1.0
    # the same context either way (no training needed): the same bits per character
    assert xl["memory"]["bpc"] == pytest.approx(xl["recompute"]["bpc"], rel=1e-4)
    assert 0 < xl["memory"]["bpc"] < 9  # an untrained model over 256 symbols: about 8
    table = format_long_table(result).splitlines()
    assert table[2].split()[:4] == ["section", "impl", "length", "mode"]
    assert len(table) == 3 + len(rows) + 2
    json.dumps(result.to_json())


@pytest.mark.parametrize("impl", ["blocksparse", "lsh", "favor"])
def test_timed_causal_layers_do_not_see_the_future(impl):
    """The causal layers the speed section times: changing the last token leaves the
    earlier outputs alone (LSH with a fixed hashing seed so both calls hash alike)."""
    cfg = asdict(LongBenchConfig(**TINY, favor_features=8))
    torch.manual_seed(0)
    layer, kw = build_layer(impl, cfg, 64)
    if impl == "lsh":
        layer.seed = 0
    x = torch.randn(1, 64, 16)
    y = x.clone()
    y[:, -1] += 1.0
    a, b = layer(x, **kw), layer(y, **kw)
    assert a.shape == (1, 64, 16)
    torch.testing.assert_close(a[:, :-1], b[:, :-1], atol=1e-5, rtol=0)
    assert not torch.allclose(a[:, -1], b[:, -1])


def _memory_here(monkeypatch) -> list[tuple[str, dict, dict | None]]:
    """Run the rows' memory subprocesses in this process (each measurement as the
    subprocess makes it); the calls are recorded."""
    calls = []

    def here(module, spec, timeout, env=None):
        calls.append((module, spec, env))
        assert callable(importlib.import_module(module)._worker)
        with num_threads(None):  # the measurement sets its threads: keep this process's
            return json.loads(json.dumps(long_memory.measure(spec)))

    monkeypatch.setattr("qkv.bench.long_memory.run_isolated", here)
    return calls


def test_xl_rows_get_their_peak_memory_from_a_subprocess_each(monkeypatch):
    calls = _memory_here(monkeypatch)
    cfg = LongBenchConfig(sections=("xl",), **{**TINY, "isolate": True})
    result = run_long_bench(cfg)
    rows = {r.impl: r for r in result.measurements}
    assert [(c[0], c[1]["reuse"], c[2]) for c in calls] == [
        ("qkv.bench.long_memory", False, MMAP_ENV),
        ("qkv.bench.long_memory", True, MMAP_ENV),
    ]
    assert calls[0][1]["model"]["mem_len"] == 16 and calls[0][1]["tokens"] == 48
    assert all(isinstance(r.peak_bytes, int) and r.reason == "" for r in rows.values())
    if rows["recompute"].peak_bytes:
        assert rows["recompute"].memory_ratio == 1.0
        ratio = rows["memory"].peak_bytes / rows["recompute"].peak_bytes
        assert rows["memory"].memory_ratio == pytest.approx(ratio)
    assert "MALLOC_MMAP_THRESHOLD_" in result.memory_method and "xl, a 2nd" in result.memory_method


def test_speed_rows_time_in_one_subprocess_and_measure_memory_in_another(monkeypatch):
    """The timed subprocess keeps glibc's default allocator; the peak comes from a second
    one with MMAP_ENV that measures one call after a first (both run here, recorded)."""
    calls = []

    def here(module, spec, timeout, env=None):
        what = spec["impl"] if spec.get("memory_pass") else spec["impls"]
        calls.append((module, spec.get("memory_pass", False), what, env))
        with num_threads(None):
            return json.loads(json.dumps(importlib.import_module(module)._measure(spec)))

    monkeypatch.setattr("qkv.bench.long_speed.run_isolated", here)
    settings = {**TINY, "isolate": True, "repeats": 3, "min_repeats": 3}
    cfg = LongBenchConfig(sections=("speed",), **settings, impls=("sdpa", "math", "lsh"))
    rows = run_long_bench(cfg).measurements
    assert calls == [
        ("qkv.bench.long_speed", False, ["sdpa", "math", "lsh"], None),  # interleaved, together
        ("qkv.bench.long_speed", True, "sdpa", MMAP_ENV),
        ("qkv.bench.long_speed", True, "math", MMAP_ENV),
        ("qkv.bench.long_speed", True, "lsh", MMAP_ENV),
    ]
    assert all(r.status == "ok" and r.repeats == 3 and isinstance(r.peak_bytes, int) for r in rows)
    sdpa, math_row, _ = rows
    pairs = [a / b for a, b in zip(sdpa.times_s, math_row.times_s, strict=True)]
    assert sdpa.speedup == 1.0 and math_row.speedup == pytest.approx(sorted(pairs)[1])
    assert sdpa.memory_ratio in (None, 1.0)


def test_a_layer_that_fails_is_reported_and_the_others_are_timed(monkeypatch):
    def broken(impl, cfg, length):
        if impl == "lsh":
            raise RuntimeError("no memory left")
        return build_layer(impl, cfg, length)

    monkeypatch.setattr("qkv.bench.long_speed.build_layer", broken)
    cfg = LongBenchConfig(sections=("speed",), **TINY, impls=("sdpa", "lsh", "favor"))
    rows = {r.impl: r for r in run_long_bench(cfg).measurements}
    assert rows["lsh"].status == "error" and "RuntimeError: no memory left" in rows["lsh"].reason
    assert rows["sdpa"].status == rows["favor"].status == "ok" and rows["favor"].speedup > 0


@pytest.mark.slow
def test_speed_rows_peak_is_the_layers_own():
    """Real subprocesses: the math backend keeps a (b, h, s, s) score matrix and its
    softmax for backward, SDPA's fused kernel O(s) rows: at 1024 tokens and 2 heads the
    difference is several 8 MiB matrices, far above the allocator's noise."""
    cfg = LongBenchConfig(
        sections=("speed",), **{**TINY, "isolate": True, "lengths": (1024,)}, impls=("sdpa", "math")
    )
    sdpa, math_row = run_long_bench(cfg).measurements
    score_bytes = 2 * 1024 * 1024 * 4
    assert math_row.peak_bytes - sdpa.peak_bytes > 2 * score_bytes, (sdpa, math_row)
    assert sdpa.peak_bytes < score_bytes  # the fused kernel never holds the scores
    assert math_row.memory_ratio > 3


def test_quality_rows_get_the_peak_of_a_training_step(monkeypatch):
    calls = _memory_here(monkeypatch)
    text = "In the beginning God created the heaven and the earth. " * 40
    cfg = LongBenchConfig(
        sections=("quality",), quality_impls=("sdpa", "local"), context=32, train_time=0.2,
        train_batch_size=2, valid_chunks=1, **{**TINY, "isolate": True, "lengths": (64,)},
    )  # fmt: skip
    rows = run_long_bench(cfg, text=text).measurements
    assert [c[1]["kind"] for c in calls] == ["sdpa", "local"]
    assert calls[0][1]["vocab"] == CharTokenizer.train([text]).vocab_size
    assert calls[0][1]["settings"]["context"] == 32
    for r in rows:
        assert r.status == "ok" and r.peak_bytes > 0, r  # two steps of AdamW at least
    assert rows[0].memory_ratio == 1.0
    assert rows[1].memory_ratio == pytest.approx(rows[1].peak_bytes / rows[0].peak_bytes)


def test_without_isolate_nothing_is_measured_and_the_method_says_so():
    cfg = LongBenchConfig(sections=("xl",), **TINY)
    result = run_long_bench(cfg)
    assert all(r.peak_bytes is None for r in result.measurements)
    assert result.memory_method == "not measured (isolate=False on CPU)"


def test_dense_layers_agree_with_exact_attention():
    """sdpa and math rows time the same function: one layer, both backends."""
    torch.manual_seed(0)
    cfg = asdict(LongBenchConfig(**TINY))
    sdpa, kw = build_layer("sdpa", cfg, 64)
    math_layer, _ = build_layer("math", cfg, 64)
    math_layer.load_state_dict(sdpa.state_dict())
    x = torch.randn(2, 64, 16)
    torch.testing.assert_close(sdpa(x, **kw), math_layer(x, **kw), atol=1e-5, rtol=1e-5)


def test_config_names_bad_values():
    with pytest.raises(ValueError, match=r"impls .*\['nope'\]"):
        LongBenchConfig(impls=("nope",))
    with pytest.raises(ValueError, match="train_time must be > 0, got 0"):
        LongBenchConfig(train_time=0)
    with pytest.raises(ValueError, match="d_model=30 n_heads=8"):
        LongBenchConfig(d_model=30)
    with pytest.raises(ValueError, match="quality_impls"):
        LongBenchConfig(quality_impls=("linformer",))  # no causal form


def test_quality_needs_a_text():
    with pytest.raises(ValueError, match="needs a training text"):
        run_long_bench(LongBenchConfig(sections=("quality",), **TINY))


def test_windows_are_random_slices_of_the_text():
    ids = list(range(100))
    w = Windows(ids, 5, 11, torch.Generator().manual_seed(0))
    assert len(w) == 5 and len(w[1:3]) == 2
    for win in w:
        assert len(win) == 11 and win == list(range(win[0], win[0] + 11))


def test_quality_models_differ_only_in_their_attention():
    cfg = LongBenchConfig(**TINY)
    kinds = ("sdpa", "local", "lsh", "xl")
    configs = {k: lm_config(k, vocab=40, context=64, settings=cfg) for k in kinds}
    assert configs["sdpa"].attn_kind == "softmax" and configs["lsh"].attn_kind == "lsh"
    assert configs["sdpa"].sliding_window == 0
    assert configs["local"].sliding_window == cfg.window
    assert configs["local"].attn_backend == "blocksparse"
    assert configs["xl"].pos == "xl" and configs["xl"].segment_len == 8
    for c in configs.values():
        assert (c.d_model, c.n_layers, c.vocab_size, c.dropout) == (16, 1, 40, 0.0)


@pytest.mark.slow
def test_tiny_quality_run_trains_every_kind(tmp_path):
    text = "In the beginning God created the heaven and the earth. " * 200
    cfg = LongBenchConfig(
        sections=("quality", "xl"), context=32, train_time=1.0, train_batch_size=2, valid_chunks=2,
        **{k: v for k, v in TINY.items() if k != "lengths"},
    )  # fmt: skip
    rows = run_long_bench(cfg, text=text).measurements
    assert [r.impl for r in rows] == [*cfg.quality_impls, "recompute", "memory"]
    quality, (recompute, memory) = rows[:-2], rows[-2:]
    # the trained XL model on the held-out text: the same context either way
    assert recompute.mode == memory.mode == "trained"
    assert memory.bpc == pytest.approx(recompute.bpc, rel=1e-4)
    assert memory.bpc == pytest.approx(quality[-1].bpc, rel=0.5)
    for r in quality:
        assert r.status == "ok" and r.train_s is not None and r.tokens_per_s > 0
        assert 0 < r.bpc < math.log2(40)  # below the uniform guess over the characters


# ---------------------------------------------------------------------------------------
# approx
# ---------------------------------------------------------------------------------------
def test_favor_error_falls_with_more_features():
    cfg = ApproxBenchConfig(
        sizes=(4, 64, 256), length=64, head_dim=16, n_heads=2, trials=2, input_std=0.5
    )
    rows = run_approx_bench(cfg).measurements
    assert [r.size for r in rows] == [4, 64, 256]
    assert rows[2].error < rows[1].error < rows[0].error
    assert rows[2].error < 0.25 * rows[0].error  # Monte Carlo: about 1/sqrt(m)
    assert all(r.method == "favor" and r.trials == 2 for r in rows)


def test_linformer_pooling_to_full_length_is_exact_attention():
    """Independent check: pooling windows of one key are the identity, so the error
    against exact attention is zero; halving the length is not."""
    cfg = ApproxBenchConfig(
        method="linformer", sizes=(16, 64), length=64, head_dim=8, n_heads=2, trials=1
    )
    small, full = run_approx_bench(cfg).measurements
    assert full.error < 1e-5 < small.error
    q, k, v = torch.randn(3, 1, 2, 64, 8).unbind(0)
    exact = F.scaled_dot_product_attention(q, k, v)
    pooled = F.avg_pool1d(k.flatten(0, 1).transpose(1, 2), 1).transpose(1, 2).view_as(k)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, pooled, v), exact)


def test_approx_config_rejects_bad_values():
    with pytest.raises(ValueError, match="method"):
        ApproxBenchConfig(method="nystrom")
    with pytest.raises(ValueError, match="sizes"):
        ApproxBenchConfig(sizes=(0,))


# ---------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------
def test_cli_approx_writes_json_and_the_table(tmp_path, capsys):
    out = tmp_path / "a.json"
    argv = ["bench", "approx", "--sizes", "4,16", "--length", "32", "--head-dim", "8"]
    assert main([*argv, "--trials", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "approx" and [r["size"] for r in data["results"]] == [4, 16]
    assert "favor: relative error" in capsys.readouterr().out


def test_cli_long_runs_tiny_xl(tmp_path, capsys):
    out = tmp_path / "l.json"
    argv = ["bench", "long", "--sections", "xl", "--xl-segment", "8", "--xl-memory", "16"]
    argv += ["--xl-tokens", "32", "--lm-d-model", "16", "--lm-n-heads", "2"]
    argv += ["--lm-n-layers", "1", "--repeats", "1", "--warmup", "0", "--json", str(out)]
    assert main([*argv, "--no-isolate"]) == 0  # memory subprocesses: the tests above
    data = json.loads(out.read_text())
    assert data["config"]["xl_memory"] == 16
    assert [r["impl"] for r in data["results"]] == ["recompute", "memory"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["long", "--train-time", "0"], "train_time must be > 0, got 0.0"),
        (["long", "--impls", "dense"], "impls must be a non-empty subset"),
        (["long", "--lengths", "4096,x"], "--lengths"),
        (["long", "--n-heads", "3"], "heads must divide the widths"),
        (["approx", "--method", "nystrom"], "--method"),
        (["approx", "--sizes", "0"], "sizes"),
    ],
)
def test_cli_bad_values_are_one_line_errors(argv, message, capsys):
    try:
        code = main(["bench", *argv])
    except SystemExit as e:  # argparse's own errors exit from the parser
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qkv: error: ") and message in err and "\n" not in err
