"""Speech: ``asr`` (Whisper-style recognition of espeak-ng speech), with its pictures
(:mod:`.viz`: the cross-attention alignment)."""

from qkv.tasks.speech.asr import ASRTask

__all__ = ["ASRTask"]
