"""Start training from pretrained weights: copy every tensor whose name and shape match,
initialise the rest (a new head), and say which is which; freeze modules that fine-tuning
should leave as loaded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor, nn

#: Modules that may be replaced when fine-tuning (a task's own head): their tensors may be
#: missing from the source, shaped differently (another number of classes), or dropped.
HEAD_PREFIXES: tuple[str, ...] = ("classifier.", "head.", "mlm_head.", "lm_head.", "pooler.")


@dataclass
class InitReport:
    """What :func:`init_from_state` did.

    Attributes:
        loaded: tensors copied from the source.
        new: the model's tensors left as initialised (heads the source lacks or shapes
            differently).
        dropped: source tensors the model has no place for (heads it does not have).
    """

    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the log."""
        parts = [f"loaded {len(self.loaded)} tensors"]
        if self.new:
            parts.append(f"initialised {len(self.new)} new: {', '.join(self.new)}")
        if self.dropped:
            parts.append(f"dropped {len(self.dropped)} unused: {', '.join(self.dropped)}")
        return "; ".join(parts)


def _is_head(name: str) -> bool:
    return name.startswith(HEAD_PREFIXES)


def init_from_state(model: nn.Module, source: Mapping[str, Tensor]) -> InitReport:
    """Copy ``source`` tensors into ``model`` by name, strictly except for heads.

    Every tensor of the model's body must be in the source with the same shape; head tensors
    (:data:`HEAD_PREFIXES`) that are missing or shaped differently stay as initialised, and
    source heads the model lacks are dropped. Both are listed in the report.

    Args:
        model: the freshly built model.
        source: the pretrained state dict.

    Returns:
        An :class:`InitReport`.

    Raises:
        ValueError: body tensors missing from the source, unexpected in it, or of another
            shape, each listed by name (with both shapes).
    """
    own = model.state_dict()
    report = InitReport()
    problems: list[str] = []
    take: dict[str, Tensor] = {}
    for name, value in source.items():
        if name not in own:
            if _is_head(name):
                report.dropped.append(name)
            else:
                problems.append(f"unexpected {name}")
        elif tuple(own[name].shape) != tuple(value.shape):
            if _is_head(name):
                report.dropped.append(name)
            else:
                problems.append(
                    f"{name}: pretrained {tuple(value.shape)} vs model {tuple(own[name].shape)}"
                )
        else:
            take[name] = value
    # tied tensors (an output projection sharing the embedding) are saved under one name
    tied: dict[int, list[str]] = {}
    for name, t in own.items():
        tied.setdefault(t.data_ptr(), []).append(name)
    for names in tied.values():
        got = [n for n in names if n in take]
        for n in names:
            if got and n not in take:
                take[n] = take[got[0]]
    for name in own:
        if name not in take:
            if _is_head(name):
                report.new.append(name)
            elif name in source:
                pass  # shape mismatch, already listed
            else:
                problems.append(f"missing {name}")
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise ValueError(
            "the pretrained weights do not fit the model (strict by name, except heads): "
            + "; ".join(shown)
        )
    model.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in take.items()}})
    report.loaded, report.new, report.dropped = (
        sorted(take),
        sorted(report.new),
        sorted(report.dropped),
    )
    return report


def parameters_under(model: nn.Module, name: str, what: str) -> list[str]:
    """The names of the parameters of module (or parameter) ``name`` of ``model``.

    Raises:
        ValueError: none (``{what}: 'x' is no module or parameter of the model; its
            modules: ...``, listing the top-level modules).
    """
    hit = [n for n, _ in model.named_parameters() if n == name or n.startswith(name + ".")]
    if not hit:
        top = ", ".join(n for n, _ in model.named_children())
        raise ValueError(
            f"{what}: {name!r} is no module or parameter of the model; its modules: {top}"
        )
    return hit


def freeze_modules(model: nn.Module, names: str) -> list[str]:
    """Stop the gradients of whole modules (``requires_grad = False``) so that fine-tuning
    leaves them as loaded; the optimizer then never sees them.

    Args:
        model: the model.
        names: comma-separated module names as :meth:`~torch.nn.Module.named_modules`
            gives them (``"embed"``, ``"encoder.layers.0"``), or a parameter name; empty =
            nothing.

    Returns:
        The names of the frozen parameters.

    Raises:
        ValueError: a name that is no module or parameter of the model (the top-level
            modules are listed).
    """
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    frozen: list[str] = []
    for want in wanted:
        frozen += [n for n in parameters_under(model, want, "freeze") if n not in frozen]
    params = dict(model.named_parameters())
    for n in frozen:
        params[n].requires_grad_(False)
    return frozen


__all__ = ["HEAD_PREFIXES", "InitReport", "freeze_modules", "init_from_state", "parameters_under"]
