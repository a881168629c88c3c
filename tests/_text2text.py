"""A tiny made-up mixture for the text2text tests: ``PREFIX: input<TAB>target`` lines of the
three tasks (no Debian lists, no dictionary needed)."""

from __future__ import annotations

import random
from pathlib import Path

TOOLS = ["editor", "compiler", "player", "viewer", "server", "client", "library", "shell"]
VERBS = ["edits", "builds", "plays", "shows", "serves", "fetches", "links", "runs"]
NOUNS = {"Hund": "dog", "Haus": "house", "Baum": "tree", "Tisch": "table", "Ball": "ball"}
ADJS = {"gross": "big", "klein": "small", "rot": "red", "alt": "old", "neu": "new"}
SECTIONS = {"games": "a game", "libs": "a library", "net": "a network tool"}


def mixture_lines(n: int = 60, seed: int = 0) -> list[str]:
    """``n`` lines of each task (distinct inputs), deterministic."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        # as in Debian's corpus, summarize and classify read the same descriptions
        tool, verb = rng.choice(TOOLS), rng.choice(VERBS)
        section, what = rng.choice(list(SECTIONS.items()))
        text = f"This {tool} number {i} {verb} text files. It is {what}."
        lines.append(f"summarize: {text}\t{tool} that {verb} text files")
        lines.append(f"classify: {text}\t{section}")
        de, en = rng.choice(list(NOUNS.items()))
        ade, aen = rng.choice(list(ADJS.items()))
        lines.append(
            f"translate German to English: Der {de} {i} ist sehr {ade}.\tThe {en} {i} is very {aen}."
        )
    return lines


def write_mixture(directory: Path, n: int = 60, seed: int = 0) -> Path:
    path = directory / "mix.tsv"
    path.write_text("\n".join(mixture_lines(n, seed)) + "\n", encoding="utf-8")
    return path
