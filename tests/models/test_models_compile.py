"""Every model family compiles whole: ``torch.compile(model, fullgraph=True)`` traces the
forward and (through AOTAutograd) the backward without a graph break, and gives the eager
model's outputs and gradients. Recording attention still works on a compiled model (it
runs eagerly inside ``record_attention``).

The suite traces with the ``aot_eager`` backend (Dynamo + AOTAutograd, no code
generation: seconds, not minutes, on CPU); one slow test runs inductor itself."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

import qkv.models as M
from qkv.interp import record_attention


def _inputs(model: torch.nn.Module) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(0)
    if isinstance(model, M.Seq2SeqTransformer):
        src = torch.randint(4, 50, (2, 7), generator=g)
        tgt = torch.randint(4, 50, (2, 5), generator=g)
        src_mask = torch.ones(2, 7, dtype=torch.bool)
        src_mask[-1, 5:] = False
        return (src, tgt), {"src_padding_mask": src_mask}
    if isinstance(model, M.DecoderLM):
        ids = torch.randint(0, 50, (2, 9), generator=g)
        mask = torch.ones(2, 9, dtype=torch.bool)
        mask[-1, :3] = False  # left padding
        return (ids,), {"padding_mask": mask}
    if isinstance(model, M.EncoderModel):
        ids = torch.randint(1, 50, (2, 8), generator=g)
        mask = torch.ones(2, 8, dtype=torch.bool)
        mask[-1, 6:] = False
        return (ids,), {"padding_mask": mask}
    return (torch.randn(2, 3, 16, 16, generator=g),), {}


def _tensors(out: object) -> list[torch.Tensor]:
    """Every output of a call: the tensor, or each tensor field of an EncoderOutput."""
    if isinstance(out, torch.Tensor):
        return [out]
    fields = ("last_hidden_state", "pooled", "mlm_logits", "logits")
    return [t for t in (getattr(out, f) for f in fields) if t is not None]


def _forward_backward(model: torch.nn.Module, call: torch.nn.Module) -> tuple:
    args, kwargs = _inputs(model)
    outs = _tensors(call(*args, **kwargs))
    sum(t.pow(2).mean() for t in outs).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return [t.detach() for t in outs], grads


FAMILIES = {
    "lm": {},
    "lm_rope_gqa": {"pos": "rope", "n_kv_heads": 2, "norm": "rms", "activation": "swiglu"},
    "lm_alibi": {"pos": "alibi"},
    "bert": {"n_classes": 3},  # classifier, pooler and masked-LM head
    "seq2seq": {},
    "seq2seq_relative": {"pos": "relative"},
    "vit": {},
}
#: the four families run in the default suite; the variants (positions, heads) are slow
VARIANTS = {"lm_rope_gqa", "lm_alibi", "seq2seq_relative"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in VARIANTS else n for n in sorted(FAMILIES)],
)
def test_every_family_compiles_with_fullgraph_and_matches_eager(tiny, name):
    torch._dynamo.reset()
    model = getattr(tiny, name.split("_")[0])(**FAMILIES[name]).train()
    ref, ref_grads = _forward_backward(model, model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # breaks would raise
    out, grads = _forward_backward(model, compiled)
    assert len(out) == len(ref) == (4 if name == "bert" else 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert ref_grads.keys() <= grads.keys()
    for n in grads:
        # heads the loss does not use: None eagerly, zeros from the compiled backward
        want = ref_grads.get(n, torch.zeros_like(grads[n]))
        torch.testing.assert_close(grads[n], want, atol=1e-5, rtol=1e-5, msg=n)


@pytest.mark.slow
def test_dropout_models_compile_with_fullgraph(tiny):
    torch._dynamo.reset()
    model = tiny.lm(dropout=0.1, attn_dropout=0.1).train()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    args, kwargs = _inputs(model)
    compiled(*args, **kwargs).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_recording_a_compiled_model_runs_it_eagerly_with_the_same_outputs(tiny):
    torch._dynamo.reset()
    model = tiny.lm()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    args, _ = _inputs(model)
    plain = compiled(*args)
    with record_attention(compiled) as rec:
        recorded = compiled(*args)
    assert len(rec) == len(model.decoder.layers)
    assert rec["decoder.layers.0.self_attn"].weights.shape == (2, 4, 9, 9)
    torch.testing.assert_close(recorded, plain, atol=1e-6, rtol=1e-6)
    # and after the block, the compiled graph runs again (no recording, same outputs)
    with record_attention(model) as rec2:
        pass
    torch.testing.assert_close(compiled(*args), plain)
    assert len(rec2) == 0


def test_eager_models_still_check_positions_against_the_table(tiny):
    model = tiny.lm(max_len=8)
    with pytest.raises(ValueError, match="max_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.slow
def test_inductor_compiles_the_language_model_forward_and_backward(tiny):
    torch._dynamo.reset()
    model = tiny.lm().train()
    ref, ref_grads = _forward_backward(model, model)
    out, grads = _forward_backward(model, torch.compile(model, fullgraph=True))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], atol=1e-4, rtol=1e-4, msg=n)


@pytest.mark.parametrize(
    "preset",
    # 8 s: DETR's backbone; Swin's compile stays in the fast tier
    ["swin-tiny", pytest.param("detr-tiny", marks=pytest.mark.slow)],
)
def test_vision_families_compile_with_fullgraph_and_match_eager(preset):
    # Swin (windows, shifts, patch merging, drop path) and DETR (CNN backbone, object
    # queries): one graph each, forward and backward, the eager outputs and gradients
    torch._dynamo.reset()
    torch.manual_seed(0)
    if preset == "swin-tiny":
        model = M.from_preset(preset, drop_path=0.0).train()  # drop path traced, p = 0
    else:
        model = M.from_preset(preset).eval()  # DETR's dropout off: eager and compiled agree
    cfg = model.config
    x = torch.randn(2, getattr(cfg, "in_channels", 3), cfg.image_size, cfg.image_size)

    def run(call):
        out = call(x)
        outs = [out] if isinstance(out, torch.Tensor) else [out.logits, out.boxes]
        sum(t.pow(2).mean() for t in outs).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return [t.detach() for t in outs], grads

    ref, ref_grads = run(model)
    out, grads = run(torch.compile(model, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert ref_grads.keys() <= grads.keys()
    for n in grads:
        want = ref_grads.get(n, torch.zeros_like(grads[n]))
        torch.testing.assert_close(grads[n], want, atol=1e-5, rtol=1e-5, msg=n)


_EFFICIENT = dict(d_model=32, n_heads=4, d_ff=64, dropout=0.0, attn_dropout=0.0, vocab_size=50)
EFFICIENT = {
    "lm_xl": lambda: M.DecoderLM(
        M.LMConfig(**_EFFICIENT, n_layers=2, max_len=32, pos="xl", mem_len=8, segment_len=8)
    ),
    "lm_favor": lambda: M.DecoderLM(
        M.LMConfig(**_EFFICIENT, n_layers=2, max_len=32, attn_kind="favor", favor_features=16)
    ),
    "bert_linformer": lambda: M.EncoderModel(
        M.EncoderConfig(**_EFFICIENT, n_layers=2, max_len=16, attn_kind="linformer", linformer_k=8)
    ),
    "xlnet": lambda: M.XLNetLM(M.XLNetConfig(**_EFFICIENT, n_layers=2, pad_token_id=0)),
}


@pytest.mark.parametrize(
    "name",
    # 10 s: XL's memory recurrence; XLNet keeps the relative shift in the fast tier
    [pytest.param(n, marks=pytest.mark.slow) if n == "lm_xl" else n for n in sorted(EFFICIENT)],
)
def test_xlnet_and_the_efficient_variants_compile_with_fullgraph(name):
    # Transformer-XL's relative shift is a pad, slice and reshape (no as_strided), so the
    # XL score and XLNet's two-stream attention trace whole; FAVOR+ and Linformer too.
    # (LSH attention draws its rotations from a seeded torch.Generator and reversible
    # layers replay RNG states in backward: those run eagerly, see docs/performance.md.)
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = EFFICIENT[name]().train()
    ids = torch.randint(1, 50, (2, 16), generator=torch.Generator().manual_seed(1))

    def run(call):
        out = call(ids)
        t = out if isinstance(out, torch.Tensor) else out.last_hidden_state
        t.pow(2).mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return t.detach(), grads

    ref, ref_grads = run(model)
    out, grads = run(torch.compile(model, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert ref_grads.keys() <= grads.keys()
    for n in grads:
        want = ref_grads.get(n, torch.zeros_like(grads[n]))
        torch.testing.assert_close(grads[n], want, atol=1e-5, rtol=1e-5, msg=n)
