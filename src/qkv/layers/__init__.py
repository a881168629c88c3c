"""Transformer building layers: norms, feed-forward networks and residual wrappers."""

from qkv.layers.chunking import ChunkedFeedForward, chunked
from qkv.layers.drop_path import DropPath
from qkv.layers.feedforward import FeedForward
from qkv.layers.head import OutputHead
from qkv.layers.mode import evaluating
from qkv.layers.norms import LayerNorm, RMSNorm, make_norm
from qkv.layers.residual import Residual
from qkv.layers.reversible import ReversibleBlock, reversible_stack

__all__ = [
    "ChunkedFeedForward",
    "DropPath",
    "FeedForward",
    "LayerNorm",
    "OutputHead",
    "RMSNorm",
    "Residual",
    "ReversibleBlock",
    "chunked",
    "evaluating",
    "make_norm",
    "reversible_stack",
]
