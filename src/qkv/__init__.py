"""qkv: attention mechanisms and Transformers in PyTorch.

>>> import torch, qkv
>>> q = k = v = torch.randn(2, 4, 5, 8)  # (b, h, s, d_h)
>>> out, w = qkv.attention(q, k, v, is_causal=True, return_weights=True)

The attention function and modules are imported with ``qkv``; the larger packages
(``qkv.models``, ``qkv.generation``, ``qkv.training``, ``qkv.interp``, ``qkv.data``,
``qkv.tasks``, ``qkv.interop``, ``qkv.bench``) are imported on first use of the attribute, so
``import qkv`` stays cheap.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from qkv import _clock as _clock  # first, before torch loads: a command's clock starts
from qkv import layers, masks, pos, scores
from qkv._version import __version__
from qkv.attn import CrossKVCache, KVCache, MultiHeadAttention, attention

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from qkv import bench, data, generation, interop, interp, models, tasks, training

#: Subpackages imported on first attribute access (``qkv.models`` ...).
_LAZY_PACKAGES = (
    "attn",
    "bench",
    "data",
    "generation",
    "interop",
    "interp",
    "models",
    "tasks",
    "training",
)
#: Functions re-exported from a lazily imported subpackage: name -> module.
_LAZY_FUNCTIONS = {
    "from_hf": "qkv.interop",
    "to_hf": "qkv.interop",
    "load": "qkv.models",
    "from_preset": "qkv.models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_PACKAGES:
        module: ModuleType = importlib.import_module(f"qkv.{name}")
        globals()[name] = module
        return module
    if name in _LAZY_FUNCTIONS:
        value = getattr(importlib.import_module(_LAZY_FUNCTIONS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qkv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_PACKAGES) | set(_LAZY_FUNCTIONS))


__all__ = [
    "CrossKVCache",
    "KVCache",
    "MultiHeadAttention",
    "__version__",
    "attention",
    "bench",
    "data",
    "from_hf",
    "from_preset",
    "generation",
    "interop",
    "interp",
    "layers",
    "load",
    "masks",
    "models",
    "pos",
    "scores",
    "tasks",
    "to_hf",
    "training",
]
