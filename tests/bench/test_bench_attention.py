"""``qkv bench attention``: the structure of a tiny run (never its timings)."""

from __future__ import annotations

import json

import pytest

from qkv.bench import AttentionBenchConfig, run_attention_bench
from qkv.bench.attention import estimate_bytes, format_table
from qkv.cli import main

KEYS = {
    "length",
    "mask",
    "impl",
    "mode",
    "status",
    "reason",
    "time_s",
    "time_min_s",
    "repeats",
    "peak_bytes",
    "speedup_vs_sdpa",
    "memory_vs_sdpa",
}


def test_tiny_in_process_run_has_every_row_and_ratios():
    cfg = AttentionBenchConfig(
        lengths=(64, 96),
        masks=("window", "bigbird"),
        window=16,
        impls=("math", "sdpa", "flex", "blocksparse"),
        n_heads=2,
        head_dim=8,
        modes=("fwdbwd",),
        repeats=1,
        warmup=0,
        isolate=False,
    )
    result = run_attention_bench(cfg)
    rows = result.to_json()["results"]
    assert len(rows) == 2 * 2 * 4
    assert all(set(r) == KEYS for r in rows)
    by = {(r["length"], r["mask"], r["impl"]): r for r in rows}
    for s in (64, 96):
        for mask in ("window", "bigbird"):
            assert by[(s, mask, "sdpa")]["speedup_vs_sdpa"] == 1.0
            for impl in ("math", "blocksparse"):
                r = by[(s, mask, impl)]
                assert r["status"] == "ok" and r["repeats"] == 1 and r["time_s"] > 0
                assert r["peak_bytes"] is None  # CPU memory needs isolate=True
            flex = by[(s, mask, "flex")]  # no backward on CPU
            assert flex["status"] == "n/a" and "no backward on CPU" in flex["reason"]
    assert "not measured" in result.memory_method
    table = format_table(result)
    assert "x sdpa" in table.splitlines()[3] and len(table.splitlines()) == 4 + len(rows)


def test_isolated_run_measures_peak_memory():
    cfg = AttentionBenchConfig(
        lengths=(128,),
        masks=("window",),
        impls=("blocksparse",),
        modes=("fwd",),
        n_heads=1,
        head_dim=8,
        window=8,
        repeats=1,
        warmup=0,
    )
    (m,) = run_attention_bench(cfg).measurements
    assert m.status == "ok", m.reason
    assert isinstance(m.peak_bytes, int) and m.peak_bytes >= 0


def test_configurations_that_cannot_fit_are_skipped_with_a_reason():
    cfg = AttentionBenchConfig(
        lengths=(65536,),
        masks=("causal",),
        impls=("math", "sdpa"),
        modes=("fwdbwd",),
        memory_limit=2**30,
        isolate=False,
    )
    rows = run_attention_bench(cfg).measurements
    assert [m.status for m in rows] == ["n/a", "n/a"]
    assert all(m.reason.startswith("needs ~") and "> limit 1.0 GiB" in m.reason for m in rows)
    # dense at 65k, 8 heads: one fp32 score matrix alone is 128 GiB
    assert estimate_bytes("sdpa", "fwdbwd", 1, 8, 65536, 64, 4) > 128 * 2**30
    assert estimate_bytes("blocksparse", "fwdbwd", 1, 8, 65536, 64, 4) < 4 * 2**30


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"masks must be a non-empty subset of .* got \['nope'\]"):
        AttentionBenchConfig(masks=("nope",))
    with pytest.raises(ValueError, match="window must be a positive int, got 0"):
        AttentionBenchConfig(window=0)
    with pytest.raises(ValueError, match=r"lengths must be positive ints, got \[0\]"):
        AttentionBenchConfig(lengths=(0,))


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "attention",
        "--lengths",
        "64",
        "--masks",
        "causal",
        "--impls",
        "sdpa,blocksparse",
    ]
    argv += ["--n-heads", "1", "--head-dim", "8", "--mode", "fwd", "--repeats", "1", "--no-isolate"]
    assert main([*argv, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data) == {"config", "memory_method", "environment", "results"}
    assert [r["impl"] for r in data["results"]] == ["sdpa", "blocksparse"]
    assert data["config"]["lengths"] == [64]
    assert "blocksparse" in capsys.readouterr().out
    assert main(["bench", "attention", "--masks", "nope", "--no-isolate"]) == 2
    assert "masks must be a non-empty subset" in capsys.readouterr().err
    assert main(["bench"]) == 0 and "attention" in capsys.readouterr().out
