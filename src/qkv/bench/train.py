"""Training throughput against peer models of identical shape (``qkv bench train``).

Suites, each timed in interleaved rounds in one process on the same batch
(:mod:`qkv.bench._timing`):

* ``lm``: qkv's :class:`~qkv.models.DecoderLM` (``qkv``) against ``transformers``'
  ``GPT2LMHeadModel`` with ``attn_implementation="sdpa"`` (``hf_gpt2``) and a GPT built from
  ``torch.nn.TransformerEncoderLayer`` (``torch_gpt``);
* ``seq2seq``: qkv's :class:`~qkv.models.Seq2SeqTransformer` shaped as BART (``qkv_bart``)
  and as Marian (``qkv_marian``) against ``BartForConditionalGeneration`` (``hf_bart``) and
  ``MarianMTModel`` (``hf_marian``).

One step is what a training loop does: forward, ``F.cross_entropy`` over the logits (the
same call for every model), ``backward``, ``AdamW.step`` and ``zero_grad``. Throughput is
``batch * seq_len`` tokens (target tokens for seq2seq) per step time. All models run without
dropout, in fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.bench._timing import (
    BenchResult,
    TimedRow,
    check_settings,
    check_subset,
    environment,
    fmt,
    format_rows,
    num_threads,
    paired_ratio,
    quiet_transformers,
    time_rows,
    transformers_missing,
)
from qkv.bench._twins import (
    ModelShape,
    TorchGPT,
    count_parameters,
    hf_gpt2,
    hf_seq2seq,
    qkv_lm,
    qkv_seq2seq,
)

#: model -> (suite, the qkv model it is compared with (itself for qkv), description)
TRAIN_MODELS: dict[str, tuple[str, str, str]] = {
    "qkv": ("lm", "qkv", "qkv.models.DecoderLM"),
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
        seq_len: tokens per sequence (source and target for seq2seq).
        batch: sequences per step.
        models: names from :data:`TRAIN_MODELS`.
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
    seq_len: int = 256
    batch: int = 8
    models: tuple[str, ...] = tuple(TRAIN_MODELS)
    repeats: int = 7
    min_repeats: int = 3
    warmup: int = 2
    time_budget: float = 400.0
    threads: int | None = None
    lr: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        check_subset("models", self.models, TRAIN_MODELS)
        check_settings(
            self,
            (
                "seq_len",
                "batch",
                "repeats",
                "min_repeats",
                "n_encoder_layers",
                "n_decoder_layers",
            ),
        )
        _ = self.shape  # validates the sizes

    @property
    def shape(self) -> ModelShape:
        """The shape every model of the run shares."""
        return ModelShape(
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            vocab_size=self.vocab_size,
            max_len=self.seq_len,
            d_ff=self.d_ff,
            n_encoder_layers=self.n_encoder_layers,
            n_decoder_layers=self.n_decoder_layers,
        )


@dataclass
class TrainMeasurement(TimedRow):
    """One model of one suite (status and times: :class:`~qkv.bench._timing.TimedRow`).

    Attributes:
        twin: the qkv model this one is compared with (itself for qkv models).
        parameters: the model's parameter count.
        tokens_per_s: tokens of a batch over the median step time.
        qkv_speedup: ``time(this) / time(twin)``, the median of per-round ratios: how many
            times faster the qkv twin trains (1.0 on qkv rows).
    """

    suite: str
    model: str
    description: str
    twin: str
    parameters: int | None = None
    tokens_per_s: float | None = None
    qkv_speedup: float | None = None


@dataclass
class TrainBenchResult(BenchResult[TrainBenchConfig, TrainMeasurement]):
    """What :func:`run_train_bench` measured (``--json`` writes :meth:`to_json`)."""

    benchmark: ClassVar[str] = "train"


# ---------------------------------------------------------------------------------------
# models and steps
# ---------------------------------------------------------------------------------------
def build_model(name: str, shape: ModelShape) -> nn.Module:
    """The model ``name`` of :data:`TRAIN_MODELS` at ``shape``."""
    if name == "qkv":
        return qkv_lm(shape)
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


def make_batch(cfg: TrainBenchConfig, suite: str) -> dict[str, Tensor]:
    """The one batch every model of a suite trains on."""
    gen = torch.Generator().manual_seed(cfg.seed)
    v, b, s = cfg.vocab_size, cfg.batch, cfg.seq_len
    if suite == "lm":
        ids = torch.randint(1, v, (b, s + 1), generator=gen)
        return {"inputs": ids[:, :-1], "labels": ids[:, 1:]}
    src = torch.randint(1, v, (b, s), generator=gen)
    tgt = torch.randint(1, v, (b, s + 1), generator=gen)
    return {"src": src, "tgt_in": tgt[:, :-1], "labels": tgt[:, 1:]}


def train_step(
    model: nn.Module, logits: Callable[[], Tensor], labels: Tensor, lr: float
) -> Callable[[], float]:
    """One optimizer step: forward, cross-entropy, backward, ``AdamW.step``, ``zero_grad``."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()

    def step() -> float:
        out = logits()  # (b, s, vocab)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), labels.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


