"""Shared helpers for the Hugging Face parity tests: tiny random ``transformers`` models
saved to temporary directories (no download), and greedy decoding on both sides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class Kit:
    """Helpers bound to a test's temporary directory.

    Attributes:
        atol: the parity bound in float32 (the issue's: 1e-4).
    """

    atol = 1e-4

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self._n = 0

    @staticmethod
    @torch.no_grad()
    def randomize(model: nn.Module, std: float = 0.2, seed: int = 0) -> nn.Module:
        """Draw every parameter (and ``final_logits_bias``) at random, norms around 1, so a
        swapped or dropped bias or norm cannot hide behind zeros and ones."""
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if not p.requires_grad:  # fixed tables (Marian's sinusoids) stay as they are
                continue
            noise = torch.randn(p.shape, generator=g) * std
            is_norm_weight = p.ndim == 1 and name.endswith("weight") and "norm" in name.lower()
            is_norm_weight = is_norm_weight or (".ln_" in f".{name}" and name.endswith("weight"))
            p.copy_(noise + 1.0 if is_norm_weight else noise)
        for name, b in model.named_buffers():
            if name.endswith("final_logits_bias"):
                b.copy_(torch.randn(b.shape, generator=g) * std)
        return model.eval()

    @staticmethod
    def diff(a: Tensor, b: Tensor) -> float:
        """``max |a - b|`` (shapes must agree)."""
        assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
        return (a.float() - b.float()).abs().max().item()

    def save(self, model: Any, *, randomize: bool = True, **kwargs: Any) -> Path:
        """``save_pretrained`` into a fresh directory (after :meth:`randomize`)."""
        if randomize:
            self.randomize(model)
        self._n += 1
        d = self.tmp / f"hf{self._n}"
        model.save_pretrained(d, **kwargs)
        return d

    @staticmethod
    def hf_greedy(
        model: Any, ids: Tensor, mask: Tensor, n: int, *, eos: int | None, seq2seq: bool
    ) -> list[list[int]]:
        """``transformers`` greedy decoding without any logits processor, as qkv's rows: new
        tokens only, cut before the first EOS."""
        gc = model.generation_config
        for key in ("forced_bos_token_id", "forced_eos_token_id", "bad_words_ids"):
            setattr(gc, key, None)
        gc.no_repeat_ngram_size = 0
        gc.repetition_penalty = 1.0
        gc.min_length = 0
        gc.length_penalty = 1.0
        out = model.generate(
            input_ids=ids,
            attention_mask=mask.long(),
            do_sample=False,
            num_beams=1,
            max_new_tokens=n,
            eos_token_id=eos,
        )
        start = 1 if seq2seq else ids.shape[1]
        rows = []
        for row in out[:, start:].tolist():
            rows.append(row[: row.index(eos)] if eos is not None and eos in row else row)
        return rows
