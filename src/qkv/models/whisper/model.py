"""Whisper, the speech encoder-decoder (Radford et al. 2022, "Robust Speech Recognition via
Large-Scale Weak Supervision", sec. 2.2 and fig. 1).

The encoder reads log-mel features (:class:`qkv.layers.log_mel.LogMel`) through two
convolutions with kernel 3 and GELU, the second with stride 2 (halving the frames), adds
fixed sinusoids and runs pre-norm Transformer layers; the decoder is the text decoder of
:class:`~qkv.models.Seq2SeqTransformer` (learned positions, cross-attention, pre-norm, an
output tied to the token table), so caching, beam search and attention recording are the
ones every qkv encoder-decoder uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.layers.head import OutputHead
from qkv.models.base import GenerativeModel
from qkv.models.init import init_weights
from qkv.models.parts import decoder_for, embeddings_for, encoder_for, token_embedding
from qkv.models.seq2seq import Seq2SeqTransformer
from qkv.models.whisper.config import WhisperConfig


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's encoder positions: ``[sin(p w_i), cos(p w_i)]`` concatenated (not
    interleaved as in :class:`qkv.pos.Sinusoidal`), ``w_i = max_timescale^(-i / (c/2 - 1))``.

    Returns:
        ``(length, channels)`` float32.
    """
    half = channels // 2
    step = math.log(max_timescale) / (half - 1)
    inv = torch.exp(-step * torch.arange(half, dtype=torch.float32))  # (c/2,)
    angle = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]  # (len, c/2)
    return torch.cat([angle.sin(), angle.cos()], dim=1)  # (len, c)


