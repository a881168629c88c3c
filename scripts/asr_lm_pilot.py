"""The shallow-fusion pilot of docs/speech.md: a trained ``asr`` run decoded on the valid
split with the task's n-gram (the training transcripts and Ding's other sentences,
``lm_corpus``; ``--transcripts-only``: the transcripts alone), for each order and weight
(joint CTC/attention decoding with 4 beams, the run's ``ctc_prefix_weight``), then
without it.

    python scripts/asr_lm_pilot.py runs/asr --orders 7,9,12 --weights 0.3,0.4,0.5
    python scripts/asr_lm_pilot.py runs/asr --transcripts-only --orders 5,7,9 --weights 0.2,0.4,0.6

Prints valid WER / CER (jiwer), the hypotheses' words per reference word and the decoding
time of each setting; the model and the corpus are loaded once.
"""

from __future__ import annotations

import argparse
import time

import torch

from qkv.data import metrics
from qkv.tasks import load_trained
from qkv.tasks.speech._asr_decoding import lm_corpus, transcript_lm


def _numbers(text: str, kind: type) -> list:
    return [kind(x) for x in text.split(",") if x]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="an asr checkpoint directory")
    p.add_argument("--orders", default="5,7,9", help="n-gram orders (default: 5,7,9)")
    p.add_argument("--weights", default="0.2,0.4,0.6", help="lm weights (default: 0.2,0.4,0.6)")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--transcripts-only", action="store_true", help="the n-gram of the transcripts")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, task = load_trained(args.run)
    model.eval()
    start = time.perf_counter()
    texts = [u.text for u in task.examples("train")]
    texts = texts if args.transcripts_only else lm_corpus(task.examples)
    utts = task.examples("valid")
    refs = [u.text for u in utts]
    print(f"corpus {time.perf_counter() - start:.1f} s; {len(texts)} sentences; "
          f"valid {len(utts)}", flush=True)  # fmt: skip

    def score(label: str, weight: float) -> None:
        t = time.perf_counter()
        hyps = task.transcribe(model, [u.audio for u in utts], beam_size=args.beam_size,
                               lm_weight=weight)  # fmt: skip
        seconds = time.perf_counter() - t
        words = sum(len(h.split()) for h in hyps) / sum(len(r.split()) for r in refs)
        print(f"{label} B={weight}: WER {metrics.word_error_rate(hyps, refs):.2f} "
              f"CER {metrics.char_error_rate(hyps, refs):.2f} words/ref {words:.3f} "
              f"decode {seconds:.1f} s", flush=True)  # fmt: skip

    for order in _numbers(args.orders, int):
        t = time.perf_counter()
        task._lm = transcript_lm(texts, task.tokenizer, order=order)
        print(f"order {order}: built in {time.perf_counter() - t:.1f} s", flush=True)
        for weight in _numbers(args.weights, float):
            score(f"order {order}", weight)
    score("no lm", 0.0)


if __name__ == "__main__":
    main()
