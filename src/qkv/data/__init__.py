"""Data: tokenizers, metrics, generated and packaged data sets, and tasks (one file per task).

>>> from qkv.data import get_task
>>> get_task("synthetic").name
'synthetic'
"""

from qkv.data import metrics
from qkv.data.tasks import TASKS, Task, TaskError, TaskOptions, get_task, load_task
from qkv.data.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer

__all__ = [
    "TASKS",
    "BPETokenizer",
    "CharTokenizer",
    "Task",
    "TaskError",
    "TaskOptions",
    "Tokenizer",
    "WordTokenizer",
    "get_task",
    "load_task",
    "metrics",
]
