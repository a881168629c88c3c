"""Head pruning lives with the models (``model.prune_heads``); re-exported here next to
head importance, which usually decides what to prune."""

from qkv.models.prune import prune_heads, prune_module

__all__ = ["prune_heads", "prune_module"]
