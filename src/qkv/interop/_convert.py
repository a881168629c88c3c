"""The conversion engine: explicit rules between Hugging Face tensors and qkv tensors.

A family's weight map is a list of :class:`Rule` s. Each rule names the Hugging Face
tensors it reads, the qkv tensors it fills, and the transform each way (identity for most;
GPT-2's ``Conv1D`` transposes and ``c_attn`` split, BART's position offset, ...). The
engine applies the rules in both directions and, when loading, collects every missing,
unexpected and shape-mismatched tensor into one :class:`HFConversionError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

#: A transform between the tensors of one rule: inputs in order, outputs in order.
Transform = Callable[[Sequence[Tensor]], Sequence[Tensor]]


def _identity(ts: Sequence[Tensor]) -> Sequence[Tensor]:
    return ts


class HFConversionError(ValueError):
    """A checkpoint and a qkv model do not correspond; every problem is listed.

    Attributes:
        missing: ``"hf_name -> qkv_name"`` for tensors the qkv model needs that the checkpoint
            lacks.
        unexpected: checkpoint tensors that nothing reads.
        mismatched: ``"hf_name -> qkv_name: checkpoint (..) vs qkv (..)"`` shape mismatches.
        unsupported: configuration values (or model features) the conversion cannot
            represent.
    """

    def __init__(
        self,
        what: str,
        *,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[str] = (),
        unsupported: Sequence[str] = (),
    ) -> None:
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        self.unsupported = list(unsupported)
        sections = [
            ("unsupported", "unsupported configuration", self.unsupported),
            (
                "missing",
                "missing tensors (the qkv model needs them; the checkpoint lacks them)",
                self.missing,
            ),
            (
                "unexpected",
                "unexpected tensors (in the checkpoint; nothing reads them)",
                self.unexpected,
            ),
            ("mismatched", "shape mismatches", self.mismatched),
        ]
        counts = ", ".join(f"{len(items)} {short}" for short, _, items in sections if items)
        lines = [f"{what}: {counts}"]
        for _, title, items in sections:
            if items:
                lines.append(f"  {title}:")
                lines.extend(f"    {item}" for item in items)
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Rule:
    """One entry of a weight map: Hugging Face tensors ``hf`` <-> qkv tensors ``qkv``.

    Attributes:
        hf: Hugging Face tensor names read (loading) or written (saving); empty for a tensor
            that Hugging Face computes instead of storing (Marian's sinusoids), in which case
            ``to_qkv([])`` computes it.
        qkv: qkv parameter names filled (loading) or read (saving).
        to_qkv: ``[hf tensors] -> [qkv tensors]``.
        to_hf: ``[qkv tensors] -> [hf tensors]``, the inverse of ``to_qkv``.
        aliases: other names the single ``hf`` tensor may carry in a checkpoint (tied
            weights saved twice, or only under a tied name); those present are consumed and
            must equal it.
        optional: loading skips the rule when its tensors are absent (a Hugging Face buffer
            that qkv leaves out when it is zero, written back as zeros).
    """

    hf: tuple[str, ...]
    qkv: tuple[str, ...]
    to_qkv: Transform = _identity
    to_hf: Transform = _identity
    aliases: tuple[str, ...] = field(default=())
    optional: bool = False

    def __post_init__(self) -> None:
        if self.aliases and len(self.hf) != 1:
            raise ValueError(f"aliases need exactly one hf tensor, got {self.hf}")

    @property
    def label(self) -> str:
        """``"hf -> qkv"`` for messages."""
        src = ", ".join(self.hf) if self.hf else "(computed)"
        return f"{src} -> {', '.join(self.qkv)}"


def copy(hf: str, qkv: str, *, aliases: Iterable[str] = ()) -> Rule:
    """The tensor as is."""
    return Rule((hf,), (qkv,), aliases=tuple(aliases))


def transposed(hf: str, qkv: str) -> Rule:
    """A ``(in, out)`` weight (GPT-2's ``Conv1D``) <-> a ``(out, in)`` ``nn.Linear`` weight."""
    return Rule(
        (hf,),
        (qkv,),
        to_qkv=lambda ts: [ts[0].t()],
        to_hf=lambda ts: [ts[0].t()],
    )


def modules(
    pairs: Mapping[str, str],
    hf_prefix: str = "",
    qkv_prefix: str = "",
    suffixes: Sequence[str] = ("weight", "bias"),
) -> list[Rule]:
    """:func:`copy` rules for whole modules: ``hf_prefix + h + "." + s`` ->
    ``qkv_prefix + q + "." + s`` for each ``(h, q)`` of ``pairs`` and each suffix ``s``."""
    return [
        copy(f"{hf_prefix}{h}.{s}", f"{qkv_prefix}{q}.{s}")
        for h, q in pairs.items()
        for s in suffixes
    ]


def _stack(ts: Sequence[Tensor]) -> list[Tensor]:
    return [torch.cat(list(ts), dim=0)]


def stacked(
    pairs: Mapping[tuple[str, ...], str],
    hf_prefix: str = "",
    qkv_prefix: str = "",
    suffixes: Sequence[str] = ("weight", "bias"),
) -> list[Rule]:
    """Rules for projections a checkpoint keeps apart and qkv stacks along the output
    dimension (the query, key and value projections in
    :class:`~qkv.attn.MultiHeadAttention`'s ``qkv_proj``): for each ``(hs, q)`` of
    ``pairs`` and each suffix ``s``, the tensors ``hf_prefix + h + "." + s`` for ``h`` in
    ``hs``, concatenated along dim 0 <-> ``qkv_prefix + q + "." + s`` cut into ``len(hs)``
    equal parts (the families with separate projections give them equal widths)."""
    rules = []
    for hs, q in pairs.items():
        parts = len(hs)
        for s in suffixes:
            rules.append(
                Rule(
                    tuple(f"{hf_prefix}{h}.{s}" for h in hs),
                    (f"{qkv_prefix}{q}.{s}",),
                    to_qkv=_stack,
                    to_hf=lambda ts, n=parts: list(ts[0].chunk(n, dim=0)),
                )
            )
    return rules


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The tensors a weight map must cover: every parameter once (a tied tensor under its
    first name) and every persistent buffer."""
    out: dict[str, Tensor] = dict(model.named_parameters())
    params = {id(p) for p in out.values()}
    for name, t in model.state_dict(keep_vars=True).items():
        if name not in out and id(t) not in params:
            out[name] = t
    return out


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def to_qkv(
    rules: Sequence[Rule],
    checkpoint: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    *,
    ignored: Callable[[str], bool] = lambda name: False,
    what: str = "cannot convert the checkpoint",
) -> dict[str, Tensor]:
    """Apply the rules to a checkpoint.

    Args:
        rules: the family's weight map.
        checkpoint: Hugging Face tensors by name.
        targets: the qkv model's tensors by name (:func:`model_tensors`); only shapes are read.
        ignored: checkpoint names that are known and deliberately unused (old buffers, heads
            qkv does not model).
        what: the start of the error message.

    Returns:
        qkv tensors by name, covering every target.

    Raises:
        HFConversionError: missing, unexpected or shape-mismatched tensors, all listed; or
            tied copies that differ.
        RuntimeError: a weight map that names a qkv tensor the model lacks, or misses one
            (a bug in the map, not in the checkpoint).
    """
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    mismatched: list[str] = []
    covered: set[str] = set()
    for rule in rules:
        unknown = [q for q in rule.qkv if q not in targets]
        if unknown:
            raise RuntimeError(f"weight map names qkv tensors the model lacks: {unknown}")
        covered.update(rule.qkv)
        names = []
        for h in rule.hf:
            present = [n for n in (h, *rule.aliases) if n in checkpoint]
            names.append(present[0] if present else None)
            used.update(present)
            for other in present[1:]:
                if not torch.equal(checkpoint[present[0]], checkpoint[other]):
                    mismatched.append(f"{other} should equal {present[0]} (tied) but differs")
        absent = [h for h, n in zip(rule.hf, names) if n is None]
        if absent and rule.optional:
            continue
        if absent:
            missing.extend(f"{h} -> {', '.join(rule.qkv)}" for h in absent)
            continue
        try:
            tensors = list(rule.to_qkv([checkpoint[n] for n in names if n is not None]))
        except RuntimeError as e:  # a split or reshape of a tensor of the wrong shape
            shapes = [_shape(checkpoint[n]) for n in names if n is not None]
            mismatched.append(f"{rule.label}: checkpoint {shapes} cannot be converted ({e})")
            continue
        for q, t in zip(rule.qkv, tensors):
            if _shape(t) != _shape(targets[q]):
                mismatched.append(
                    f"{rule.label}: checkpoint {_shape(t)} vs qkv {_shape(targets[q])}"
                )
            else:
                out[q] = t
    uncovered = sorted(set(targets) - covered)
    if uncovered:
        raise RuntimeError(f"weight map does not cover qkv tensors {uncovered}")
    unexpected = sorted(n for n in checkpoint if n not in used and not ignored(n))
    if missing or unexpected or mismatched:
        raise HFConversionError(what, missing=missing, unexpected=unexpected, mismatched=mismatched)
    return out


def to_hf(
    rules: Sequence[Rule],
    tensors: Mapping[str, Tensor],
    *,
    what: str = "cannot convert the model",
) -> dict[str, Tensor]:
    """Apply the rules backwards: qkv tensors -> Hugging Face tensors.

    Rules without Hugging Face tensors (values Hugging Face computes) are checked instead:
    the model's tensor must equal the computed one, or the conversion would lose it.

    Args:
        rules: the family's weight map.
        tensors: the qkv model's tensors (:func:`model_tensors`).
        what: the start of the error message.

    Returns:
        Contiguous, detached Hugging Face tensors by name.

    Raises:
        HFConversionError: computed tensors the model has changed (listed).
    """
    out: dict[str, Tensor] = {}
    unsupported: list[str] = []
    for rule in rules:
        values = [tensors[q].detach() for q in rule.qkv]
        if not rule.hf:
            for q, v, ref in zip(rule.qkv, values, rule.to_qkv([])):
                if v.shape != ref.shape or not torch.allclose(v.float().cpu(), ref.float()):
                    unsupported.append(
                        f"{q} differs from the fixed table Hugging Face computes; it cannot be saved"
                    )
            continue
        for h, t in zip(rule.hf, rule.to_hf(values)):
            out[h] = t.detach().cpu().contiguous().clone()
    if unsupported:
        raise HFConversionError(what, unsupported=unsupported)
    return out