# ---------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------
def run_train_bench(
    config: TrainBenchConfig, progress: Callable[[TrainMeasurement], None] | None = None
) -> TrainBenchResult:
    """Time a training step of every model of ``config``, suite by suite.

    Args:
        config: what to measure.
        progress: called with each finished :class:`TrainMeasurement`.

    Returns:
        The measurements with tokens/s and qkv's speed-up over each peer.
    """
    hf_missing = transformers_missing()
    with num_threads(config.threads) as threads, quiet_transformers():
        result = TrainBenchResult(config, environment=environment(threads))
        for suite in SUITES:
            names = [m for m in config.models if TRAIN_MODELS[m][0] == suite]
            if not names:
                continue
            batch = make_batch(config, suite)
            rows: dict[str, TrainMeasurement] = {}
            steps: dict[str, Callable[[], object]] = {}
            for name in names:
                _, twin, desc = TRAIN_MODELS[name]
                row = rows[name] = TrainMeasurement(suite, name, desc, twin)
                if name.startswith("hf") and hf_missing:
                    row.skip(hf_missing)
                    continue
                torch.manual_seed(config.seed)
                model = build_model(name, config.shape)
                row.parameters = count_parameters(model)
                steps[name] = train_step(
                    model, logits_fn(name, model, batch), batch["labels"], config.lr
                )
            times = time_rows(rows, steps, config)
            tokens = config.batch * config.seq_len
            for name, row in rows.items():
                if row.time_s:
                    row.tokens_per_s = tokens / row.time_s
                row.qkv_speedup = paired_ratio(times.get(name), times.get(row.twin))
            result.add(rows.values(), progress)
    return result


def format_train_table(result: TrainBenchResult) -> str:
    """A plain-text table of the measurements, with the run's settings above."""
    cfg, env = result.config, result.environment
    head = ("suite", "model", "params", "step ms", "tokens/s", "qkv speed-up", "vs", "note")
    rows = [
        (
            m.suite,
            m.model,
            fmt(None if m.parameters is None else m.parameters / 1e6, ".2f", "M"),
            fmt(None if m.time_s is None else m.time_s * 1e3, ".0f"),
            fmt(m.tokens_per_s, ".0f"),
            fmt(m.qkv_speedup, ".2f", "x"),
            m.twin,
            m.reason if m.status != "ok" else m.description,
        )
        for m in result.measurements
    ]
    info = [
        f"training step (forward, cross-entropy, backward, AdamW): d={cfg.d_model} "
        f"h={cfg.n_heads} d_ff={cfg.d_ff or 4 * cfg.d_model} vocab={cfg.vocab_size}; lm "
        f"{cfg.n_layers} layers; seq2seq {cfg.n_encoder_layers}+{cfg.n_decoder_layers} "
        f"layers; batch {cfg.batch} x {cfg.seq_len} tokens; fp32, no dropout, "
        f"{env.get('threads')} threads, torch {env.get('torch')}, transformers "
        f"{env.get('transformers')}",
        "qkv speed-up = time(model) / time(vs), median of per-round ratios",
        "",
    ]
    return "\n".join(info) + format_rows(head, rows, left=(0, 1, 6, 7))
