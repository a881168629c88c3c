"""Vision tasks: ``digits`` and ``fashion-mnist`` (ViT or Swin classification) and
``detect`` (DETR on canvases of items), with their pictures (:mod:`.viz`)."""

from qkv.tasks.vision.detect import DetectTask
from qkv.tasks.vision.digits import DigitsTask
from qkv.tasks.vision.fashion_mnist import FashionMNISTTask

__all__ = ["DetectTask", "DigitsTask", "FashionMNISTTask"]
