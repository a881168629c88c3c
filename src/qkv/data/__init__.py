"""Data: tokenizers, metrics, and generated or packaged data sets (the bottom layer: nothing
here imports another qkv package). Tasks, which turn data into training jobs, live in
:mod:`qkv.tasks`.

>>> from qkv.data import CharTokenizer
>>> CharTokenizer.train(["abc"]).decode(CharTokenizer.train(["abc"]).encode("cab"))
'cab'
"""

from qkv.data import debian, metrics
from qkv.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    TokenizerFileError,
    WordTokenizer,
)

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "Tokenizer",
    "TokenizerFileError",
    "WordTokenizer",
    "debian",
    "metrics",
]
