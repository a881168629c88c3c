"""Image and text together: ``caption`` (ViT + decoder), ``clip`` (contrastive, zero-shot),
``vqa`` (LLaVA-style questions) and ``text2image`` (DALL-E style), on scenes or single items
of Fashion-MNIST or scikit-learn's digits, with their pictures."""

from qkv.tasks.multimodal.caption import CaptionTask
from qkv.tasks.multimodal.clip import CLIPTask
from qkv.tasks.multimodal.text2image import Text2ImageTask
from qkv.tasks.multimodal.vqa import VQATask

__all__ = ["CLIPTask", "CaptionTask", "Text2ImageTask", "VQATask"]
