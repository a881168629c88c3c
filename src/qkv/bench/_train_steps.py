"""The models and the training step of ``qkv bench train`` (:mod:`qkv.bench.train`), and
the subprocess that measures one row's peak memory of a step.

One step is what a training loop does: forward, ``F.cross_entropy`` over the logits (the
same call for every model; nanoGPT's own ``GPT`` makes that call inside its forward, from
the targets, as nanoGPT trains), ``backward``, ``AdamW.step`` and ``zero_grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.bench._isolate import serve
from qkv.bench._memory import optimizer_state_bytes, peak_bytes
from qkv.bench._timing import time_once
from qkv.bench._twins import (
    ModelShape,
    TorchGPT,
    hf_gpt2,
    hf_seq2seq,
    nanogpt_gpt,
    paper_gpt,
    qkv_lm,
    qkv_seq2seq,
    x_transformers_gpt,
)

#: model -> (suite, the qkv model it is compared with (itself for qkv), description)
TRAIN_MODELS: dict[str, tuple[str, str, str]] = {
    "qkv": ("lm", "qkv", "qkv.models.DecoderLM"),
    "qkv_eager": ("lm", "qkv", "qkv.models.DecoderLM not compiled (only with --compile)"),
    "nanogpt": ("lm", "qkv", "nanoGPT-shaped GPT-2 from the papers (qkv.bench._paper_gpt)"),
    "nanogpt_real": ("lm", "qkv", "karpathy/nanoGPT's GPT, model.py of --nanogpt"),
    "x_transformers": ("lm", "qkv", "x-transformers TransformerWrapper(Decoder)"),
    "hf_gpt2": ("lm", "qkv", "transformers GPT2LMHeadModel (sdpa)"),
    "torch_gpt": ("lm", "qkv", "torch.nn.TransformerEncoderLayer stack"),
    "qkv_bart": ("seq2seq", "qkv_bart", "qkv.models.Seq2SeqTransformer, BART-shaped"),
    "hf_bart": ("seq2seq", "qkv_bart", "transformers BartForConditionalGeneration (sdpa)"),
    "qkv_marian": ("seq2seq", "qkv_marian", "qkv.models.Seq2SeqTransformer, Marian-shaped"),
    "hf_marian": ("seq2seq", "qkv_marian", "transformers MarianMTModel (sdpa)"),
}
SUITES: tuple[str, ...] = ("lm", "seq2seq")


def build_model(name: str, shape: ModelShape, nanogpt: str | None = None) -> nn.Module:
    """The model ``name`` of :data:`TRAIN_MODELS` at ``shape`` (``nanogpt``: the nanoGPT
    checkout of ``nanogpt_real``)."""
    if name in ("qkv", "qkv_eager"):
        return qkv_lm(shape)
    if name == "nanogpt":
        return paper_gpt(shape)
    if name == "nanogpt_real":
        if nanogpt is None:
            raise ValueError("the nanogpt_real row needs a nanoGPT checkout (nanogpt=PATH)")
        return nanogpt_gpt(nanogpt, shape)
    if name == "x_transformers":
        return x_transformers_gpt(shape)
    if name == "hf_gpt2":
        return hf_gpt2(shape)
    if name == "torch_gpt":
        return TorchGPT(shape)
    style = name.split("_", 1)[1]
    return qkv_seq2seq(shape, style) if name.startswith("qkv") else hf_seq2seq(shape, style)


def _logits_fn(name: str, model: nn.Module, batch: dict[str, Tensor]) -> Callable[[], Tensor]:
    """A function computing the model's logits on ``batch`` as its users call it."""
    if TRAIN_MODELS[name][0] == "lm":
        x = batch["inputs"]
        if name == "hf_gpt2":
            return lambda: model(input_ids=x).logits
        return lambda: model(x)
    src, tgt_in = batch["src"], batch["tgt_in"]
    if name.startswith("hf"):
        return lambda: model(input_ids=src, decoder_input_ids=tgt_in).logits
    return lambda: model(src, tgt_in)


def loss_fn(name: str, model: nn.Module, batch: dict[str, Tensor]) -> Callable[[], Tensor]:
    """A function computing the training loss of ``model`` on ``batch``: ``F.cross_entropy``
    over its logits, or for nanoGPT's own ``GPT`` the loss its forward returns (the same
    ``F.cross_entropy``; its ``ignore_index=-1`` never matches a label here)."""
    labels = batch["labels"]
    if name == "nanogpt_real":
        x = batch["inputs"]
        return lambda: model(x, labels)[1]
    logits = _logits_fn(name, model, batch)

    def loss() -> Tensor:
        out = logits()  # (b, s, vocab)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), labels.reshape(-1))

    return loss


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


def make_batch(
    vocab_size: int, batch_size: int, seq_len: int, seed: int, suite: str
) -> dict[str, Tensor]:
    """The one batch every model of a suite trains on at ``seq_len`` (contiguous tensors:
    nanoGPT ``view``s its targets)."""
    gen = torch.Generator().manual_seed(seed + seq_len)
    v, b, s = vocab_size, batch_size, seq_len
    if suite == "lm":
        ids = torch.randint(1, v, (b, s + 1), generator=gen)
        return {"inputs": ids[:, :-1].contiguous(), "labels": ids[:, 1:].contiguous()}
    src = torch.randint(1, v, (b, s), generator=gen)
    tgt = torch.randint(1, v, (b, s + 1), generator=gen)
    return {"src": src, "tgt_in": tgt[:, :-1].contiguous(), "labels": tgt[:, 1:].contiguous()}


