"""The text2text vocabulary measurement of docs/text2text.md: a byte-level BPE of each size
trained on the task's own tokenizer texts (every distinct prefixed input and target of the
three tasks' training splits, seed 0; translation from the Ding dictionary, the corpus of the
measurement), measured on held-out text: tokens per whitespace word, median tokens, and the
share of inputs cut at max_len 128.

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/text2text_vocab.py 4000 8000 16000 32000
"""

from __future__ import annotations

import statistics
import sys

from qkv.data.tokenizers import train_tokenizer
from qkv.tasks import TaskOptions, Text2TextTask


def main(sizes: list[int]) -> None:
    task = Text2TextTask(TaskOptions(n_valid=1000, extra={"corpus": "ding"}))
    train = task.task_examples("train")
    texts = sorted({x for pairs in train.values() for p in pairs for x in p})
    valid = task.task_examples("valid")
    probes = {
        "description": [p.src for p in valid["summarize"]],
        "synopsis": [p.tgt for p in valid["summarize"]],
        "german": [p.src for p in valid["translate"]],
        "english": [p.tgt for p in valid["translate"]],
    }
    print(f"{len(texts):,} distinct training texts")
    for size in sizes:
        tok = train_tokenizer("bpe", texts, vocab_size=size)
        row = [f"vocab {size:,}"]
        for name, xs in probes.items():
            ids = [tok.encode(x) for x in xs]
            words = sum(len(x.split()) for x in xs)
            cut = 100 * sum(len(i) > 128 for i in ids) / len(ids)
            row.append(
                f"{name}: {sum(map(len, ids)) / words:.2f} tok/word, median "
                f"{statistics.median(map(len, ids))}, cut at 128: {cut:.1f}%"
            )
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [4000, 8000, 16000, 32000])
