"""``reverse``: like ``copy``, but the target is the source string reversed.

Reversal needs each output position to attend to a different input position than the
diagonal, so the attention maps of a trained model show an anti-diagonal.

>>> task = ReverseTask(ReverseTask.Options(n_train=4, n_valid=2, n_test=2))
>>> all(p.tgt == p.src[::-1] for p in task.examples("train"))
True
"""

from __future__ import annotations

from qkv.tasks.synthetic.copy import CopyTask


class ReverseTask(CopyTask):
    """Reverse a random symbol string (options as :class:`~qkv.tasks.synthetic.copy.CopyTask`)."""

    name = "reverse"

    @staticmethod
    def target(source: str) -> str:
        """The source string reversed."""
        return source[::-1]


__all__ = ["ReverseTask"]