def train_step(
    model: nn.Module,
    loss: Callable[[], Tensor],
    lr: float,
    opt: torch.optim.Optimizer | None = None,
    compile: bool = False,
) -> Callable[[], float]:
    """One optimizer step: ``loss()`` (:func:`loss_fn`), backward, ``AdamW.step``,
    ``zero_grad`` (``opt``: an AdamW over the model's parameters, made here when None;
    ``compile``: the loss, forward included, ``torch.compile``'d as one function, as ``qkv
    train --compile`` compiles the objective's loss, with static shapes: every length of
    the benchmark is compiled for itself, never as a dynamic-shape graph that a change of
    length in an earlier group would otherwise make of the loss functions' shared code).

    Returns:
        The step; it returns the loss.
    """
    if opt is None:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    loss_of = torch.compile(loss, dynamic=False) if compile else loss

    def step() -> float:
        value = loss_of()
        value.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(value.detach())

    return step


def warm_compiler() -> float:
    """Compile and run one training step of a tiny model, in a fresh inductor cache, and
    forget it: the compiler's one-time start-up in a process (loading inductor and its
    lowerings, the first C++ compiler call, the worker pool) is then charged to no model,
    where it used to land on whichever model :func:`cold_first_step` compiled first.

    Returns:
        The seconds it took.
    """
    from torch._inductor.utils import fresh_cache  # see cold_first_step

    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 8))
    x, y = torch.randn(4, 16), torch.randint(0, 8, (4,))

    def step() -> None:
        F.cross_entropy(model(x), y).backward()

    compiled = torch.compile(step, dynamic=False)
    with fresh_cache():
        seconds = time_once(compiled)
    torch.compiler.reset()
    return seconds


def cold_first_step(step: Callable[[], object]) -> float:
    """Wall seconds of the first call of a compiled ``step`` (:func:`train_step`) with
    the compiler's caches empty: a fresh inductor cache directory and inductor's in-memory
    caches cleared, so that the time is what compiling this model costs by itself. With
    the caches of the process, a model would reuse every kernel (same source, same
    shapes) that a model compiled before it in the run had already built: a nanoGPT
    compiled after qkv's identical kernels took 49 s where it takes 216 s cold, and the
    one compiled first carried the cost of both.

    Returns:
        The seconds of the first call, compilation included.
    """
    # imported here: inductor's modules take a while to load, and only --compile needs them
    from torch._inductor.utils import fresh_cache

    with fresh_cache():
        return time_once(step)


# ---------------------------------------------------------------------------------------
# peak memory of a step, in a fresh subprocess per row
# ---------------------------------------------------------------------------------------
#: training steps of a memory measurement: the first (it compiles under ``compile`` and
#: allocates AdamW's state) counts only by what it leaves allocated; the peak is the second's
MEMORY_STEPS = 2


def measure_step_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """One row's peak memory of a training step, in this process (the body of the
    subprocess :func:`qkv.bench.train.run_train_bench` starts per row): the model
    ``spec["model"]`` and its batch built as the timing built them, then
    :data:`MEMORY_STEPS` steps measured by :func:`qkv.bench._memory.peak_bytes` (the first
    as its ``warm`` call).

    Args:
        spec: ``{"model", "shape", "seq_len", "batch_size", "seed", "lr", "compile",
            "threads", "nanogpt"}``.

    Returns:
        ``{"status", "reason", "times", "peak_bytes", "loss"}`` (``loss``: the last step's).
    """
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    name, shape = spec["model"], ModelShape(**spec["shape"])
    suite = TRAIN_MODELS[name][0]
    torch.manual_seed(spec["seed"])
    model = build_model(name, shape, spec.get("nanogpt"))
    batch = make_batch(shape.vocab_size, spec["batch_size"], spec["seq_len"], spec["seed"], suite)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec["lr"])
    step = train_step(model, loss_fn(name, model, batch), spec["lr"], opt, spec["compile"])
    losses: list[float] = []

    def steps() -> None:
        for _ in range(MEMORY_STEPS - 1):
            losses.append(step())

    # on the CPU, as the benchmark runs; the first step's AdamW state counts, its set-up not
    peak = peak_bytes(steps, torch.device("cpu"), step, lambda: optimizer_state_bytes(opt))
    return {"status": "ok", "reason": "", "times": [], "peak_bytes": peak, "loss": losses[-1]}


def _worker() -> None:
    """Subprocess entry point: one JSON spec on stdin, one JSON result on stdout."""
    serve(measure_step_memory)


__all__ = [
    "MEMORY_STEPS",
    "SUITES",
    "TRAIN_MODELS",
    "build_model",
    "cold_first_step",
    "loss_fn",
    "make_batch",
    "measure_step_memory",
    "step_flops",
    "train_step",
]
