"""The hook through which attention modules report their problems to a recorder.

A recorder is installed for the duration of a ``with`` block (see ``qkv.interp``); modules
never keep what they saw. Lives at the bottom layer so attention modules need not import
the interpretability package.

A recorder may return the problem's attention output ``(b, h, s_q, d_v)``, computed with
the weights it recorded (:func:`qkv.attn.weights.weights_and_output`): the module then
uses it instead of running its backend, so attention is computed once. It must equal the
backend's output within the numerics contract's tolerance (``docs/architecture.md``), and
may only be given for a problem without dropout and without ``return_weights``.

Compiled models: ``torch.compile`` cannot trace ``ContextVar.get``, so inside a compiled
region :func:`current` is ``None`` without reading the variable (``torch.compiler
.is_compiling()`` is a constant there, and the graph has no break). Recording takes the
eager path instead: :func:`recording` sets the compiler stance to ``"force_eager"`` for its
block, so a compiled model called inside it runs its Python code, where the hook is seen.
The stance is process-wide: other threads' compiled calls also run eagerly (same results,
slower) while a recorder is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor, nn

from qkv.attn.problem import Problem

Recorder = Callable[[nn.Module, Problem, dict[str, Any]], Tensor | None]

_CURRENT: ContextVar[Recorder | None] = ContextVar("qkv_attention_recorder", default=None)


def current() -> Recorder | None:
    """The active recorder, or ``None`` (the common, zero-cost case, and always while
    ``torch.compile`` traces: see the module docstring)."""
    if torch.compiler.is_compiling():
        return None
    return _CURRENT.get()


@contextmanager
def recording(recorder: Recorder) -> Iterator[None]:
    """Install ``recorder(module, problem, info) -> output | None`` for the block's
    duration; compiled models run eagerly inside it (so they report their problems too)."""
    token = _CURRENT.set(recorder)
    try:
        with torch.compiler.set_stance("force_eager"):
            yield
    finally:
        _CURRENT.reset(token)
