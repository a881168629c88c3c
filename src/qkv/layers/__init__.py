"""Transformer building layers: norms, feed-forward networks and residual wrappers."""

from qkv.layers.drop_path import DropPath
from qkv.layers.feedforward import FeedForward
from qkv.layers.head import OutputHead
from qkv.layers.mode import evaluating
from qkv.layers.norms import LayerNorm, RMSNorm, make_norm
from qkv.layers.residual import Residual

__all__ = [
    "DropPath",
    "FeedForward",
    "LayerNorm",
    "OutputHead",
    "RMSNorm",
    "Residual",
    "evaluating",
    "make_norm",
]
