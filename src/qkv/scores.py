"""Score functions for :func:`qkv.attention`: ``Bilinear`` (Luong "general") and
``Additive`` (Bahdanau)."""

from qkv.attn.scores import Additive, Bilinear, default_scale, dot

__all__ = ["Additive", "Bilinear", "default_scale", "dot"]
