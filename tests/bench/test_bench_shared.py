"""What the ``qkv bench`` subcommands share: the rows, results, round timing and checks of
``qkv.bench._timing``, and the options -> config mapping of ``qkv.cli.bench``. Timings are
never asserted, only where they go."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from types import SimpleNamespace
from typing import ClassVar

import pytest

from qkv.bench import (
    AttentionBenchConfig,
    GenerateBenchConfig,
    GenerateMeasurement,
    PeerAttentionConfig,
    PeerMeasurement,
    RecordBenchConfig,
    RecordMeasurement,
    TrainBenchConfig,
    TrainMeasurement,
)
from qkv.bench._timing import (
    BenchResult,
    TimedRow,
    check_sizes,
    check_subset,
    paired_ratio,
    time_rows,
)
from qkv.bench.approx import ApproxBenchConfig
from qkv.bench.long import LongBenchConfig
from qkv.cli import CLIError, build_parser
from qkv.cli.bench import BENCHMARKS, _config

SETTINGS = SimpleNamespace(warmup=0, repeats=3, min_repeats=3, time_budget=None)
TIMES = {"status", "reason", "time_s", "time_min_s", "repeats", "times_s"}


# ---------------------------------------------------------------------------------------
# rows, results and round timing
# ---------------------------------------------------------------------------------------
def test_time_rows_records_the_times_of_the_rows_that_run():
    rows = {n: TimedRow() for n in ("a", "b", "skipped")}
    rows["skipped"].skip("not at this size")
    times = time_rows(rows, {"a": lambda: None, "b": lambda: None}, SETTINGS)
    assert set(times) == {"a", "b"}
    for name in ("a", "b"):
        row = rows[name]
        assert row.status == "ok" and row.repeats == 3 and row.times_s == times[name]
        assert row.time_s == statistics.median(row.times_s)
        assert row.time_min_s == min(row.times_s)
    assert rows["skipped"] == TimedRow(status="n/a", reason="not at this size")
    assert time_rows(rows, {}, SETTINGS) == {}


def test_time_rows_marks_the_group_failed_on_a_caught_error_only():
    def out_of_memory() -> None:
        raise MemoryError("no room")

    rows = {"a": TimedRow(), "b": TimedRow(), "skipped": TimedRow(status="n/a")}
    calls = {"a": lambda: None, "b": out_of_memory}
    assert time_rows(rows, calls, SETTINGS, catch=(RuntimeError, MemoryError)) == {}
    for name in ("a", "b"):
        assert rows[name].status == "error" and rows[name].reason == "MemoryError: no room"
        assert rows[name].times_s == [] and rows[name].time_s is None
    assert rows["skipped"].status == "n/a"
    with pytest.raises(MemoryError):
        time_rows({"b": TimedRow()}, {"b": out_of_memory}, SETTINGS)


def test_paired_ratio_of_a_row_that_did_not_run_is_none():
    times = {"a": [2.0, 4.0]}
    assert paired_ratio(times.get("a"), times.get("missing")) is None
    assert paired_ratio(times.get("missing"), times.get("a")) is None
    assert paired_ratio(times["a"], [1.0, 1.0]) == 3.0


@dataclasses.dataclass
class _Config:
    size: int = 1


@dataclasses.dataclass
class _Row(TimedRow):
    name: str
    score: float | None = None


@dataclasses.dataclass
class _Result(BenchResult[_Config, _Row]):
    benchmark: ClassVar[str] = "tiny"
    extra: int = 0

    def extra_json(self) -> dict[str, int]:
        return {"extra": self.extra}


def test_result_json_has_the_name_config_extras_and_every_row():
    seen: list[_Row] = []
    result = _Result(_Config(), environment={"threads": 1}, extra=3)
    result.add([_Row("x"), _Row("y", status="n/a", reason="too big")], seen.append)
    assert seen == result.measurements and [r.name for r in seen] == ["x", "y"]
    data = result.to_json()
    assert list(data) == ["benchmark", "config", "environment", "extra", "results"]
    assert data["benchmark"] == "tiny" and data["config"] == {"size": 1}
    assert data["environment"] == {"threads": 1} and data["extra"] == 3
    assert set(data["results"][0]) == TIMES | {"name", "score"}
    assert data["results"][1]["reason"] == "too big"


def test_rows_keep_the_json_keys_of_each_benchmark():
    def keys(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    assert keys(TrainMeasurement) == TIMES | {
        "suite", "seq_len", "batch", "model", "description", "twin", "parameters",
        "tokens_per_s", "model_tflops", "mfu", "compile_s", "qkv_speedup", "loss",
        "peak_bytes", "memory_vs_qkv",
    }  # fmt: skip
    assert keys(GenerateMeasurement) == TIMES | {
        "batch", "impl", "description", "tokens_per_s", "ms_per_step", "qkv_speedup",
    }  # fmt: skip
    assert keys(RecordMeasurement) == TIMES | {
        "length", "impl", "description", "plain", "qkv", "tokens_per_s", "overhead",
        "qkv_speedup", "weights_mib",
    }  # fmt: skip
    assert keys(PeerMeasurement) == TIMES | {
        "length", "mode", "impl", "group", "reference", "flops", "gflops", "peak_share",
        "speedup_vs_ref",
    }  # fmt: skip
    # what was measured still comes first when a row is built
    row = TrainMeasurement("lm", 256, 8, "qkv", "DecoderLM", "qkv")
    assert (row.suite, row.seq_len, row.twin, row.status) == ("lm", 256, "qkv", "ok")


def test_checks_name_the_setting_and_its_values():
    check_subset("impls", ("a",), {"a": 1, "b": 2})
    message = r"impls must be a non-empty subset of \['a', 'b'\], got \['a', 'c'\]"
    with pytest.raises(ValueError, match=message):
        check_subset("impls", ("a", "c"), ("a", "b"))
    with pytest.raises(ValueError, match=r"got \[\]"):
        check_subset("modes", (), ("fwd",))
    check_sizes("lengths", (1, 2))
    with pytest.raises(ValueError, match=r"lengths must be positive ints, got \[4, 0\]"):
        check_sizes("lengths", (4, 0))
    with pytest.raises(ValueError, match=r"batches must be positive ints, got \[\]"):
        check_sizes("batches", ())


# ---------------------------------------------------------------------------------------
# the command line: options -> config
# ---------------------------------------------------------------------------------------
CONFIGS = {
    "approx": ApproxBenchConfig,
    "long": LongBenchConfig,
    "attention": AttentionBenchConfig,
    "peers": PeerAttentionConfig,
    "train": TrainBenchConfig,
    "generate": GenerateBenchConfig,
    "record": RecordBenchConfig,
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_option_sets_a_field_of_its_config(name):
    assert set(BENCHMARKS) == set(CONFIGS)
    parser = _subparsers(_subparsers(build_parser())["bench"])[name]
    dests = {a.dest for a in parser._actions} - {"help", "json"}
    fields = {f.name for f in dataclasses.fields(CONFIGS[name])}
    assert dests <= fields, f"options that set no field: {dests - fields}"


def test_options_become_the_config():
    parse = build_parser().parse_args
    args = parse(
        ["bench", "train", "--n-heads", "2", "--vocab-size", "64", "--n-encoder-layers", "1"]
    )
    cfg = _config(TrainBenchConfig, args)
    assert (cfg.n_heads, cfg.vocab_size, cfg.n_encoder_layers, cfg.n_decoder_layers) == (
        2,
        64,
        1,
        3,
    )
    assert cfg.threads == 2 and cfg.lr == TrainBenchConfig.lr  # the CLI's default; no option
    args = parse(["bench", "attention", "--no-isolate", "--mode", "fwd", "--memory-limit", "1"])
    cfg = _config(AttentionBenchConfig, args, memory_limit=2.0**30)
    assert (cfg.isolate, cfg.modes, cfg.memory_limit) == (False, ("fwd",), 2.0**30)
    with pytest.raises(CLIError, match="impls must be a non-empty subset"):
        _config(RecordBenchConfig, parse(["bench", "record", "--impls", "nope"]))
