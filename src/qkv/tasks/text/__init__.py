"""Text tasks: ``translate``, ``summarize``, ``summarize-extractive``, ``text2text`` (T5-style
mixture), ``lm`` (next-token prediction) and ``classify`` (text classification)."""

from qkv.tasks.text.classify import TextClassifyTask
from qkv.tasks.text.lm import LMTask
from qkv.tasks.text.summarize import SummarizeTask
from qkv.tasks.text.summarize_extractive import ExtractiveSummarizeTask
from qkv.tasks.text.text2text import Text2TextTask
from qkv.tasks.text.translate import TranslateTask

__all__ = [
    "ExtractiveSummarizeTask",
    "LMTask",
    "SummarizeTask",
    "Text2TextTask",
    "TextClassifyTask",
    "TranslateTask",
]
