"""The hook through which attention modules report their problems to a recorder.

A recorder is installed for the duration of a ``with`` block (see ``qkv.interp``); modules
never keep what they saw. Lives at the bottom layer so attention modules need not import
the interpretability package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from torch import nn

from qkv.attn.problem import Problem

Recorder = Callable[[nn.Module, Problem, dict[str, Any]], None]

_CURRENT: ContextVar[Recorder | None] = ContextVar("qkv_attention_recorder", default=None)


def current() -> Recorder | None:
    """The active recorder, or ``None`` (the common, zero-cost case)."""
    return _CURRENT.get()


@contextmanager
def recording(recorder: Recorder) -> Iterator[None]:
    """Install ``recorder(module, problem, info)`` for the block's duration."""
    token = _CURRENT.set(recorder)
    try:
        yield
    finally:
        _CURRENT.reset(token)
