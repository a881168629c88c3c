"""``qkv bench``: benchmarks, one sub-subcommand each (``qkv bench attention``, ...).

To add one (``train``, ``generate``, ``record``): write ``register_<name>(sub, name)`` that
adds its parser and sets ``func``, and add it to :data:`BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from qkv.cli import CLIError


def _csv(cast: Callable[[str], object]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            return tuple(cast(x.strip()) for x in text.split(",") if x.strip())
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list, got {text!r}: {e}"
            ) from e

    return parse


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
    p.add_argument(
        "--impls", type=_csv(str), default=IMPLS, help=f"from {','.join(IMPLS)} (default: all)"
    )
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--mode", type=_csv(str), default=MODES, help="fwd,fwdbwd (default: both)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (default: 3)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--time-budget",
        type=float,
        default=60.0,
        help="seconds of timed runs per measurement, roughly (default: 60)",
    )
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, help="torch threads (CPU; default: torch's)")
    p.add_argument(
        "--memory-limit", type=float, help="GiB a measurement may need (default: 80%% of available)"
    )
    p.add_argument(
        "--no-isolate", action="store_true", help="measure in this process (faster; no CPU memory)"
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=run_attention)


def run_attention(args: argparse.Namespace) -> int:
    from qkv.bench.attention import AttentionBenchConfig, format_table, run_attention_bench

    try:
        config = AttentionBenchConfig(
            lengths=args.lengths,
            masks=args.masks,
            window=args.window,
            impls=args.impls,
            heads=args.heads,
            head_dim=args.head_dim,
            batch=args.batch,
            modes=args.mode,
            repeats=args.repeats,
            warmup=args.warmup,
            time_budget=args.time_budget,
            dtype=args.dtype,
            device=args.device,
            threads=args.threads,
            isolate=not args.no_isolate,
            memory_limit=None if args.memory_limit is None else args.memory_limit * 2**30,
        )
        result = run_attention_bench(
            config,
            progress=lambda m: print(
                f"  {m.length:>6} {m.mask:<8} {m.mode:<6} {m.impl:<11} {m.status}", flush=True
            ),
        )
    except ValueError as e:
        raise CLIError(str(e)) from e
    print()
    print(format_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------------
# peer benchmarks (qkv against the libraries users would pick; qkv.bench._timing)
# ---------------------------------------------------------------------------------------
def _add_timing_args(
    p: argparse.ArgumentParser, *, repeats: int, min_repeats: int, warmup: int, budget: float
) -> None:
    g = p.add_argument_group("timing (all implementations interleaved in one process)")
    g.add_argument(
        "--threads", type=int, default=2, help="torch.set_num_threads for every peer (default: 2)"
    )
    g.add_argument(
        "--repeats", type=int, default=repeats, help=f"timed rounds (default: {repeats})"
    )
    g.add_argument(
        "--min-repeats",
        type=int,
        default=min_repeats,
        help=f"rounds every implementation runs whatever the budget (default: {min_repeats})",
    )
    g.add_argument("--warmup", type=int, default=warmup, help=f"default: {warmup}")
    g.add_argument(
        "--time-budget",
        type=float,
        default=budget,
        help=f"seconds of timed calls per group, shared by its implementations; slow ones "
        f"then sit out later rounds (default: {budget:g})",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results as JSON here")


def _add_shape_args(p: argparse.ArgumentParser, *, layers: bool = True) -> None:
    g = p.add_argument_group("model shape (identical for qkv and its peers)")
    g.add_argument("--d-model", type=int, default=256, help="default: 256")
    g.add_argument("--heads", type=int, default=4, help="default: 4")
    if layers:
        g.add_argument("--layers", type=int, default=6, help="decoder layers (default: 6)")
    g.add_argument("--vocab", type=int, default=8192, help="default: 8192")
    g.add_argument("--d-ff", type=int, help="feed-forward width (default: 4 d)")


def _timing_kwargs(args: argparse.Namespace) -> dict:
    return {
        "threads": args.threads,
        "repeats": args.repeats,
        "min_repeats": args.min_repeats,
        "warmup": args.warmup,
        "time_budget": args.time_budget,
        "seed": args.seed,
    }


def _shape_kwargs(args: argparse.Namespace) -> dict:
    return {
        "d_model": args.d_model,
        "n_heads": args.heads,
        "n_layers": args.layers,
        "vocab_size": args.vocab,
        "d_ff": args.d_ff,
    }


def _report(table: str, data: dict, path: Path | None) -> int:
    print()
    print(table)
    if path is not None:
        from qkv.bench._timing import write_json

        write_json(path, data)
        print(f"\nwrote {path}")
    return 0


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
    p.add_argument(
        "--impls",
        type=_csv(str),
        default=tuple(PEER_IMPLS),
        help=f"from {','.join(PEER_IMPLS)} (default: all)",
    )
    p.add_argument("--mask", default="causal", choices=PEER_MASKS)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--mode", type=_csv(str), default=PEER_MODES, help="fwd,fwdbwd (default: both)")
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

    try:
        config = PeerAttentionConfig(
            lengths=args.lengths,
            impls=args.impls,
            mask=args.mask,
            heads=args.heads,
            head_dim=args.head_dim,
            batch=args.batch,
            modes=args.mode,
            matmul_size=args.matmul_size,
            memory_limit=None if args.memory_limit is None else args.memory_limit * 2**30,
            **_timing_kwargs(args),
        )
    except ValueError as e:
        raise CLIError(str(e)) from e
    result = run_peer_attention_bench(
        config,
        progress=lambda m: print(
            f"  {m.length:>6} {m.mode:<6} {m.impl:<10} {m.status} "
            f"{'' if m.time_s is None else f'{m.time_s * 1e3:.1f} ms'}",
            flush=True,
        ),
    )
    return _report(format_peer_table(result), result.to_json(), args.json)


def register_train(sub: argparse._SubParsersAction, name: str) -> None:
    from qkv.bench.train import TRAIN_MODELS

    p = sub.add_parser(
        name,
        help="training tokens/s: qkv vs transformers GPT-2/BART/Marian and nn.Transformer",
        description="Training throughput (forward, cross-entropy, backward, AdamW) of qkv's "
        "DecoderLM vs transformers' GPT2LMHeadModel (sdpa) and a torch.nn."
        "TransformerEncoderLayer GPT, and of qkv's Seq2SeqTransformer vs BART and Marian, "
        "all of identical shape, on the same batch, interleaved in one process.",
    )
    _add_shape_args(p)
    p.add_argument("--encoder-layers", type=int, default=3, help="seq2seq (default: 3)")
    p.add_argument("--decoder-layers", type=int, default=3, help="seq2seq (default: 3)")
    p.add_argument("--seq-len", type=int, default=256, help="default: 256")
    p.add_argument("--batch", type=int, default=8, help="default: 8")
    p.add_argument(
        "--models",
        type=_csv(str),
        default=tuple(TRAIN_MODELS),
        help=f"from {','.join(TRAIN_MODELS)} (default: all)",
    )
    _add_timing_args(p, repeats=7, min_repeats=3, warmup=2, budget=400.0)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from qkv.bench.train import TrainBenchConfig, format_train_table, run_train_bench

    try:
        config = TrainBenchConfig(
            **_shape_kwargs(args),
            n_encoder_layers=args.encoder_layers,
            n_decoder_layers=args.decoder_layers,
            seq_len=args.seq_len,
            batch=args.batch,
            models=args.models,
            **_timing_kwargs(args),
        )
    except ValueError as e:
        raise CLIError(str(e)) from e
    result = run_train_bench(
        config,
        progress=lambda m: print(
            f"  {m.suite:<8} {m.model:<11} {m.status} "
            f"{'' if m.tokens_per_s is None else f'{m.tokens_per_s:.0f} tokens/s'}",
            flush=True,
        ),
    )
    return _report(format_train_table(result), result.to_json(), args.json)


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
    p.add_argument("--batches", type=_csv(int), default=(1, 8), help="default: 1,8")
    p.add_argument(
        "--impls",
        type=_csv(str),
        default=tuple(GENERATE_IMPLS),
        help=f"from {','.join(GENERATE_IMPLS)} (default: all)",
    )
    p.add_argument(
        "--nocache-batches",
        type=_csv(int),
        default=(1,),
        help="batch sizes at which qkv_nocache runs (slow; default: 1)",
    )
    _add_timing_args(p, repeats=5, min_repeats=2, warmup=1, budget=300.0)
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from qkv.bench.generate import GenerateBenchConfig, format_generate_table, run_generate_bench

    try:
        config = GenerateBenchConfig(
            **_shape_kwargs(args),
            prompt_len=args.prompt_len,
            new_tokens=args.new_tokens,
            batches=args.batches,
            impls=args.impls,
            nocache_batches=args.nocache_batches,
            **_timing_kwargs(args),
        )
    except ValueError as e:
        raise CLIError(str(e)) from e
    result = run_generate_bench(
        config,
        progress=lambda m: print(
            f"  batch {m.batch:<3} {m.impl:<11} {m.status} "
            f"{'' if m.tokens_per_s is None else f'{m.tokens_per_s:.1f} tokens/s'}",
            flush=True,
        ),
    )
    return _report(format_generate_table(result), result.to_json(), args.json)


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
    p.add_argument("--batch", type=int, default=1, help="default: 1")
    p.add_argument(
        "--impls",
        type=_csv(str),
        default=tuple(RECORD_IMPLS),
        help=f"from {','.join(RECORD_IMPLS)} (default: all)",
    )
    p.add_argument(
        "--memory-limit", type=float, help="GiB the weights may need (default: 50%% of available)"
    )
    _add_timing_args(p, repeats=7, min_repeats=3, warmup=1, budget=120.0)
    p.set_defaults(func=run_record)


def run_record(args: argparse.Namespace) -> int:
    from qkv.bench.record import RecordBenchConfig, format_record_table, run_record_bench

    try:
        config = RecordBenchConfig(
            **_shape_kwargs(args),
            lengths=args.lengths,
            batch=args.batch,
            impls=args.impls,
            memory_limit=None if args.memory_limit is None else args.memory_limit * 2**30,
            **_timing_kwargs(args),
        )
    except ValueError as e:
        raise CLIError(str(e)) from e
    result = run_record_bench(
        config,
        progress=lambda m: print(
            f"  {m.length:>6} {m.impl:<13} {m.status} "
            f"{'' if m.time_s is None else f'{m.time_s * 1e3:.0f} ms'}",
            flush=True,
        ),
    )
    return _report(format_record_table(result), result.to_json(), args.json)


#: benchmark name -> function adding its parser to ``qkv bench``'s subparsers
BENCHMARKS: dict[str, Callable[[argparse._SubParsersAction, str], None]] = {
    "attention": register_attention,
    "peers": register_peers,
    "train": register_train,
    "generate": register_generate,
    "record": register_record,
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
