"""Tasks on generated data: ``copy`` and ``reverse`` (random symbol strings), ``synthetic``
(English -> Kalo from :mod:`qkv.data.grammar`, in :mod:`.kalo`) and ``listops`` (Long Range
Arena's ListOps with a chosen attention pattern)."""

from qkv.tasks.synthetic.copy import CopyTask
from qkv.tasks.synthetic.kalo import SyntheticTask
from qkv.tasks.synthetic.listops import ListOpsTask
from qkv.tasks.synthetic.reverse import ReverseTask

__all__ = ["CopyTask", "ListOpsTask", "ReverseTask", "SyntheticTask"]
