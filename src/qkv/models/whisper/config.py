"""The ``whisper`` family's config: :class:`WhisperConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from qkv.models.config import (
    InitScheme,
    ModelActivation,
    Placement,
    PosKind,
    check_size,
)
from qkv.models.seq2seq.config import Seq2SeqConfig


@dataclass
class WhisperConfig(Seq2SeqConfig):
    """Whisper's speech encoder-decoder (Radford et al. 2022). Defaults: ``whisper-tiny``.

    The encoder reads log-mel frames through two convolutions (kernel 3, GELU; strides
    ``conv_strides``, Whisper's ``(1, 2)`` halving the frames) and fixed sinusoids; the
    decoder is :class:`Seq2SeqConfig`'s, with learned positions (``max_len`` of them) and an
    output tied to its token table. There is no source token table: ``share_embeddings``
    stays True (the one table is the decoder's).

    Args:
        n_mels: mel channels of the input features.
        max_frames: longest input in mel frames (Whisper: 3000, 30 s); the encoder holds
            :attr:`max_source_len` positions.
        conv_strides: strides of the two convolutions (``[1, 2]``; ``[2, 2]`` quarters).
        ctc_head: a linear layer from the encoder's states to the vocabulary, for the CTC
            loss of hybrid CTC/attention training (Watanabe et al. 2017; the pad id is the
            blank) and CTC greedy decoding; Whisper has none.
        (other fields: :class:`Seq2SeqConfig`.)
    """

    family: ClassVar[str] = "whisper"

    vocab_size: int = 51865
    d_model: int = 384
    n_heads: int = 6
    d_ff: int = 1536
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    max_len: int = 448
    activation: ModelActivation = "gelu"
    norm_placement: Placement = "pre"
    pos: PosKind = "learned"
    dropout: float = 0.0
    init: InitScheme = "normal"
    scale_embeddings: bool = False
    n_mels: int = 80
    max_frames: int = 3000
    conv_strides: list[int] = field(default_factory=lambda: [1, 2])
    ctc_head: bool = False

    def __post_init__(self) -> None:
        check_size("n_mels", self.n_mels)
        if not isinstance(self.ctc_head, bool):
            raise ValueError(f"ctc_head must be a bool, got {self.ctc_head!r}")
        check_size("max_frames", self.max_frames)
        ok = isinstance(self.conv_strides, (list, tuple)) and len(self.conv_strides) == 2
        if not ok or not all(isinstance(x, int) and 1 <= x <= 4 for x in self.conv_strides):
            raise ValueError(f"conv_strides must be two ints in 1..4, got {self.conv_strides!r}")
        self.conv_strides = list(self.conv_strides)
        fixed = {
            "pos": "learned",
            "share_embeddings": True,
            "tgt_vocab_size": None,
            "reversible": False,
            "attn": None,  # softmax; not attn_kind, which reads an attn not yet checked
        }
        for name, value in fixed.items():
            if getattr(self, name) != value:
                raise ValueError(
                    f"WhisperConfig needs {name}={value!r}, got {getattr(self, name)!r}"
                )
        super().__post_init__()

    def source_len(self, n_frames: int) -> int:
        """Encoder positions of ``n_frames`` mel frames (each convolution, kernel 3 and
        padding 1, keeps ``ceil(n / stride)``)."""
        for s in self.conv_strides:
            n_frames = -(-n_frames // s)
        return n_frames

    @property
    def max_source_len(self) -> int:
        """Encoder positions of :attr:`max_frames` frames (Whisper: 1500)."""
        return self.source_len(self.max_frames)


__all__ = ["WhisperConfig"]
