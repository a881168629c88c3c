"""One file per Hugging Face model family, each with an explicit weight map and config map.

======================  =============================================  =======================================
family                  ``transformers`` classes                       qkv model
======================  =============================================  =======================================
bert                    BertModel, BertForMaskedLM, ...PreTraining     :class:`~qkv.models.EncoderModel`
gpt2                    GPT2Model, GPT2LMHeadModel                     :class:`~qkv.models.DecoderLM`
vit                     ViTForImageClassification                      :class:`~qkv.models.ViT`
swin                    SwinModel, SwinForImageClassification          :class:`~qkv.models.Swin`
detr                    DetrForObjectDetection (read only, no ResNet)  :class:`~qkv.models.DETR`
bart                    BartModel, BartForConditionalGeneration        :class:`~qkv.models.Seq2SeqTransformer`
marian                  MarianModel, MarianMTModel                     :class:`~qkv.models.Seq2SeqTransformer`
t5                      T5Model, T5ForConditionalGeneration            :class:`~qkv.models.Seq2SeqTransformer`
xlnet                   XLNetModel, XLNetLMHeadModel                   :class:`~qkv.models.XLNetLM`
clip                    CLIPModel                                      :class:`~qkv.models.CLIP`
vision-encoder-decoder  VisionEncoderDecoderModel (ViT + GPT-2)        :class:`~qkv.models.Captioner`
whisper                 WhisperModel, WhisperForConditionalGeneration  :class:`~qkv.models.Whisper`
======================  =============================================  =======================================
"""

from __future__ import annotations

from qkv.interop.hf import (
    bart,
    bert,
    clip,
    detr,
    gpt2,
    marian,
    swin,
    t5,
    vision_encoder_decoder,
    vit,
    whisper,
    xlnet,
)
from qkv.interop.hf._common import HFFamily

#: family name -> its conversion.
FAMILIES: dict[str, HFFamily] = {
    f.name: f
    for f in (
        bert.FAMILY,
        gpt2.FAMILY,
        vit.FAMILY,
        bart.FAMILY,
        marian.FAMILY,
        t5.FAMILY,
        swin.FAMILY,
        detr.FAMILY,
        xlnet.FAMILY,
        clip.FAMILY,
        vision_encoder_decoder.FAMILY,
        whisper.FAMILY,
    )
}
#: ``config.json`` ``model_type`` -> family name.
MODEL_TYPES: dict[str, str] = {t: f.name for f in FAMILIES.values() for t in f.model_types}


def get_family(name: str) -> HFFamily:
    """The family called ``name`` (or reading ``model_type`` ``name``).

    Raises:
        ValueError: an unknown name (the supported ones are listed).
    """
    family = MODEL_TYPES.get(name, name)
    if family not in FAMILIES:
        raise ValueError(
            f"unsupported Hugging Face model type {name!r}; qkv.interop supports "
            f"{sorted(MODEL_TYPES)}"
        )
    return FAMILIES[family]


__all__ = ["FAMILIES", "MODEL_TYPES", "HFFamily", "get_family"]
