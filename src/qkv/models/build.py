"""``build(config)``: the model class of a config's family."""

from __future__ import annotations

from qkv.models.base import TransformerModel
from qkv.models.bert import EncoderModel
from qkv.models.captioner import Captioner
from qkv.models.clip import CLIP
from qkv.models.config import CONFIG_CLASSES, TransformerConfig
from qkv.models.detr import DETR
from qkv.models.llava import Llava
from qkv.models.lm import DecoderLM
from qkv.models.memory import check_model_memory
from qkv.models.seq2seq import Seq2SeqTransformer
from qkv.models.swin import Swin
from qkv.models.vit import ViT
from qkv.models.whisper import Whisper
from qkv.models.xlnet import XLNetLM

MODEL_CLASSES: dict[str, type[TransformerModel]] = {
    "seq2seq": Seq2SeqTransformer,
    "lm": DecoderLM,
    "encoder": EncoderModel,
    "vit": ViT,
    "swin": Swin,
    "detr": DETR,
    "xlnet": XLNetLM,
    "clip": CLIP,
    "llava": Llava,
    "captioner": Captioner,
    "whisper": Whisper,
}


def build(config: TransformerConfig) -> TransformerModel:
    """Build the model a config describes (on the current default device and dtype).

    On a real device the estimate of :func:`~qkv.models.memory.model_bytes` is checked
    against the free memory first (:func:`~qkv.models.memory.check_memory`; every model's
    constructor checks again, for those who call it directly); on ``meta``
    (``with torch.device("meta"): build(config)``) nothing is allocated or checked.

    Args:
        config: a family config (:class:`~qkv.models.config.Seq2SeqConfig`,
            :class:`~qkv.models.config.LMConfig`, :class:`~qkv.models.config.EncoderConfig`
            or :class:`~qkv.models.config.ViTConfig`).

    Returns:
        The freshly initialized model.

    Raises:
        TypeError: not a family config.
        MemoryLimitError: the model does not fit in the free memory of the device (a
            ``ValueError``).
    """
    if not isinstance(config, TransformerConfig) or config.family not in MODEL_CLASSES:
        raise TypeError(
            f"build needs one of {[c.__name__ for c in CONFIG_CLASSES.values()]}, "
            f"got {type(config).__name__}"
        )
    check_model_memory(config)
    return MODEL_CLASSES[config.family](config)  # type: ignore[call-arg]