class Whisper(Seq2SeqTransformer):
    """Speech-to-text encoder-decoder: log-mel frames in, token logits out.

    ``logits = W_out decoder(E_tgt(y), encoder(conv(x) + P))``. Modules: ``conv1``,
    ``conv2``, ``encoder``, ``tgt_embed``, ``decoder``, ``lm_head`` (tied to the token
    table), and ``ctc_head`` when ``config.ctc_head``; the buffer ``enc_pos`` holds the
    sinusoids ``P`` (saved with the weights, as Whisper's checkpoints store them).
    :meth:`make_cache` is :class:`~qkv.models.Seq2SeqTransformer`'s; :meth:`decode` also
    takes a frame mask, and :meth:`forward` can return the CTC head's outputs too.

    Args:
        config: a :class:`~qkv.models.config.WhisperConfig`.
    """

    config: WhisperConfig  # type: ignore[assignment]

    def __init__(self, config: WhisperConfig) -> None:
        if not isinstance(config, WhisperConfig):
            raise TypeError(f"Whisper needs a WhisperConfig, got {type(config).__name__}")
        GenerativeModel.__init__(self, config)  # Seq2SeqTransformer's would build text tables
        cfg = config
        s1, s2 = cfg.conv_strides
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.d_model, kernel_size=3, stride=s1, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=s2, padding=1)
        self.register_buffer("enc_pos", whisper_sinusoids(cfg.max_source_len, cfg.d_model))
        self.enc_dropout = nn.Dropout(cfg.dropout)
        tok = token_embedding(cfg.vocab_size, cfg, cfg.pad_token_id)
        self.tgt_embed = embeddings_for(
            cfg, tok, max_len=cfg.max_len, scale=cfg.scale_embeddings, norm=cfg.embed_norm
        )
        self.encoder = encoder_for(cfg, cfg.n_encoder_layers)
        self.decoder = decoder_for(cfg, cfg.n_decoder_layers, cross_attention=True)
        self.lm_head = OutputHead(cfg.d_model, cfg.vocab_size, bias=cfg.output_bias)
        if cfg.tie_embeddings:
            self.lm_head.weight = tok.weight
        self.ctc_head = nn.Linear(cfg.d_model, cfg.vocab_size) if cfg.ctc_head else None
        init_weights(
            self, cfg.init, std=cfg.init_std, n_layers=cfg.n_encoder_layers + cfg.n_decoder_layers
        )
        self._prune_from_config()

    def source_mask(self, frame_mask: Tensor) -> Tensor:
        """The encoder positions' padding mask from the frames' ``(b, t)``: a position is
        real when the first frame its convolutions read is (right padding)."""
        for s in self.config.conv_strides:
            frame_mask = frame_mask[:, ::s]  # (b, ceil(t / s))
        return frame_mask

    def encode(self, src: Tensor, src_padding_mask: Tensor | None = None) -> Tensor:
        """Encode log-mel features.

        Args:
            src: ``(b, t, n_mels)`` features (:class:`~qkv.layers.log_mel.LogMel`).
            src_padding_mask: ``(b, t)`` bool, True = real frame, or None.

        Returns:
            memory ``(b, s_src, d)``, ``s_src = config.source_len(t)``; use
            :meth:`source_mask` for its padding mask.

        Raises:
            ValueError: features of the wrong shape, or longer than ``max_frames``.
        """
        cfg = self.config
        if src.ndim != 3 or src.shape[-1] != cfg.n_mels:
            raise ValueError(f"features must be (b, t, {cfg.n_mels}), got {tuple(src.shape)}")
        if src.shape[1] > cfg.max_frames:
            raise ValueError(f"{src.shape[1]} frames exceed max_frames ({cfg.max_frames})")
        x = src.transpose(1, 2).to(self.conv1.weight.dtype)  # (b, n_mels, t)
        mask = src_padding_mask
        for i, conv in enumerate((self.conv1, self.conv2)):
            if mask is not None:  # zeros past the end, as the unpadded input's conv padding
                x = x * mask[:, None, :].to(x.dtype)
                mask = mask[:, :: self.config.conv_strides[i]]  # (b, positions after conv)
            x = F.gelu(conv(x))
        x = x.transpose(1, 2)  # (b, s_src, d)
        x = self.enc_dropout(x + self.enc_pos[: x.shape[1]].to(x.dtype))
        return self.encoder(x, padding_mask=mask)  # (b, s_src, d)

    def ctc_log_probs(self, memory: Tensor) -> Tensor:
        """Per-position log-probabilities of the CTC head (the pad id is the blank).

        Args:
            memory: ``(b, s_src, d)`` from :meth:`encode`.

        Returns:
            ``(b, s_src, vocab_size)`` float32 log-probabilities.

        Raises:
            ValueError: the model has no CTC head (``config.ctc_head`` is False).
        """
        if self.ctc_head is None:
            raise ValueError("this Whisper has no CTC head (config.ctc_head is False)")
        return self.ctc_head(memory).float().log_softmax(-1)

    def forward(  # type: ignore[override]
        self,
        src: Tensor,
        tgt_in: Tensor,
        *,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
        ctc: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Teacher-forced logits, as :meth:`Seq2SeqTransformer.forward` (``src`` is
        ``(b, t, n_mels)`` features, ``src_padding_mask`` ``(b, t)`` over the frames).

        Args:
            ctc: also return the CTC head's outputs (one encoder pass serves both).

        Returns:
            logits ``(b, s_tgt, V)``; with ``ctc``, ``(logits, ctc_log_probs, enc_mask)``:
            ``(b, s_src, V)`` float32 log-probabilities (:meth:`ctc_log_probs`) and the
            encoder positions' ``(b, s_src)`` mask (True = real).
        """
        memory = self.encode(src, src_padding_mask)
        enc_mask = (
            self.source_mask(src_padding_mask)
            if src_padding_mask is not None
            else torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        )
        logits = self.decode(
            tgt_in, memory, src_padding_mask=enc_mask, tgt_padding_mask=tgt_padding_mask
        )
        if not ctc:
            return logits
        return logits, self.ctc_log_probs(memory), enc_mask

    def decode(  # type: ignore[override]
        self, tgt: Tensor, memory: Tensor, *, src_padding_mask: Tensor | None = None, **kw: object
    ) -> Tensor:
        """:meth:`Seq2SeqTransformer.decode`, with ``src_padding_mask`` over the frames
        ``(b, t)`` or over the encoder positions ``(b, s_src)``."""
        if src_padding_mask is not None and src_padding_mask.shape[1] != memory.shape[1]:
            src_padding_mask = self.source_mask(src_padding_mask)
        return super().decode(tgt, memory, src_padding_mask=src_padding_mask, **kw)  # type: ignore[arg-type]


__all__ = ["Whisper", "whisper_sinusoids"]
