"""Whisper's log-mel front end (Radford et al. 2022, "Robust Speech Recognition via
Large-Scale Weak Supervision", sec. 2.2): 16 kHz audio, 25 ms Hann windows every 10 ms
(``n_fft = 400``, ``hop = 160``), the power spectrum through 80 Slaney mel filters,
``log10``, clamped to 8 (decades) below the example's maximum, then ``(x + 4) / 4``.

It matches ``transformers``' ``WhisperFeatureExtractor`` to float precision (tested), with
``torch.stft`` and a mel filterbank of its own, checked against ``librosa.filters.mel``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

# Slaney's mel scale (Auditory Toolbox; librosa's default, htk=False): linear below 1 kHz,
# logarithmic above, 27 steps per factor 6.4.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Hertz -> Slaney mels."""
    hz = np.asarray(hz, dtype=np.float64)
    lin = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, lin)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Slaney mels -> hertz (the inverse of :func:`hz_to_mel`)."""
    mel = np.asarray(mel, dtype=np.float64)
    lin = mel * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, lin)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> Tensor:
    """Triangular filters evenly spaced in Slaney mels, each scaled to unit area in hertz
    (``norm="slaney"``): ``librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)``.

    Returns:
        ``(n_mels, n_fft // 2 + 1)`` float32 weights.
    """
    f_max = sample_rate / 2.0 if f_max is None else f_max
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    widths = np.diff(mel_hz)  # (n_mels + 1,)
    ramps = mel_hz[:, None] - fft_hz[None, :]  # (n_mels + 2, n_freq)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))  # (n_mels, n_freq)
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


class LogMel(nn.Module):
    """Audio ``(b, n)`` -> normalized log-mel features ``(b, n // hop, n_mels)``.

    ``x = log10(max(mel(|STFT|^2), 1e-10))``, ``x = max(x, max(x) - 8)`` (the maximum over
    each example's real frames), ``(x + 4) / 4``. The STFT is centred (reflect padding) and
    its last frame dropped, as Whisper does, so ``n`` samples give ``n // hop`` frames.

    Args:
        sample_rate: Hz (16,000 for Whisper).
        n_fft: window and FFT length (400 = 25 ms).
        hop: frame step (160 = 10 ms).
        n_mels: mel filters (80; large-v3 uses 128).
    """

    def __init__(
        self, sample_rate: int = 16000, n_fft: int = 400, hop: int = 160, n_mels: int = 80
    ) -> None:
        super().__init__()
        self.n_fft, self.hop, self.n_mels = n_fft, hop, n_mels
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer(
            "filters", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False
        )

    def n_frames(self, n_samples: Tensor | int) -> Tensor | int:
        """Frames of ``n_samples`` samples."""
        return n_samples // self.hop

    def forward(self, audio: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Features of a batch of (right-padded) signals.

        Args:
            audio: ``(b, n)`` float samples in ``[-1, 1]``.
            lengths: ``(b,)`` real samples per row (padding does not set the maximum);
                default all ``n``.

        Returns:
            ``(b, n // hop, n_mels)`` float32.
        """
        spec = torch.stft(
            audio.float(), self.n_fft, self.hop, window=self.window, center=True,
            pad_mode="reflect", return_complex=True,
        )  # (b, n_fft // 2 + 1, n // hop + 1)  # fmt: skip
        power = spec[..., :-1].abs() ** 2
        mel = self.filters @ power  # (b, n_mels, t)
        logs = mel.clamp(min=1e-10).log10().transpose(1, 2)  # (b, t, n_mels)
        if lengths is None:
            peak = logs.amax(dim=(1, 2), keepdim=True)  # (b, 1, 1)
        else:
            t = torch.arange(logs.shape[1], device=logs.device)
            real = t[None, :] < (lengths[:, None] // self.hop)  # (b, t)
            peak = logs.masked_fill(~real[..., None], -math.inf).amax(dim=(1, 2), keepdim=True)
        logs = torch.maximum(logs, peak - 8.0)
        return (logs + 4.0) / 4.0


__all__ = ["LogMel", "hz_to_mel", "mel_filterbank", "mel_to_hz"]
