"""``qkv demo``: a small, meaningful look at attention."""

from __future__ import annotations

import argparse

import torch

import qkv


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="show attention at work on a tiny sentence",
        description="Attend from every word of a tiny sentence to every other word and print "
        "the attention weights (causal and bidirectional).",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=run)


def _table(tokens: list[str], w: torch.Tensor) -> str:
    width = max(len(t) for t in tokens) + 1
    head = " " * width + "".join(f"{t:>{width}}" for t in tokens)
    rows = [
        f"{t:<{width}}" + "".join(f"{x:>{width}.2f}" for x in row.tolist())
        for t, row in zip(tokens, w)
    ]
    return "\n".join([head, *rows])


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    tokens = "the cat sat on the mat".split()
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    d = 16
    emb = torch.nn.Embedding(len(vocab), d)
    x = emb(torch.tensor([vocab[t] for t in tokens]))  # (s, d)
    x = qkv.pos.Sinusoidal(d)(x[None])[0]
    with torch.no_grad():
        _, w = qkv.attention(x, x, x, return_weights=True)
        _, wc = qkv.attention(x, x, x, is_causal=True, return_weights=True)
    print("Scaled dot-product self-attention weights (row = query, column = key):\n")
    print(_table(tokens, w))
    print("\nWith a causal mask (each word sees only itself and the words before it):\n")
    print(_table(tokens, wc))
    print("\nEach row sums to 1; identical words ('the') attend identically up to position.")
    return 0
