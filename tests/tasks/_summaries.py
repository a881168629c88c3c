"""Fixtures shared by the summarization tests: a TSV of texts and summaries, tiny models."""

from __future__ import annotations

from pathlib import Path

TINY_MODEL = ["d_model=16", "n_heads=2", "d_ff=32", "n_encoder_layers=1", "n_decoder_layers=1"]


def write_pairs(path: Path, n: int = 60) -> Path:
    words = ["fast", "small", "secure", "portable", "simple", "free"]
    kinds = ["editor", "library", "server", "game", "compiler", "shell"]
    lines = []
    for i in range(n):
        w, k = words[i % 6], kinds[(i // 6) % 6]
        lines.append(
            f"This is a {w} {k} number {i}. It is written in C. It has many users.\t{w} {k}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
