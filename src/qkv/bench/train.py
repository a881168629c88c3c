"""Training throughput against peer models of identical shape (``qkv bench train``).

Suites, each timed in interleaved rounds in one process on the same batch
(:mod:`qkv.bench._timing`):

* ``lm``: qkv's :class:`~qkv.models.DecoderLM` (``qkv``) against a nanoGPT-shaped GPT-2
  written from its papers (``nanogpt``, :mod:`qkv.bench._paper_gpt`), ``x-transformers``'
  decoder when installed (``x_transformers``), ``transformers``' ``GPT2LMHeadModel`` with
  ``attn_implementation="sdpa"`` (``hf_gpt2``), a GPT built from
  ``torch.nn.TransformerEncoderLayer`` (``torch_gpt``) and, given the path of a checkout of
  karpathy/nanoGPT (``nanogpt``), the real nanoGPT's ``GPT`` from its ``model.py``
  (``nanogpt_real``; imported from the user's file, nothing of it copied into qkv);
* ``seq2seq``: qkv's :class:`~qkv.models.Seq2SeqTransformer` shaped as BART (``qkv_bart``)
  and as Marian (``qkv_marian``) against ``BartForConditionalGeneration`` (``hf_bart``) and
  ``MarianMTModel`` (``hf_marian``).

One step is what a training loop does: forward, ``F.cross_entropy`` over the logits (the
same call for every model; the real nanoGPT makes it in its own forward),
``backward``, ``AdamW.step`` and ``zero_grad`` (:mod:`qkv.bench._train_steps`). Each sequence
length of ``seq_lens`` is its own group, with ``tokens // seq_len`` sequences per step.
Throughput is ``batch_size * seq_len`` tokens (target tokens for seq2seq) per step time. All
models run without dropout, in fp32.

MFU (model FLOPs utilization; Chowdhery et al. 2022, "PaLM", appendix B) is the model FLOPs
of a step over its time and the peak rate, where the model FLOPs of ``T`` tokens are
``T (6 N + 12 n_attn d s)`` (``N`` the weights of the matmuls, output projection included;
``n_attn`` attention sublayers over ``s`` keys, causal ones counted whole as in the paper)
and the peak is a large fp32 matmul timed in the same run (before and after; the better).
The same FLOPs count for every model of a group: MFU ranks them as tokens/s does, on an
absolute scale.

With ``compile``, every model's forward and the cross-entropy are ``torch.compile``'d as
one function (as ``qkv train --compile`` compiles the objective's loss) and an eager
``qkv_eager`` row joins the ``lm`` suite, so that the ``qkv`` row's speed-up over it is
what compilation gains; the first step, which waits for the compiler, is reported
separately (``compile_s``), each model's with empty compiler caches
(:func:`~qkv.bench._train_steps.cold_first_step`: no model reuses kernels another one
built before it in the run) and after a tiny model has paid the compiler's one-time
start-up in the process (:func:`~qkv.bench._train_steps.warm_compiler`, reported as
``compiler_startup_s``). Every length is compiled with static shapes, in a cache
emptied at the start of its group.

Peak memory (``memory``): after the timing, so that it disturbs none of it, every row that
ran is run again in a fresh subprocess that builds its model and batch and runs
:data:`~qkv.bench._train_steps.MEMORY_STEPS` training steps (:mod:`qkv.bench._memory`).
``peak_bytes`` is what a step needs above the weights and the batch: its gradients,
AdamW's state and its activations at their peak, i.e. the rise of the resident-set
high-water mark during the last step above the resident set after the first, plus the
AdamW state the first step made. The first step's other costs (libraries set up on first
use, under ``compile`` the compiler) are thus left out, as CUDA's allocator leaves them
out. ``MALLOC_MMAP_THRESHOLD_`` is set in the subprocess so that freed large blocks go back
to the OS and the mark follows the memory in use. ``memory_vs_qkv`` is ``peak_bytes`` over
the qkv twin's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from qkv._checks import check_bool
from qkv.bench._isolate import run_isolated
from qkv.bench._memory import MMAP_ENV
from qkv.bench._timing import (
    BenchResult,
    TimedRow,
    check_settings,
    check_sizes,
    check_subset,
    fmt,
    format_rows,
    paired_ratio,
    peer_run,
    time_rows,
    transformers_missing,
)
from qkv.bench._train_steps import (
    MEMORY_STEPS,
    SUITES,
    TRAIN_MODELS,
    build_model,
    cold_first_step,
    loss_fn,
    make_batch,
    step_flops,
    train_step,
    warm_compiler,
)
from qkv.bench._twins import (
    ModelShape,
    count_parameters,
    load_nanogpt,
    nanogpt_why_not,
    x_transformers_missing,
)
from qkv.bench.attention_peers import matmul_gflops

#: how ``qkv bench train`` measures peak memory (``memory_method`` of its result)
MEMORY_METHOD = (
    f"a fresh subprocess per row builds the model and batch and runs {MEMORY_STEPS} "
    f"training steps with MALLOC_MMAP_THRESHOLD_={MMAP_ENV['MALLOC_MMAP_THRESHOLD_']} (freed "
    f"large blocks return to the OS); peak = the rise of its peak RSS (VmHWM) in the "
    f"last step above its RSS after the first, plus AdamW's state: gradients, AdamW state "
    f"and activations, above the weights and batch"
)


@dataclass
class TrainBenchConfig:
    """What to measure.

    Attributes:
        d_model, n_heads, n_layers, vocab_size, d_ff: the shape (``d_ff`` None = ``4 d``);
            ``n_layers`` decoder layers for ``lm``.
        n_encoder_layers, n_decoder_layers: the seq2seq stacks.
        seq_lens: tokens per sequence (source and target for seq2seq), one group each.
        tokens: tokens per step; a step trains ``max(1, tokens // seq_len)`` sequences.
        models: names from :data:`~qkv.bench._train_steps.TRAIN_MODELS`.
        compile: ``torch.compile`` every model (and add the eager ``qkv_eager`` row).
        nanogpt: a checkout of karpathy/nanoGPT (its folder or its ``model.py``): adds the
            ``nanogpt_real`` row, its ``GPT`` (None: no such row).
        memory: measure each row's peak memory of a step in a fresh subprocess after the
            timing (see the module docstring).
        matmul_size: ``n`` of the ``(n, n) @ (n, n)`` fp32 matmul that measures the peak.
        repeats: the most timed rounds (steps of each model).
        min_repeats: rounds every model runs whatever ``time_budget``.
        warmup: untimed steps of each model first.
        time_budget: seconds of timed steps per suite, roughly, shared by the models
            (:func:`~qkv.bench._timing.time_interleaved`).
        threads: ``torch.set_num_threads``; ``None`` keeps torch's.
        lr: AdamW learning rate.
        seed: of the data and the weights.
    """

    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 6
    vocab_size: int = 8192
    d_ff: int | None = None
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    seq_lens: tuple[int, ...] = (256, 1024, 2048)
    tokens: int = 2048
    models: tuple[str, ...] = tuple(TRAIN_MODELS)
    compile: bool = False
    nanogpt: str | None = None
    memory: bool = True
    matmul_size: int = 2048
    repeats: int = 7
    min_repeats: int = 3
    warmup: int = 2
    time_budget: float = 120.0
    threads: int | None = None
    lr: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        check_subset("models", self.models, TRAIN_MODELS)
        check_sizes("seq_lens", self.seq_lens)
        check_bool("compile", self.compile)
        check_bool("memory", self.memory)
        if self.nanogpt is not None:
            load_nanogpt(self.nanogpt)  # a bad checkout fails here, naming the path
        check_settings(
            self,
            (
                "tokens",
                "matmul_size",
                "repeats",
                "min_repeats",
                "n_encoder_layers",
                "n_decoder_layers",
            ),
        )
        _ = self.shape  # validates the sizes

    def batch_size(self, seq_len: int) -> int:
        """Sequences per step at ``seq_len``."""
        return max(1, self.tokens // seq_len)

    @property
    def shape(self) -> ModelShape:
        """The shape every model of the run shares."""
        return ModelShape(
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            vocab_size=self.vocab_size,
            max_len=max(self.seq_lens),
            d_ff=self.d_ff,
            n_encoder_layers=self.n_encoder_layers,
            n_decoder_layers=self.n_decoder_layers,
        )


@dataclass
class TrainMeasurement(TimedRow):
    """One model of one suite (status and times: :class:`~qkv.bench._timing.TimedRow`).

    Attributes:
        seq_len: tokens per sequence.
        batch: sequences per step, the batch size (``batch``, the JSON key of ``qkv bench``
            results, is kept).
        twin: the qkv model this one is compared with (itself for qkv models).
        parameters: the model's parameter count.
        tokens_per_s: tokens of a batch over the median step time.
        model_tflops: model FLOPs of one step (:func:`step_flops`), in TFLOP.
        mfu: model FLOPs utilization, ``model FLOPs / (step time * peak)``.
        compile_s: with ``compile``, how much longer the first step took than the median
            (the compiler's time at this length).
        qkv_speedup: ``time(this) / time(twin)``, the median of per-round ratios: how many
            times faster the qkv twin trains (1.0 on qkv rows).
        loss: the loss of the last step timed.
        peak_bytes: peak memory of a training step above the weights and batch (gradients,
            AdamW state, activations), measured in a fresh subprocess (the result's
            ``memory_method``).
        memory_vs_qkv: ``peak_bytes / the twin's peak_bytes`` (> 1: the qkv twin needs
            less).
    """

    suite: str
    seq_len: int
    batch: int
    model: str
    description: str
    twin: str
    parameters: int | None = None
    tokens_per_s: float | None = None
    model_tflops: float | None = None
    mfu: float | None = None
    compile_s: float | None = None
    qkv_speedup: float | None = None
    loss: float | None = None
    peak_bytes: int | None = None
    memory_vs_qkv: float | None = None


@dataclass
class TrainBenchResult(BenchResult[TrainBenchConfig, TrainMeasurement]):
    """What :func:`run_train_bench` measured (``--json`` writes :meth:`to_json`)."""

    benchmark: ClassVar[str] = "train"
    matmul_gflops: dict[str, float] = field(default_factory=dict)
    memory_method: str = ""
    #: with ``compile``: the seconds of the compiler's one-time start-up in this process
    #: (:func:`~qkv.bench._train_steps.warm_compiler`), charged to no model's ``compile_s``
    compiler_startup_s: float | None = None

    @property
    def peak_gflops(self) -> float | None:
        """The matmul rate MFU divides by (the better of before and after)."""
        vals = [v for v in self.matmul_gflops.values() if v]
        return max(vals) if vals else None

    def extra_json(self) -> dict[str, Any]:
        """The matmul rates, the peak and how memory was measured."""
        return {
            "matmul_gflops": self.matmul_gflops,
            "peak_gflops": self.peak_gflops,
            "memory_method": self.memory_method,
            "compiler_startup_s": self.compiler_startup_s,
        }


# ---------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------
def _models_of(config: TrainBenchConfig, suite: str) -> list[str]:
    names = [m for m in config.models if TRAIN_MODELS[m][0] == suite]
    return [
        m
        for m in names
        if (m != "qkv_eager" or config.compile) and (m != "nanogpt_real" or config.nanogpt)
    ]


def _build(name: str, config: TrainBenchConfig) -> nn.Module | str:
    """The model ``name``, or why it cannot run (the user's nanoGPT may refuse the shape)."""
    torch.manual_seed(config.seed)
    if name != "nanogpt_real":
        return build_model(name, config.shape)
    why = nanogpt_why_not(config.shape)
    if why is not None:
        return why
    try:
        return build_model(name, config.shape, config.nanogpt)
    except Exception as e:  # the user's code: one row fails, not the benchmark
        return f"building nanoGPT's GPT failed: {type(e).__name__}: {e}"


def _keeping_loss(
    step: Callable[[], float], losses: dict[str, float], name: str
) -> Callable[[], None]:
    """``step``, keeping its loss in ``losses[name]``."""

    def run() -> None:
        losses[name] = step()

    return run


def run_train_bench(
    config: TrainBenchConfig, progress: Callable[[TrainMeasurement], None] | None = None
) -> TrainBenchResult:
    """Time a training step of every model of ``config``, suite by suite and length by
    length (the models of a suite are built once, at the longest length); then, with
    ``config.memory``, measure each row's peak memory in a fresh subprocess.

    Args:
        config: what to measure.
        progress: called with each finished :class:`TrainMeasurement` (again once its
            memory is measured).

    Returns:
        The measurements with tokens/s, MFU, qkv's speed-up over each peer and the peak
        memory of a step.
    """
    missing = {"hf": transformers_missing(), "x_transformers": x_transformers_missing()}
    with peer_run(config, TrainBenchResult) as result:
        result.matmul_gflops["before"] = matmul_gflops(config.matmul_size)
        if config.compile:
            result.compiler_startup_s = warm_compiler()
        for suite in SUITES:
            names = _models_of(config, suite)
            if not names:
                continue
            models: dict[str, nn.Module] = {}
            opts: dict[str, torch.optim.Optimizer] = {}
            why_not: dict[str, str] = {}
            for name in names:
                reason = missing["hf"] if name.startswith("hf") else missing.get(name)
                built = reason or _build(name, config)
                if isinstance(built, str):
                    why_not[name] = built
                    continue
                model = models[name] = built
                opts[name] = torch.optim.AdamW(
                    [p for p in model.parameters() if p.requires_grad], lr=config.lr
                )
            for seq_len in config.seq_lens:
                if config.compile:
                    # The compiled losses of every model and length share one code object
                    # (loss_fn's closure), whose cache holds 8 graphs: dropping the earlier
                    # groups' keeps a later model from running eagerly past that limit.
                    torch.compiler.reset()
                n_seq = config.batch_size(seq_len)
                batch = make_batch(config.vocab_size, n_seq, seq_len, config.seed, suite)
                flops = step_flops(config.shape, suite, seq_len, n_seq)
                rows: dict[str, TrainMeasurement] = {}
                steps: dict[str, Callable[[], object]] = {}
                first: dict[str, float] = {}
                losses: dict[str, float] = {}
                for name in names:
                    _, twin, desc = TRAIN_MODELS[name]
                    row = rows[name] = TrainMeasurement(suite, seq_len, n_seq, name, desc, twin)
                    if name in why_not:
                        row.skip(why_not[name])
                        continue
                    row.parameters = count_parameters(models[name])
                    row.model_tflops = flops / 1e12
                    step = train_step(
                        models[name],
                        loss_fn(name, models[name], batch),
                        config.lr,
                        opts[name],
                        compile=config.compile and name != "qkv_eager",
                    )
                    steps[name] = _keeping_loss(step, losses, name)
                    if config.compile:
                        first[name] = cold_first_step(steps[name])
                times = time_rows(rows, steps, config)
                tokens = n_seq * seq_len
                for name, row in rows.items():
                    row.loss = losses.get(name)
                    if row.time_s:
                        row.tokens_per_s = tokens / row.time_s
                        if name in first and name != "qkv_eager":
                            row.compile_s = max(0.0, first[name] - row.time_s)
                    row.qkv_speedup = paired_ratio(times.get(name), times.get(row.twin))
                result.add(rows.values(), progress)
        result.matmul_gflops["after"] = matmul_gflops(config.matmul_size)
        peak = result.peak_gflops
        for row in result.measurements:
            if row.time_s and row.model_tflops and peak:
                row.mfu = row.model_tflops * 1e3 / (row.time_s * peak)
        _measure_memory(config, result, progress)
    return result


def _measure_memory(
    config: TrainBenchConfig,
    result: TrainBenchResult,
    progress: Callable[[TrainMeasurement], None] | None,
) -> None:
    """Each row that ran, once more in a fresh subprocess for its peak memory
    (:func:`~qkv.bench._train_steps.measure_step_memory`), and its ratio to its twin's."""
    if not config.memory:
        result.memory_method = "not measured (memory=False, --no-memory)"
        return
    result.memory_method = MEMORY_METHOD
    for row in result.measurements:
        if row.status != "ok":
            continue
        spec = {
            "model": row.model,
            "shape": asdict(config.shape),
            "seq_len": row.seq_len,
            "batch_size": row.batch,
            "seed": config.seed,
            "lr": config.lr,
            "compile": config.compile and row.model != "qkv_eager",
            "threads": result.environment.get("threads"),
            "nanogpt": config.nanogpt,
        }
        timeout = 600 + 5 * config.time_budget
        r = run_isolated("qkv.bench._train_steps", spec, timeout, env=MMAP_ENV)
        if r["status"] == "ok":
            row.peak_bytes = int(r["peak_bytes"])
        else:
            row.reason = f"memory not measured: {r['reason']}"
        if progress is not None:
            progress(row)
    peaks = {(r.suite, r.seq_len, r.model): r.peak_bytes for r in result.measurements}
    for row in result.measurements:
        ref = peaks.get((row.suite, row.seq_len, row.twin))
        if ref and row.peak_bytes is not None:
            row.memory_vs_qkv = row.peak_bytes / ref


def format_train_table(result: TrainBenchResult) -> str:
    """A plain-text table of the measurements, with the run's settings above."""
    cfg, env = result.config, result.environment
    head = (
        "suite", "len", "batch", "model", "params", "step ms", "tokens/s", "MFU",
        "qkv speed-up", "peak MiB", "mem/qkv", "vs", "note",
    )  # fmt: skip
    rows = []
    for m in result.measurements:
        note = m.reason if m.status != "ok" else m.description
        if m.status == "ok" and m.reason:  # ran, but its memory could not be measured
            note += f"; {m.reason}"
        if m.compile_s is not None:
            note += f"; compiled, first step +{m.compile_s:.0f} s"
        rows.append(
            (
                m.suite,
                str(m.seq_len),
                str(m.batch),
                m.model,
                fmt(None if m.parameters is None else m.parameters / 1e6, ".2f", "M"),
                fmt(None if m.time_s is None else m.time_s * 1e3, ".0f"),
                fmt(m.tokens_per_s, ".0f"),
                fmt(None if m.mfu is None else 100 * m.mfu, ".1f", "%"),
                fmt(m.qkv_speedup, ".2f", "x"),
                fmt(None if m.peak_bytes is None else m.peak_bytes / 2**20, ".1f"),
                fmt(m.memory_vs_qkv, ".2f", "x"),
                m.twin,
                note,
            )
        )
    info = [
        f"training step (forward, cross-entropy, backward, AdamW): d={cfg.d_model} "
        f"h={cfg.n_heads} d_ff={cfg.d_ff or 4 * cfg.d_model} vocab={cfg.vocab_size}; lm "
        f"{cfg.n_layers} layers; seq2seq {cfg.n_encoder_layers}+{cfg.n_decoder_layers} "
        f"layers; {cfg.tokens} tokens per step; fp32, no dropout, "
        f"{'torch.compile, ' if cfg.compile else ''}"
        f"{env.get('threads')} threads, torch {env.get('torch')}, transformers "
        f"{env.get('transformers')}",
        f"matmul peak ({cfg.matmul_size}^3 fp32): {fmt(result.peak_gflops, '.1f')} GFLOP/s "
        f"(before {fmt(result.matmul_gflops.get('before'), '.1f')}, after "
        f"{fmt(result.matmul_gflops.get('after'), '.1f')}); MFU = model FLOPs "
        f"T (6 N + 12 n_attn d s) / (step time x peak)",
        "qkv speed-up = time(model) / time(vs), median of per-round ratios; "
        "mem/qkv = peak memory / vs's",
        f"peak memory: {result.memory_method}",
    ]
    if result.compiler_startup_s is not None:
        info.append(
            f"compiler start-up (a tiny model compiled first, charged to no row): "
            f"{result.compiler_startup_s:.1f} s"
        )
    info.append("")
    return "\n".join(info) + format_rows(head, rows, left=(0, 3, 11, 12))
