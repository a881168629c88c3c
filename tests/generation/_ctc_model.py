"""A tiny Whisper with a CTC head and a padded batch of features, shared by the joint
CTC/attention and the shallow-fusion tests."""

from __future__ import annotations

import torch

import qkv.models as M

BLANK, BOS, EOS = 0, 1, 2


def whisper() -> M.Whisper:
    """Seeded, 7 ids, the blank is the pad id, no dropout, in eval mode."""
    torch.manual_seed(0)
    cfg = M.WhisperConfig(d_model=32, n_heads=4, d_ff=48, n_encoder_layers=1,
                          n_decoder_layers=1, vocab_size=7, max_len=12, n_mels=80,
                          max_frames=64, conv_strides=[2, 2], ctc_head=True, pad_token_id=BLANK,
                          dropout=0.0)  # fmt: skip
    return M.build(cfg).eval()


def features() -> tuple[torch.Tensor, torch.Tensor]:
    """Two inputs of 40 and 26 frames, right-padded: ``(2, 40, 80)`` and the frame mask."""
    torch.manual_seed(2)
    frames = torch.tensor([40, 26])
    mask = torch.arange(40)[None] < frames[:, None]
    return torch.randn(2, 40, 80) * mask[..., None], mask
