"""Training throughput against peer models of identical shape (``qkv bench train``).

Suites, each timed in interleaved rounds in one process on the same batch
(:mod:`qkv.bench._timing`):

* ``lm``: qkv's :class:`~qkv.models.DecoderLM` (``qkv``) against a nanoGPT-shaped GPT-2
  written from its papers (``nanogpt``, :mod:`qkv.bench._paper_gpt`), ``x-transformers``'
  decoder when installed (``x_transformers``), ``transformers``' ``GPT2LMHeadModel`` with
  ``attn_implementation="sdpa"`` (``hf_gpt2``) and a GPT built from
  ``torch.nn.TransformerEncoderLayer`` (``torch_gpt``);
* ``seq2seq``: qkv's :class:`~qkv.models.Seq2SeqTransformer` shaped as BART (``qkv_bart``)
  and as Marian (``qkv_marian``) against ``BartForConditionalGeneration`` (``hf_bart``) and
  ``MarianMTModel`` (``hf_marian``).

One step is what a training loop does: forward, ``F.cross_entropy`` over the logits (the
same call for every model), ``backward``, ``AdamW.step`` and ``zero_grad``. Each sequence
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
separately (``compile_s``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv._checks import check_bool
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
    time_once,
    time_rows,
    transformers_missing,
)
from qkv.bench._twins import (
    ModelShape,
    TorchGPT,
    count_parameters,
    hf_gpt2,
    hf_seq2seq,
    paper_gpt,
    qkv_lm,
    qkv_seq2seq,
    x_transformers_gpt,
    x_transformers_missing,
)
from qkv.bench.attention_peers import matmul_gflops

#: model -> (suite, the qkv model it is compared with (itself for qkv), description)
TRAIN_MODELS: dict[str, tuple[str, str, str]] = {
    "qkv": ("lm", "qkv", "qkv.models.DecoderLM"),
    "qkv_eager": ("lm", "qkv", "qkv.models.DecoderLM not compiled (only with --compile)"),
    "nanogpt": ("lm", "qkv", "nanoGPT-shaped GPT-2 from the papers (qkv.bench._paper_gpt)"),
    "x_transformers": ("lm", "qkv", "x-transformers TransformerWrapper(Decoder)"),
    "hf_gpt2": ("lm", "qkv", "transformers GPT2LMHeadModel (sdpa)"),
    "torch_gpt": ("lm", "qkv", "torch.nn.TransformerEncoderLayer stack"),
    "qkv_bart": ("seq2seq", "qkv_bart", "qkv.models.Seq2SeqTransformer, BART-shaped"),
    "hf_bart": ("seq2seq", "qkv_bart", "transformers BartForConditionalGeneration (sdpa)"),
    "qkv_marian": ("seq2seq", "qkv_marian", "qkv.models.Seq2SeqTransformer, Marian-shaped"),
    "hf_marian": ("seq2seq", "qkv_marian", "transformers MarianMTModel (sdpa)"),
}
SUITES: tuple[str, ...] = ("lm", "seq2seq")


@dataclass
class TrainBenchConfig:
    """What to measure.

    Attributes:
        d_model, n_heads, n_layers, vocab_size, d_ff: the shape (``d_ff`` None = ``4 d``);
            ``n_layers`` decoder layers for ``lm``.
        n_encoder_layers, n_decoder_layers: the seq2seq stacks.
        seq_lens: tokens per sequence (source and target for seq2seq), one group each.
        tokens: tokens per step; a step trains ``max(1, tokens // seq_len)`` sequences.
        models: names from :data:`TRAIN_MODELS`.
        compile: ``torch.compile`` every model (and add the eager ``qkv_eager`` row).
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


@dataclass
class TrainBenchResult(BenchResult[TrainBenchConfig, TrainMeasurement]):
    """What :func:`run_train_bench` measured (``--json`` writes :meth:`to_json`)."""

    benchmark: ClassVar[str] = "train"
    matmul_gflops: dict[str, float] = field(default_factory=dict)

    @property
    def peak_gflops(self) -> float | None:
        """The matmul rate MFU divides by (the better of before and after)."""
        vals = [v for v in self.matmul_gflops.values() if v]
        return max(vals) if vals else None

    def extra_json(self) -> dict[str, Any]:
        """The matmul rates and the peak."""
        return {"matmul_gflops": self.matmul_gflops, "peak_gflops": self.peak_gflops}


# ---------------------------------------------------------------------------------------
# models and steps
# ---------------------------------------------------------------------------------------
def build_model(name: str, shape: ModelShape) -> nn.Module:
    """The model ``name`` of :data:`TRAIN_MODELS` at ``shape``."""
    if name in ("qkv", "qkv_eager"):
        return qkv_lm(shape)
    if name == "nanogpt":
        return paper_gpt(shape)
    if name == "x_transformers":
        return x_transformers_gpt(shape)
    if name == "hf_gpt2":
        return hf_gpt2(shape)
    if name == "torch_gpt":
        return TorchGPT(shape)
    style = name.split("_", 1)[1]
    return qkv_seq2seq(shape, style) if name.startswith("qkv") else hf_seq2seq(shape, style)


def logits_fn(name: str, model: nn.Module, batch: dict[str, Tensor]) -> Callable[[], Tensor]:
    """A function computing the model's logits on ``batch`` as its users call it."""
    suite = TRAIN_MODELS[name][0]
    if suite == "lm":
        x = batch["inputs"]
        if name == "hf_gpt2":
            return lambda: model(input_ids=x).logits
        return lambda: model(x)
    src, tgt_in = batch["src"], batch["tgt_in"]
    if name.startswith("hf"):
        return lambda: model(input_ids=src, decoder_input_ids=tgt_in).logits
    return lambda: model(src, tgt_in)


def step_flops(shape: ModelShape, suite: str, seq_len: int, batch_size: int) -> float:
    """Model FLOPs of one training step (PaLM, appendix B): ``T (6 N + 12 n_attn d s)``
    for ``T = batch_size * seq_len`` tokens (per side for seq2seq), ``N`` the weights of the
    matmuls (attention and feed-forward projections, the output projection) and ``n_attn``
    attention sublayers of ``s = seq_len`` keys each (a seq2seq decoder layer has two)."""
    d, ff, v = shape.d_model, shape.ff, shape.vocab_size
    block = 4 * d * d + 2 * d * ff  # q, k, v, out + the two feed-forward matrices
    if suite == "lm":
        n, n_attn = shape.n_layers * block + d * v, shape.n_layers
    else:
        enc, dec = shape.n_encoder_layers, shape.n_decoder_layers
        n = enc * block + dec * (block + 4 * d * d) + d * v
        n_attn = enc + 2 * dec
    tokens = batch_size * seq_len
    return float(tokens * (6 * n + 12 * n_attn * d * seq_len))


def make_batch(cfg: TrainBenchConfig, suite: str, seq_len: int) -> dict[str, Tensor]:
    """The one batch every model of a suite trains on at ``seq_len``."""
    gen = torch.Generator().manual_seed(cfg.seed + seq_len)
    v, b, s = cfg.vocab_size, cfg.batch_size(seq_len), seq_len
    if suite == "lm":
        ids = torch.randint(1, v, (b, s + 1), generator=gen)
        return {"inputs": ids[:, :-1], "labels": ids[:, 1:]}
    src = torch.randint(1, v, (b, s), generator=gen)
    tgt = torch.randint(1, v, (b, s + 1), generator=gen)
    return {"src": src, "tgt_in": tgt[:, :-1], "labels": tgt[:, 1:]}


def train_step(
    model: nn.Module,
    logits: Callable[[], Tensor],
    labels: Tensor,
    lr: float,
    opt: torch.optim.Optimizer | None = None,
    compile: bool = False,
) -> Callable[[], float]:
    """One optimizer step: forward, cross-entropy, backward, ``AdamW.step``, ``zero_grad``
    (``opt``: an AdamW over the model's parameters, made here when None; ``compile``:
    forward and cross-entropy ``torch.compile``'d as one function, as ``qkv train
    --compile`` compiles the objective's loss)."""
    if opt is None:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()

    def forward_loss() -> Tensor:
        out = logits()  # (b, s, vocab)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), labels.reshape(-1))

    loss_of = torch.compile(forward_loss) if compile else forward_loss

    def step() -> float:
        loss = loss_of()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


# ---------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------
def _models_of(config: TrainBenchConfig, suite: str) -> list[str]:
    names = [m for m in config.models if TRAIN_MODELS[m][0] == suite]
    return [m for m in names if m != "qkv_eager" or config.compile]


def run_train_bench(
    config: TrainBenchConfig, progress: Callable[[TrainMeasurement], None] | None = None
) -> TrainBenchResult:
    """Time a training step of every model of ``config``, suite by suite and length by
    length (the models of a suite are built once, at the longest length).

    Args:
        config: what to measure.
        progress: called with each finished :class:`TrainMeasurement`.

    Returns:
        The measurements with tokens/s, MFU and qkv's speed-up over each peer.
    """
    missing = {"hf": transformers_missing(), "x_transformers": x_transformers_missing()}
    with peer_run(config, TrainBenchResult) as result:
        result.matmul_gflops["before"] = matmul_gflops(config.matmul_size)
        for suite in SUITES:
            names = _models_of(config, suite)
            if not names:
                continue
            models: dict[str, nn.Module] = {}
            opts: dict[str, torch.optim.Optimizer] = {}
            why_not: dict[str, str] = {}
            for name in names:
                reason = missing["hf"] if name.startswith("hf") else missing.get(name)
                if reason:
                    why_not[name] = reason
                    continue
                torch.manual_seed(config.seed)
                model = models[name] = build_model(name, config.shape)
                opts[name] = torch.optim.AdamW(
                    [p for p in model.parameters() if p.requires_grad], lr=config.lr
                )
            for seq_len in config.seq_lens:
                batch = make_batch(config, suite, seq_len)
                n_seq = config.batch_size(seq_len)
                flops = step_flops(config.shape, suite, seq_len, n_seq)
                rows: dict[str, TrainMeasurement] = {}
                steps: dict[str, Callable[[], object]] = {}
                first: dict[str, float] = {}
                for name in names:
                    _, twin, desc = TRAIN_MODELS[name]
                    row = rows[name] = TrainMeasurement(suite, seq_len, n_seq, name, desc, twin)
                    if name in why_not:
                        row.skip(why_not[name])
                        continue
                    row.parameters = count_parameters(models[name])
                    row.model_tflops = flops / 1e12
                    steps[name] = train_step(
                        models[name],
                        logits_fn(name, models[name], batch),
                        batch["labels"],
                        config.lr,
                        opts[name],
                        compile=config.compile and name != "qkv_eager",
                    )
                    if config.compile:
                        first[name] = time_once(steps[name])
                times = time_rows(rows, steps, config)
                tokens = n_seq * seq_len
                for name, row in rows.items():
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
    return result


def format_train_table(result: TrainBenchResult) -> str:
    """A plain-text table of the measurements, with the run's settings above."""
    cfg, env = result.config, result.environment
    head = (
        "suite", "len", "batch", "model", "params", "step ms", "tokens/s", "MFU",
        "qkv speed-up", "vs", "note",
    )  # fmt: skip
    rows = []
    for m in result.measurements:
        note = m.reason if m.status != "ok" else m.description
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
        "qkv speed-up = time(model) / time(vs), median of per-round ratios",
        "",
    ]
    return "\n".join(info) + format_rows(head, rows, left=(0, 3, 9, 10))
