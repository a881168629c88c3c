"""Peer benchmarks (``qkv bench peers|train|generate|record``): the structure of tiny runs
and the helpers they share. Timings are never asserted, only that every ratio is a positive
finite number."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

import pytest
import torch

from qkv.bench._timing import num_threads, paired_ratio, time_interleaved
from qkv.bench._train_steps import cold_first_step, loss_fn, make_batch, train_step
from qkv.bench._twins import (
    ModelShape,
    TorchGPT,
    count_parameters,
    paper_gpt,
    qkv_lm,
    qkv_seq2seq,
)
from qkv.bench.attention_peers import (
    PEER_IMPLS,
    PeerAttentionConfig,
    format_peer_table,
    impl_flops,
    naive_attention,
    run_peer_attention_bench,
)
from qkv.bench.generate import GenerateBenchConfig, format_generate_table, run_generate_bench
from qkv.bench.record import (
    RECORD_IMPLS,
    RECORD_OPTIONS,
    RecordBenchConfig,
    format_record_table,
    run_record_bench,
)
from qkv.bench.train import TrainBenchConfig, format_train_table, run_train_bench, step_flops
from qkv.cli import main

TINY = {"d_model": 32, "n_heads": 2, "n_layers": 2, "vocab_size": 64}
FAST = {"repeats": 2, "warmup": 1, "threads": 1}


def _positive_finite(x: object) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def test_time_interleaved_rotates_the_order_and_times_every_round():
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in ("a", "b", "c")}
    times = time_interleaved(fns, warmup=1, repeats=3)
    warm, rounds = calls[:3], calls[3:]
    assert warm == ["a", "b", "c"]
    assert rounds == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {n: len(t) for n, t in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_time_budget_cuts_rounds_but_keeps_the_minimum():
    fns = {"slow": lambda: sum(range(20000))}
    times = time_interleaved(fns, warmup=1, repeats=50, time_budget=0.0, min_repeats=2)
    assert len(times["slow"]) == 2


def test_slow_functions_sit_out_while_fast_ones_go_on():
    calls: list[str] = []
    fns = {"slow": lambda: (calls.append("slow"), time.sleep(0.05)), "fast": lambda: None}
    times = time_interleaved(fns, warmup=0, repeats=6, time_budget=0.2, min_repeats=1)
    assert len(times["fast"]) == 6
    assert 1 <= len(times["slow"]) <= 2
    assert calls[: len(times["slow"])] == ["slow"] * len(times["slow"])


def test_paired_ratio_is_the_median_of_per_round_ratios():
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == 3.0
    assert paired_ratio([], []) is None


def test_num_threads_sets_and_restores():
    before = torch.get_num_threads()
    with num_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be a positive int"):
        with num_threads(0):
            pass


def test_naive_attention_matches_sdpa():
    q, k, v = (torch.randn(1, 2, 5, 4) for _ in range(3))
    mask = torch.ones(5, 5, dtype=torch.bool).tril()
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(naive_attention(q, k, v, mask), ref)


def test_flops_count_useful_work():
    f = impl_flops("sdpa", "fwd", 1, 2, 8, 4, causal=False)
    assert f == 4 * 2 * 8 * 8 * 4
    assert impl_flops("sdpa", "fwd", 1, 2, 8, 4, causal=True) == f / 2
    assert impl_flops("sdpa", "fwdbwd", 1, 2, 8, 4, causal=False) == 3 * f
    assert impl_flops("torch_mha", "fwd", 1, 2, 8, 4, causal=False) == f + 8 * 8 * 8 * 8


def test_twins_have_the_same_parameter_count():
    transformers = pytest.importorskip("transformers")
    del transformers
    from qkv.bench._twins import hf_gpt2, hf_seq2seq

    shape = ModelShape(d_model=32, n_heads=2, n_layers=2, vocab_size=64, max_len=16)
    n = count_parameters(qkv_lm(shape))
    assert count_parameters(hf_gpt2(shape)) == n == count_parameters(TorchGPT(shape))
    d, v = shape.d_model, shape.vocab_size
    # BART: 2 extra position rows per stack in transformers; qkv's output bias is a
    # parameter (a buffer in transformers)
    bart = count_parameters(hf_seq2seq(shape, "bart"))
    assert bart + v - 2 * 2 * d == count_parameters(qkv_seq2seq(shape, "bart"))
    # Marian: transformers stores its fixed sinusoids as (frozen) parameters
    marian = count_parameters(hf_seq2seq(shape, "marian"))
    assert marian + v - 2 * shape.max_len * d == count_parameters(qkv_seq2seq(shape, "marian"))


# ---------------------------------------------------------------------------------------
# the benchmarks, tiny
# ---------------------------------------------------------------------------------------
# 10 s: every peer at every size; test_attention_peers_skips_what_cannot_fit stays fast
@pytest.mark.slow
def test_attention_peers_tiny_run_has_every_row_gflops_and_ratios():
    cfg = PeerAttentionConfig(
        lengths=(32, 48), n_heads=2, head_dim=8, matmul_size=64, time_budget=5.0, **FAST
    )
    result = run_peer_attention_bench(cfg)
    data = json.loads(json.dumps(result.to_json()))
    rows = data["results"]
    assert len(rows) == 2 * 2 * len(PEER_IMPLS)
    assert _positive_finite(data["peak_gflops"])
    for r in rows:
        assert r["status"] == "ok", r
        assert r["repeats"] >= 1 and r["time_s"] > 0
        assert _positive_finite(r["gflops"]) and _positive_finite(r["peak_share"])
        assert _positive_finite(r["speedup_vs_ref"])
        assert r["reference"] == ("torch_mha" if r["impl"].endswith("mha") else "sdpa")
    summary = data["summary_geomean_speedup"]
    assert set(summary) == set(PEER_IMPLS) and summary["sdpa"] == {"fwd": 1.0, "fwdbwd": 1.0}
    assert all(_positive_finite(x) for by_mode in summary.values() for x in by_mode.values())
    table = format_peer_table(result).splitlines()
    assert "% peak" in table[3] and len(table) == 4 + len(rows) + 2 + len(PEER_IMPLS)


def test_attention_peers_skips_what_cannot_fit():
    cfg = PeerAttentionConfig(
        lengths=(256,), impls=("sdpa", "naive"), modes=("fwd",), n_heads=1, head_dim=8,
        matmul_size=32, memory_limit=400_000, **FAST,
    )  # fmt: skip
    rows = {m.impl: m for m in run_peer_attention_bench(cfg).measurements}
    assert rows["naive"].status == "n/a" and "GiB" in rows["naive"].reason
    assert rows["naive"].speedup_vs_ref is None and rows["sdpa"].status == "ok"


# 11 s: trains every peer
@pytest.mark.slow
def test_train_tiny_run_compares_every_model_with_its_qkv_twin():
    pytest.importorskip("transformers")
    cfg = TrainBenchConfig(
        **TINY,
        n_encoder_layers=1,
        n_decoder_layers=1,
        seq_lens=(8, 16),
        tokens=32,
        matmul_size=64,
        memory=False,
        **FAST,
    )  # fmt: skip  (memory: tests/bench/test_bench_train_memory.py)
    result = run_train_bench(cfg)
    rows = {(r["model"], r["seq_len"]): r for r in result.to_json()["results"]}
    names = {"qkv", "nanogpt", "x_transformers", "hf_gpt2", "torch_gpt", "qkv_bart", "hf_bart",
             "qkv_marian", "hf_marian"}  # fmt: skip
    assert set(rows) == {(n, s) for n in names for s in (8, 16)}  # qkv_eager: --compile only
    for (name, s), r in rows.items():
        assert r["batch"] == 32 // s
        if name == "x_transformers" and r["status"] == "n/a":
            assert "not installed" in r["reason"]
            continue
        assert r["status"] == "ok", r
        assert _positive_finite(r["tokens_per_s"]) and _positive_finite(r["qkv_speedup"])
        assert _positive_finite(r["mfu"]) and _positive_finite(r["model_tflops"])
        assert r["parameters"] > 0 and r["repeats"] == 2 and r["compile_s"] is None
        assert math.isfinite(r["loss"]) and r["peak_bytes"] is None
        if name.startswith("qkv"):
            assert r["twin"] == name and r["qkv_speedup"] == 1.0
    # the same model FLOPs for every model of a group; equal parameter counts for the GPTs
    assert rows[("nanogpt", 8)]["model_tflops"] == rows[("qkv", 8)]["model_tflops"]
    assert rows[("nanogpt", 8)]["parameters"] == rows[("qkv", 8)]["parameters"]
    assert rows[("hf_bart", 16)]["twin"] == "qkv_bart" and rows[("torch_gpt", 8)]["twin"] == "qkv"
    assert result.to_json()["peak_gflops"] > 0
    table = format_train_table(result)
    assert "qkv speed-up" in table and "MFU" in table


def test_train_step_flops_count_the_matmuls_and_attention():
    shape = ModelShape(d_model=8, n_heads=2, n_layers=3, vocab_size=10, d_ff=16)
    block = 4 * 8 * 8 + 2 * 8 * 16
    n = 3 * block + 8 * 10
    assert step_flops(shape, "lm", 5, 2) == 10 * (6 * n + 12 * 3 * 8 * 5)
    s2s = ModelShape(
        d_model=8, n_heads=2, vocab_size=10, d_ff=16, n_encoder_layers=1, n_decoder_layers=2
    )
    n = block + 2 * (block + 4 * 8 * 8) + 8 * 10
    assert step_flops(s2s, "seq2seq", 4, 1) == 4 * (6 * n + 12 * (1 + 2 * 2) * 8 * 4)


def test_paper_gpt_has_qkvs_parameter_count_and_is_causal():
    shape = ModelShape(d_model=16, n_heads=2, n_layers=2, vocab_size=32, max_len=12)
    torch.manual_seed(0)
    gpt, ref = paper_gpt(shape), qkv_lm(shape)
    assert count_parameters(gpt) == count_parameters(ref)
    ids = torch.randint(0, 32, (2, 10))
    out = gpt(ids)
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 32
    torch.testing.assert_close(gpt(changed)[:, :6], out[:, :6])  # the future is not seen
    assert gpt.head.weight is gpt.tok.weight


@pytest.mark.slow
def test_train_compile_adds_the_eager_row_and_compile_time():
    cfg = TrainBenchConfig(
        **TINY, seq_lens=(8,), tokens=16, models=("qkv", "qkv_eager"), compile=True,
        matmul_size=64, memory=False, **FAST,
    )  # fmt: skip
    rows = {r.model: r for r in run_train_bench(cfg).measurements}
    assert set(rows) == {"qkv", "qkv_eager"}
    assert rows["qkv"].compile_s is not None and rows["qkv_eager"].compile_s is None
    assert _positive_finite(rows["qkv_eager"].qkv_speedup)
    assert "compiled, first step" in format_train_table(run_train_bench(cfg))


def _cache_hits() -> int:
    from torch._dynamo.utils import counters

    return (
        counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"]["autograd_cache_hit"]
    )


@pytest.mark.slow
def test_compile_time_of_a_model_is_measured_with_empty_caches():
    # Three identical models compile one identical graph: the cold first step reuses
    # nothing the one before it built, while a plain first step does (the control).
    shape = ModelShape(d_model=32, n_heads=2, n_layers=1, vocab_size=64, max_len=8)
    batch = make_batch(64, 2, 8, 0, "lm")

    def compiled_step() -> Callable[[], float]:
        torch.manual_seed(0)
        model = qkv_lm(shape)
        return train_step(model, loss_fn("qkv", model, batch), 1e-3, compile=True)

    torch.compiler.reset()
    compiled_step()()  # fills the process' caches
    hits = _cache_hits()
    torch.compiler.reset()
    assert cold_first_step(compiled_step()) > 0
    assert _cache_hits() == hits  # compiled from nothing
    torch.compiler.reset()
    compiled_step()()
    assert _cache_hits() > hits  # the same graph, compiled warm, is found in the cache


def test_generate_tiny_run():
    pytest.importorskip("transformers")
    cfg = GenerateBenchConfig(
        **TINY, prompt_len=3, new_tokens=4, batch_sizes=(1, 2), warmup_tokens=2, **FAST
    )
    result = run_generate_bench(cfg)
    rows = {(r["batch"], r["impl"]): r for r in result.to_json()["results"]}
    assert len(rows) == 6
    assert rows[(2, "qkv_nocache")]["status"] == "n/a"  # only at --nocache-batch-sizes
    for key, r in rows.items():
        if key == (2, "qkv_nocache"):
            continue
        assert r["status"] == "ok", r
        assert _positive_finite(r["tokens_per_s"]) and _positive_finite(r["qkv_speedup"])
    assert rows[(1, "qkv_cache")]["qkv_speedup"] == 1.0
    assert result.parameters["qkv"] == result.parameters["hf"]
    assert "qkv_cache speed-up" in format_generate_table(result)


def test_record_tiny_run():
    pytest.importorskip("transformers")
    cfg = RecordBenchConfig(**TINY, lengths=(8, 16), **FAST)
    result = run_record_bench(cfg)
    rows = {(r["length"], r["impl"]): r for r in result.to_json()["results"]}
    assert len(rows) == 2 * len(RECORD_IMPLS) == 20
    for (_, impl), r in rows.items():
        assert r["status"] == "ok", r
        assert _positive_finite(r["overhead"]) and _positive_finite(r["qkv_speedup"])
        records = impl in RECORD_OPTIONS or impl == "hf_attentions"
        assert (r["weights_mib"] > 0) == records
    assert rows[(8, "qkv_plain")]["overhead"] == 1.0
    # what each option holds, against float32's whole record (transformers' too): the
    # default bfloat16 half, streaming one layer (of 2), one head (of 2), one row
    full = rows[(16, "qkv_record_fp32")]["weights_mib"]
    assert full == rows[(16, "hf_attentions")]["weights_mib"] == 4 * 2 * 16 * 16 * 2 / 2**20
    assert rows[(16, "qkv_record")]["weights_mib"] == full / 2
    assert rows[(16, "qkv_record_bf16")]["weights_mib"] == full / 2
    assert rows[(16, "qkv_record_stream")]["weights_mib"] == full / 4
    assert rows[(16, "qkv_record_stream_bf16")]["weights_mib"] == full / 4
    assert rows[(16, "qkv_record_one_head")]["weights_mib"] == full / 4
    assert rows[(16, "qkv_record_last_row")]["weights_mib"] == full / 32
    assert "x plain" in format_record_table(result)


# ---------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------
def test_cli_writes_json_and_prints_the_table(tmp_path, capsys):
    pytest.importorskip("transformers")
    out = tmp_path / "gen.json"
    args = ["bench", "generate", "--d-model", "16", "--n-heads", "2", "--n-layers", "1"]
    args += ["--vocab-size", "32", "--prompt-len", "2", "--new-tokens", "2", "--batch-sizes", "1"]
    args += ["--repeats", "1", "--threads", "1", "--json", str(out)]
    assert main(args) == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "generate" and len(data["results"]) == 3
    assert data["environment"]["threads"] == 1
    assert "tokens/s" in capsys.readouterr().out


def test_cli_peers_runs_and_rejects_bad_values(tmp_path, capsys):
    out = tmp_path / "peers.json"
    args = ["bench", "peers", "--lengths", "16", "--n-heads", "2", "--head-dim", "4"]
    args += ["--matmul-size", "32", "--repeats", "1", "--threads", "1", "--json", str(out)]
    assert main(args) == 0
    assert json.loads(out.read_text())["benchmark"] == "attention-peers"
    assert main(["bench", "peers", "--impls", "flash"]) == 2
    assert "impls must be a non-empty subset" in capsys.readouterr().err
