"""``qkv bench``: benchmarks, one sub-subcommand each (``qkv bench attention``, ...).

To add one: write ``register_<name>(sub, name)`` that adds its parser, each option's
``dest`` the config field it sets, and sets ``func`` to a ``run_<name>(args)`` that hands
the config (:func:`_config`) to :func:`_run_and_report`; then add it to :data:`BENCHMARKS`.
A peer benchmark (qkv against other libraries, :mod:`qkv.bench._timing`) takes the shared
option groups too: :func:`_add_shape_args` and :func:`_add_timing_args`. These helpers live in
:mod:`qkv.cli._bench_common`; ``long`` and ``approx`` in :mod:`qkv.cli._bench_long`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from qkv.cli import CLIError
from qkv.cli._bench_common import (
    _add_modes,
    _add_names,
    _add_shape_args,
    _add_timing_args,
    _bytes,
    _config,
    _csv,
    _run_and_report,
)
from qkv.cli._bench_long import register_approx, register_long
from qkv.cli._common import THREADS_HELP, _threads


def register_attention(sub: argparse._SubParsersAction, name: str) -> None:
    from qkv.bench.attention import IMPLS, MASKS, MODES

    p = sub.add_parser(
        name,
        help="time and peak memory of attention backends against sequence length",
        description="Time and peak memory of attention backends (naive math, dense masked "
        "SDPA, FlexAttention, block-sparse) against sequence length, for several masks. "
        "Prints a table with ratios to dense SDPA; configurations that would not fit in "
        "memory are reported as n/a.",
    )
    p.add_argument(
        "--lengths", type=_csv(int), default=(1024, 4096, 16384), help="default: 1024,4096,16384"
    )
    p.add_argument(
        "--masks",
        type=_csv(str),
        default=("causal", "window", "bigbird"),
        help=f"from {','.join(MASKS)} (default: causal,window,bigbird)",
    )
    p.add_argument(
        "--window", type=int, default=256, help="window of the window/local masks (default: 256)"
    )
    _add_names(p, "--impls", IMPLS)
    p.add_argument("--n-heads", type=int, default=8, help="attention heads (default: 8)")
    p.add_argument("--head-dim", type=int, default=64, help="d_h (default: 64)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size (default: 1)")
    _add_modes(p, MODES)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (default: 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (default: 1)")
    p.add_argument(
        "--time-budget",
        type=float,
        default=60.0,
        help="seconds of timed runs per measurement, roughly (default: 60)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="default: float32",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: cpu")
    p.add_argument("--threads", type=_threads, help=THREADS_HELP)
    p.add_argument(
        "--memory-limit", type=float, help="GiB a measurement may need (default: 80%% of available)"
    )
    p.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="measure in this process (faster; no CPU memory)",
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=run_attention)


def run_attention(args: argparse.Namespace) -> int:
    from qkv.bench.attention import AttentionBenchConfig, format_table, run_attention_bench

    config = _config(AttentionBenchConfig, args, memory_limit=_bytes(args.memory_limit))
    try:  # the run rejects what the config cannot know, e.g. CUDA asked for but absent
        return _run_and_report(
            run_attention_bench,
            config,
            format_table,
            lambda m: f"  {m.length:>6} {m.mask:<8} {m.mode:<6} {m.impl:<11} {m.status}",
            args.json,
        )
    except ValueError as e:
        raise CLIError(str(e)) from e


# ---------------------------------------------------------------------------------------
# peer benchmarks (qkv against the libraries users would pick; qkv.bench._timing)
# ---------------------------------------------------------------------------------------
def register_peers(sub: argparse._SubParsersAction, name: str) -> None:
    from qkv.bench.attention_peers import MODES as PEER_MODES
    from qkv.bench.attention_peers import PEER_IMPLS, PEER_MASKS

    p = sub.add_parser(
        name,
        help="dense attention: qkv against raw SDPA, naive math and nn.MultiheadAttention",
        description="Dense attention against its peers, interleaved in one process: "
        "qkv.attention (auto, math) vs raw F.scaled_dot_product_attention vs naive math, and "
        "qkv's MultiHeadAttention vs torch.nn.MultiheadAttention with the same weights. "
        "Prints time, useful GFLOP/s, its share of a fp32 matmul peak measured in the same "
        "run, and speed ratios to SDPA / nn.MultiheadAttention.",
    )
    p.add_argument(
        "--lengths",
        type=_csv(int),
        default=(512, 1024, 2048, 4096, 8192),
        help="default: 512,1024,2048,4096,8192",
    )
    _add_names(p, "--impls", PEER_IMPLS)
    p.add_argument("--mask", default="causal", choices=PEER_MASKS, help="default: causal")
    p.add_argument("--n-heads", type=int, default=8, help="attention heads (default: 8)")
    p.add_argument("--head-dim", type=int, default=64, help="d_h (default: 64)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size (default: 1)")
    _add_modes(p, PEER_MODES)
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the peak matmul")
    p.add_argument(
        "--memory-limit", type=float, help="GiB one call may need (default: 70%% of available)"
    )
    _add_timing_args(p, repeats=10, min_repeats=2, warmup=1, budget=120.0)
    p.set_defaults(func=run_peers)


def run_peers(args: argparse.Namespace) -> int:
    from qkv.bench.attention_peers import (
        PeerAttentionConfig,
        format_peer_table,
        run_peer_attention_bench,
    )

    return _run_and_report(
        run_peer_attention_bench,
        _config(PeerAttentionConfig, args, memory_limit=_bytes(args.memory_limit)),
        format_peer_table,
        lambda m: (
            f"  {m.length:>6} {m.mode:<6} {m.impl:<10} {m.status} "
            f"{'' if m.time_s is None else f'{m.time_s * 1e3:.1f} ms'}"
        ),
        args.json,
    )


def register_train(sub: argparse._SubParsersAction, name: str) -> None:
    from qkv.bench.train import TRAIN_MODELS

    p = sub.add_parser(
        name,
        help="training tokens/s, MFU and peak memory: qkv vs nanoGPT (shaped, and real with "
        "--nanogpt), x-transformers, transformers GPT-2/BART/Marian and nn.Transformer",
        description="Training throughput (forward, cross-entropy, backward, AdamW) of qkv's "
        "DecoderLM vs a nanoGPT-shaped GPT-2 written from the papers, the real nanoGPT "
        "(--nanogpt: your checkout of karpathy/nanoGPT), x-transformers' decoder "
        "(when installed), transformers' GPT2LMHeadModel (sdpa) and a torch.nn."
        "TransformerEncoderLayer GPT, and of qkv's Seq2SeqTransformer vs BART and Marian, "
        "all of identical shape, on the same batch, interleaved in one process, at each "
        "sequence length; MFU divides the model FLOPs by a fp32 matmul peak timed in the run. "
        "After the timing, each row's peak memory of a step (gradients, AdamW state, "
        "activations above the weights and batch) is measured in a fresh subprocess per row: "
        "its peak RSS, with MALLOC_MMAP_THRESHOLD_ set so freed blocks return to the OS; "
        "mem/qkv is the ratio to the qkv row's.",
    )
    _add_shape_args(p)
    for stack in ("encoder", "decoder"):
        p.add_argument(f"--n-{stack}-layers", type=int, default=3, help="seq2seq (default: 3)")
    p.add_argument(
        "--seq-lens", type=_csv(int), default=(256, 1024, 2048), help="default: 256,1024,2048"
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=2048,
        help="tokens per step; a step trains tokens / seq_len sequences (default: 2048)",
    )
    _add_names(p, "--models", TRAIN_MODELS)
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile every model (as qkv train --compile does) and add an eager "
        "qkv_eager row: the qkv row's speed-up over it is the compiler's gain",
    )
    p.add_argument(
        "--nanogpt",
        metavar="PATH",
        type=_nanogpt_checkout,
        help="a checkout of karpathy/nanoGPT (its folder, or its model.py): adds the "
        "nanogpt_real row, its GPT imported from that file, built with GPTConfig of the same "
        "shape (dropout 0, bias as the others); nothing of it is copied into qkv",
    )
    p.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="skip the peak memory of each row (one subprocess per row, a few seconds each)",
    )
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the peak matmul")
    _add_timing_args(p, repeats=7, min_repeats=3, warmup=2, budget=120.0)
    p.set_defaults(func=run_train)


def _nanogpt_checkout(text: str) -> str:
    """A ``--nanogpt`` value: a nanoGPT checkout whose ``model.py`` imports and defines
    ``GPT`` and ``GPTConfig``."""
    from qkv.bench._twins import load_nanogpt

    try:
        load_nanogpt(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


def run_train(args: argparse.Namespace) -> int:
    from qkv.bench.train import TrainBenchConfig, format_train_table, run_train_bench

    return _run_and_report(
        run_train_bench,
        _config(TrainBenchConfig, args),
        format_train_table,
        lambda m: (
            f"  {m.suite:<8} {m.seq_len:>5} {m.model:<14} {m.status} "
            f"{'' if m.tokens_per_s is None else f'{m.tokens_per_s:.0f} tokens/s'}"
            f"{'' if m.peak_bytes is None else f', peak {m.peak_bytes / 2**20:.1f} MiB'}"
        ),
        args.json,
    )


def register_generate(sub: argparse._SubParsersAction, name: str) -> None:
    from qkv.bench.generate import GENERATE_IMPLS

    p = sub.add_parser(
        name,
        help="greedy decoding tokens/s: qkv (with/without KV cache) vs transformers generate",
        description="Greedy decoding throughput of qkv.generation.generate with and without "
        "the KV cache vs transformers' GPT2LMHeadModel.generate(use_cache=True), same shape "
        "and prompts, interleaved in one process.",
    )
    _add_shape_args(p)
    p.add_argument("--prompt-len", type=int, default=32, help="default: 32")
    p.add_argument("--new-tokens", type=int, default=256, help="default: 256")
    p.add_argument("--batch-sizes", type=_csv(int), default=(1, 8), help="default: 1,8")
    _add_names(p, "--impls", GENERATE_IMPLS)
    p.add_argument(
        "--nocache-batch-sizes",
        type=_csv(int),
        default=(1,),
        help="batch sizes at which qkv_nocache runs (slow; default: 1)",
    )
    _add_timing_args(p, repeats=7, min_repeats=7, warmup=1, budget=300.0)
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from qkv.bench.generate import GenerateBenchConfig, format_generate_table, run_generate_bench

    return _run_and_report(
        run_generate_bench,
        _config(GenerateBenchConfig, args),
        format_generate_table,
        lambda m: (
            f"  batch {m.batch:<3} {m.impl:<11} {m.status} "
            f"{'' if m.tokens_per_s is None else f'{m.tokens_per_s:.1f} tokens/s'}"
        ),
        args.json,
    )


def register_record(sub: argparse._SubParsersAction, name: str) -> None:
    from qkv.bench.record import RECORD_IMPLS

    p = sub.add_parser(
        name,
        help="cost of record_attention vs a plain forward and transformers' output_attentions",
        description="Inference forward inside qkv.interp.record_attention vs the plain "
        "forward, and transformers' GPT-2 with output_attentions=True (eager) vs its sdpa "
        "forward, same shape and tokens, interleaved in one process.",
    )
    _add_shape_args(p)
    p.add_argument(
        "--lengths", type=_csv(int), default=(512, 1024, 2048, 4096), help="default: 512..4096"
    )
    p.add_argument("--batch-size", type=int, default=1, help="default: 1")
    _add_names(p, "--impls", RECORD_IMPLS)
    p.add_argument(
        "--memory-limit", type=float, help="GiB the weights may need (default: 50%% of available)"
    )
    _add_timing_args(p, repeats=7, min_repeats=3, warmup=1, budget=120.0)
    p.set_defaults(func=run_record)


def run_record(args: argparse.Namespace) -> int:
    from qkv.bench.record import RecordBenchConfig, format_record_table, run_record_bench

    return _run_and_report(
        run_record_bench,
        _config(RecordBenchConfig, args, memory_limit=_bytes(args.memory_limit)),
        format_record_table,
        lambda m: (
            f"  {m.length:>6} {m.impl:<13} {m.status} "
            f"{'' if m.time_s is None else f'{m.time_s * 1e3:.0f} ms'}"
        ),
        args.json,
    )


#: benchmark name -> function adding its parser to ``qkv bench``'s subparsers
BENCHMARKS: dict[str, Callable[[argparse._SubParsersAction, str], None]] = {
    "attention": register_attention,
    "peers": register_peers,
    "train": register_train,
    "generate": register_generate,
    "record": register_record,
    "long": register_long,
    "approx": register_approx,
}


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="benchmarks (attention, ...)",
        description="Benchmarks. Run `qkv bench BENCHMARK --help` for the options of each.",
    )
    bench_sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for bench_name, add in BENCHMARKS.items():
        add(bench_sub, bench_name)
    p.set_defaults(func=lambda args: _no_benchmark(p))


def _no_benchmark(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0
