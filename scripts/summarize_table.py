"""Lead-1, the extractive and the abstractive summarizer side by side on one split.

    python scripts/summarize_table.py --abstractive runs/summarize \
        --extractive runs/summarize-extractive [--split test] [--limit N] [--beam-size 4] [--json]

Both checkpoints are loaded with :func:`qkv.tasks.load_trained`; the documents are the
extractive task's (the same Debian split, by source package, when both ran on the corpus);
:func:`qkv.tasks.text.summarize_extractive.compare` scores each system's text against the
synopses with ROUGE-1/2/L F (rouge-score, Porter stemming) and sacreBLEU.
"""

from __future__ import annotations

import argparse
import json

from qkv.tasks import ExtractiveSummarizeTask, SummarizeTask, load_trained
from qkv.tasks.text.summarize_extractive import compare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--abstractive", required=True, help="a summarize run or checkpoint")
    p.add_argument("--extractive", required=True, help="a summarize-extractive run")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--limit", type=int, help="at most this many documents")
    p.add_argument("--beam-size", type=int, default=4, help="abstractive beam (default: 4)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = p.parse_args()
    abstractive, abs_task = load_trained(args.abstractive)
    extractive, ext_task = load_trained(args.extractive)
    if not isinstance(abs_task, SummarizeTask) or not isinstance(ext_task, ExtractiveSummarizeTask):
        p.error("--abstractive needs a summarize run, --extractive a summarize-extractive run")
    table = compare(
        abstractive, abs_task, extractive, ext_task, args.split,
        limit=args.limit, beam_size=args.beam_size,
    )  # fmt: skip
    if args.json:
        print(json.dumps(table))
        return
    print("| system | ROUGE-1 | ROUGE-2 | ROUGE-L | BLEU |\n|---|---|---|---|---|")
    for name, s in table.items():
        print(
            f"| {name} | {s['rouge1']:.1f} | {s['rouge2']:.1f} | {s['rougeL']:.1f} | {s['bleu']:.1f} |"
        )


if __name__ == "__main__":
    main()
