"""The text2text step cost of docs/recipes.md: CPU seconds per training step of a model on
one thread, after three untimed steps. CPU time of the process, not wall time, so that two
settings measured on a shared machine compare (on a quiet core the two are equal).

    PYTHONPATH=src python scripts/text2text_speed.py t5-mini 128 16000 10 '{"batch_tokens": null}'
    PYTHONPATH=src python scripts/text2text_speed.py t5-micro 64 4000 30 '{"batch_tokens": null}'
    PYTHONPATH=src python scripts/text2text_speed.py t5-micro 64 4000 30 '{"batch_tokens": 4096}'
    PYTHONPATH=src python scripts/text2text_speed.py t5-micro 64 4000 30   # the recipe's 2,048

Arguments: preset, max_len, vocab_size, timed steps, and optionally a JSON object of
training settings that replace the recipe's.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from qkv.tasks import TaskOptions, Text2TextTask, build_trainer


def main(preset: str, max_len: int, vocab_size: int, steps: int, config: dict) -> None:
    torch.set_num_threads(1)
    task = Text2TextTask(TaskOptions(max_len=max_len, vocab_size=vocab_size))
    settings = {**task.recipe, **config, "steps": 10**6, "progress": False}
    trainer = build_trainer(task, settings, preset=preset)
    for _ in range(3):  # allocations and first-call costs
        trainer.train_step()
    start = time.process_time()
    for _ in range(steps):
        trainer.train_step()
    seconds = (time.process_time() - start) / steps
    n = sum(p.numel() for p in trainer.model.parameters())
    print(json.dumps({"preset": preset, "parameters": n, "cpu_s_per_step": round(seconds, 3)}))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], int(args[1]), int(args[2]), int(args[3]), json.loads(args[4]) if args[4:] else {})
