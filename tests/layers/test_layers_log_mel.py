"""Whisper's log-mel front end: the mel filterbank against librosa, the features against
``transformers``' ``WhisperFeatureExtractor`` (<= 1e-4), and padding that changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qkv.layers.log_mel import LogMel, hz_to_mel, mel_filterbank, mel_to_hz

librosa = pytest.importorskip("librosa")
T = pytest.importorskip("transformers")


@pytest.mark.parametrize(("sr", "n_fft", "n_mels"), [(16000, 400, 80), (16000, 400, 128),
                                                     (22050, 1024, 64)])  # fmt: skip
def test_filterbank_matches_librosa(sr, n_fft, n_mels):
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)  # slaney scale and norm
    got = mel_filterbank(sr, n_fft, n_mels).numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()


def test_mel_scale_matches_librosa_and_inverts():
    hz = np.array([0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0])
    assert np.allclose(hz_to_mel(hz), librosa.hz_to_mel(hz, htk=False))
    assert np.allclose(mel_to_hz(hz_to_mel(hz)), hz)


def _signals():
    g = np.random.default_rng(0)
    t = np.arange(27_200) / 16000.0
    chirp = 0.5 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.01 * g.standard_normal(t.size)
    return [chirp.astype(np.float32), (0.3 * g.standard_normal(16_160)).astype(np.float32)]


@pytest.mark.parametrize("n_mels", [80, 128])
def test_features_match_whisper_feature_extractor(n_mels):
    fe = T.WhisperFeatureExtractor(feature_size=n_mels)
    front = LogMel(n_mels=n_mels)
    for x in _signals():
        ref = fe(x, sampling_rate=16000, return_tensors="np", padding="max_length",
                 max_length=len(x), truncation=True).input_features[0]  # fmt: skip
        got = front(torch.from_numpy(x)[None])[0].T.numpy()  # (n_mels, t)
        assert got.shape == ref.shape == (n_mels, len(x) // 160)
        assert np.abs(got - ref).max() <= 1e-4


def test_padding_with_lengths_changes_nothing():
    a, b = _signals()
    front = LogMel()
    batch = torch.zeros(2, len(a))
    batch[0], batch[1, : len(b)] = torch.from_numpy(a), torch.from_numpy(b)
    feats = front(batch, torch.tensor([len(a), len(b)]))
    alone = front(torch.from_numpy(b)[None])[0]
    n = len(b) // 160
    # the last frames' windows reach past the end (reflect padding alone, zeros in a batch)
    assert torch.allclose(feats[1, : n - 2], alone[: n - 2], atol=1e-5)
    assert torch.allclose(feats[0], front(torch.from_numpy(a)[None])[0])
