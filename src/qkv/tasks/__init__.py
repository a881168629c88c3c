"""The apps layer. Tasks: what to learn, from which data, with which loss and metrics (one file per task).

The tasks live by domain: :mod:`qkv.tasks.synthetic` (generated data), :mod:`qkv.tasks.text`,
:mod:`qkv.tasks.vision`, :mod:`qkv.tasks.multimodal` and :mod:`qkv.tasks.speech`; each task
declares its options (:mod:`qkv.tasks.options`) and draws its own pictures
(:meth:`Task.pictures`). Shared here: the interface (:mod:`.base`), the registry, training
and loading (:mod:`.run`), and ``qkv viz``'s entry points (:mod:`.viz`).

========================  ===========  =============================================================
name                      kind         data
========================  ===========  =============================================================
``copy``                  seq2seq      random symbol strings, target = source (char tokens)
``reverse``               seq2seq      random symbol strings, target = reversed source
``synthetic``             seq2seq      English -> Kalo from :mod:`qkv.data.grammar` (word tokens)
``translate``             seq2seq      ``--data pairs.tsv`` or German -> English (``trans-de-en``)
``summarize``             seq2seq      Debian long description -> synopsis, or ``--data pairs.tsv``
``summarize-extractive``  classify     the same data: a BERTSum-style encoder picks one sentence
``text2text``             seq2seq      T5-style: summarize/translate/classify by input prefix
``classify``              classify     ``--data labels.tsv`` or Debian packages by section (MiniLM)
``lm``                    lm           ``--data file.txt``, Python's help topics, or the KJV Bible
``digits``                classify     scikit-learn's 8x8 digits (ViT; ``--preset swin``: Swin)
``fashion-mnist``         classify     Fashion-MNIST 28x28 (ViT, ``dataset-fashion-mnist``; or Swin)
``listops``               classify     Long Range Arena ListOps, dense/local/BigBird attention
``detect``                detect       DETR on canvases of 1-5 Fashion-MNIST items (or digits)
``caption``               caption      ViT + decoder describe scenes of Fashion-MNIST items
``clip``                  contrastive  CLIP on the scenes' captions; zero-shot Fashion-MNIST
``vqa``                   vqa          LLaVA-style questions about the scenes
``text2image``            image        DALL-E style: VQ-VAE codes drawn from captions
``asr``                   seq2seq      Whisper-style speech recognition (espeak-ng speech)
========================  ===========  =============================================================

Each task declares its options as a dataclass, ``Task.Options`` (:mod:`qkv.tasks.options`):

>>> task = get_task("copy", CopyTask.Options(n_train=8, n_valid=2, n_test=2))
>>> batch = task.collate(task.examples("train")[:2])
>>> sorted(batch)
['src', 'src_padding_mask', 'tgt_in', 'tgt_out', 'tgt_padding_mask']
"""

from qkv.tasks.base import SPLITS, Split, Task, TaskError
from qkv.tasks.multimodal.caption import CaptionTask
from qkv.tasks.options import Options, TaskOptions, option
from qkv.tasks.registry import TASKS, get_task, load_task, saved_task_name, task_class
from qkv.tasks.run import build_trainer, load_trained
from qkv.tasks.speech.asr import ASRTask
from qkv.tasks.synthetic.copy import CopyTask
from qkv.tasks.synthetic.kalo import SyntheticTask
from qkv.tasks.synthetic.listops import ListOpsTask
from qkv.tasks.synthetic.reverse import ReverseTask
from qkv.tasks.text.classify import TextClassifyTask
from qkv.tasks.text.lm import LMTask
from qkv.tasks.text.summarize import SummarizeTask
from qkv.tasks.text.summarize_extractive import ExtractiveSummarizeTask
from qkv.tasks.text.text2text import Text2TextTask
from qkv.tasks.text.translate import TranslateTask
from qkv.tasks.vision.detect import DetectTask
from qkv.tasks.vision.digits import DigitsTask
from qkv.tasks.vision.fashion_mnist import FashionMNISTTask
from qkv.tasks.viz import TextRecord, from_checkpoint, record_text, report_for_task

__all__ = [
    "SPLITS",
    "TASKS",
    "ASRTask",
    "CaptionTask",
    "CopyTask",
    "DetectTask",
    "DigitsTask",
    "ExtractiveSummarizeTask",
    "FashionMNISTTask",
    "LMTask",
    "ListOpsTask",
    "Options",
    "ReverseTask",
    "Split",
    "SummarizeTask",
    "SyntheticTask",
    "Task",
    "TaskError",
    "TaskOptions",
    "Text2TextTask",
    "TextClassifyTask",
    "TextRecord",
    "TranslateTask",
    "build_trainer",
    "from_checkpoint",
    "get_task",
    "load_task",
    "load_trained",
    "option",
    "record_text",
    "report_for_task",
    "saved_task_name",
    "task_class",
]
