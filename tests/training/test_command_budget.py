"""``--max-time`` bounds the whole ``qkv train`` command: preparing the data counts against
the budget, the final evaluation is bounded to what is left, the header and the summary say
how the time was split, and a task's own training stage (text2image's VQ-VAE) gets a share."""

from __future__ import annotations

import json
import time

import pytest
import torch

from qkv import models
from qkv.cli import main
from qkv.models.vq import VQConfig
from qkv.tasks import build_trainer, get_task
from qkv.tasks.multimodal._image_tokens import train_vq, vq_note
from qkv.tasks.synthetic.copy import CopyTask
from qkv.training import TrainConfig, Trainer
from qkv.training.budget import (
    EVAL_MARGIN,
    EVAL_SHARE,
    PROBE_EXAMPLES,
    STAGE_SHARE,
    WARMUP_EXAMPLES,
    BudgetSpentError,
    format_seconds,
)

COPY = ["--task", "copy", "--n-train", "64", "--n-valid", "8", "--max-len", "4",
        "--batch-size", "8", "--model", "d_model=16", "--model", "n_heads=2",
        "--model", "d_ff=32", "--model", "n_encoder_layers=1", "--model", "n_decoder_layers=1",
        "--eval-limit", "4", "--no-progress", "--threads", "1"]  # fmt: skip
OPTIONS = {"n_train": 64, "n_valid": 8, "max_len": 4}
SHAPE = {"d_model": 16, "n_heads": 2, "d_ff": 32, "n_encoder_layers": 1, "n_decoder_layers": 1}


def slow_train_split(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make building copy's training split take ``seconds`` longer, once (a slow corpus)."""
    real, slept = CopyTask.examples, []

    def examples(self, split):  # type: ignore[no-untyped-def]
        if split == "train" and not slept:
            slept.append(seconds)
            time.sleep(seconds)
        return real(self, split)

    monkeypatch.setattr(CopyTask, "examples", examples)


def test_slow_preparation_counts_against_the_budget(tmp_path, capsys, monkeypatch):
    slow_train_split(monkeypatch, 1.5)
    run = tmp_path / "run"
    start = time.monotonic()
    assert main(["train", *COPY, "--max-time", "5s", "--out", str(run)]) == 0
    wall = time.monotonic() - start
    cap = capsys.readouterr()
    summary = json.loads(cap.out)
    assert summary["prepare_seconds"] >= 1.5  # the slow split was counted
    # the loop got what preparation left: the budget spent at its end is about 5 s, less
    # what it kept for the final evaluation (at most a fifth)
    assert 5.0 * 0.8 <= summary["train_seconds"] < 6.5
    assert summary["step"] >= 1
    assert wall < 5.0 + 2.0, wall  # the whole command, its final evaluation included
    header = next(x for x in cap.err.splitlines() if x.strip().startswith("budget:"))
    assert "0:05 for the whole command: data ready in" in header and "(counted)" in header
    assert "final evaluation: " in cap.err
    assert "eval_seconds" in summary
    state = json.loads((run / "checkpoints" / (run / "latest").read_text().strip()
                        / "trainer_state.json").read_text())  # fmt: skip
    # a resumed run's budget counts from the run's start: the preparation is in it
    assert state["elapsed"] >= summary["prepare_seconds"]


def test_a_run_without_max_time_reports_no_split(tmp_path, capsys):
    assert main(["train", *COPY, "--steps", "1", "--out", str(tmp_path / "run")]) == 0
    cap = capsys.readouterr()
    summary = json.loads(cap.out)
    assert "prepare_seconds" not in summary and "eval_seconds" not in summary
    assert "for the whole command" not in cap.err


def test_preparation_that_spends_the_budget_is_refused_by_the_trainer():
    task = get_task("copy", OPTIONS)
    model = models.build(task.model_config(**SHAPE))
    cfg = TrainConfig(max_time=1.0, batch_size=8, threads=1, progress=False)
    trainer = Trainer(model, task.examples("train"), config=cfg, objective=task,
                      started=time.monotonic() - 2.0)  # fmt: skip
    with pytest.raises(BudgetSpentError, match=r"preparing the data took 2\.0 s") as e:
        trainer.fit()
    assert e.value.max_time == 1.0 and trainer.step == 0


class SlowEval:
    """An evaluation of ``n`` examples that takes ``per`` seconds per example."""

    def __init__(self, per: float, n: int = 1000) -> None:
        self.per, self.n, self.limits = per, n, []

    def __call__(self, model, limit=None):  # type: ignore[no-untyped-def]
        self.limits.append(limit)
        time.sleep(self.per * (self.n if limit is None else min(limit, self.n)))
        return {"loss": 1.0}


def test_the_final_evaluation_is_bounded_to_what_is_left():
    task = get_task("copy", OPTIONS)
    model = models.build(task.model_config(**SHAPE))
    slow = SlowEval(0.01)  # the whole evaluation would take 10 s
    cfg = TrainConfig(max_time=2.0, batch_size=8, threads=1, progress=False)
    trainer = Trainer(model, task.examples("train"), list(range(1000)), config=cfg,
                      objective=task, evaluate=slow, started=time.monotonic())  # fmt: skip
    start = time.monotonic()
    summary = trainer.fit()
    wall = time.monotonic() - start
    warm, probe, final = slow.limits
    assert (warm, probe) == (WARMUP_EXAMPLES, PROBE_EXAMPLES)
    assert PROBE_EXAMPLES <= final < 1000  # not the whole evaluation: what fits
    # the loop kept at most EVAL_SHARE of the budget for it, and it took about that
    assert trainer.eval_reserve <= EVAL_SHARE * 2.0 + 1e-9
    assert summary["eval_seconds"] < 1.0 and summary["valid"] == {"loss": 1.0}
    assert wall < 2.0 + 1.0, wall


def test_a_final_evaluation_that_fits_is_whole():
    task = get_task("copy", OPTIONS)
    model = models.build(task.model_config(**SHAPE))
    slow = SlowEval(0.004, n=50)  # the whole evaluation: 0.2 s
    cfg = TrainConfig(max_time=2.0, batch_size=8, threads=1, progress=False)
    trainer = Trainer(model, task.examples("train"), list(range(50)), config=cfg,
                      objective=task, evaluate=slow, started=time.monotonic())  # fmt: skip
    trainer.fit()
    assert slow.limits == [WARMUP_EXAMPLES, PROBE_EXAMPLES, None]
    # what was kept for it: its cost measured on 16 examples (their overhead makes it
    # more, never less) with the margin, at most the share
    assert EVAL_MARGIN * 0.2 * 0.9 <= trainer.eval_reserve <= EVAL_SHARE * 2.0


def test_a_library_trainer_keeps_the_loop_budget():
    """Without ``started`` the budget is the loop's: no probe, a whole final evaluation."""
    task = get_task("copy", OPTIONS)
    model = models.build(task.model_config(**SHAPE))
    slow = SlowEval(0.0001, n=100)
    cfg = TrainConfig(max_time=0.5, batch_size=8, threads=1, progress=False)
    trainer = Trainer(model, task.examples("train"), list(range(1000)), config=cfg,
                      objective=task, evaluate=slow)  # fmt: skip
    summary = trainer.fit()
    assert slow.limits == [None] and trainer.eval_reserve == 0.0
    assert "prepare_seconds" not in summary and summary["train_seconds"] >= 0.5


def test_the_task_stage_gets_its_share_of_a_command_budget():
    trainer = build_trainer("copy", {"max_time": 40.0, "batch_size": 8, "threads": 1},
                            options=OPTIONS, model_overrides=SHAPE,
                            started=time.monotonic())  # fmt: skip
    assert trainer.objective.stage_time == STAGE_SHARE * 40.0
    plain = build_trainer("copy", {"max_time": 40.0, "batch_size": 8, "threads": 1},
                          options=OPTIONS, model_overrides=SHAPE)  # fmt: skip
    assert plain.objective.stage_time is None


def test_the_vq_stage_stops_at_its_time(capsys):
    images = torch.rand(64, 1, 8, 8)
    start = time.monotonic()
    _, report = train_vq(images, VQConfig(image_size=8, hidden=8, n_codes=16, n_down=1),
                         steps=10**6, seed=0, max_time=0.5)  # fmt: skip
    assert time.monotonic() - start < 3.0
    assert 1 <= report["steps"] < 10**6
    note = vq_note(report, 10**6, 0.5)
    assert note is not None and f"{int(report['steps']):,} of 1,000,000 steps" in note
    assert "stopped at its share of the time budget, 0.5 s" in note
    assert vq_note({}, 300, None) is None
    err = capsys.readouterr().err
    assert "qkv train: VQVAE" in err and "\r" not in err  # no bar: stderr is no terminal


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.84, "0.8 s"), (41.2, "41 s"), (59.4, "59 s"), (125, "2:05")]
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


class ColdProbe(SlowEval):
    """The first ``cold_calls`` calls are slow per example (a cold model); every later
    evaluation takes ``warm`` seconds per example."""

    def __init__(self, cold: float, warm: float, n: int, cold_calls: int = 1) -> None:
        super().__init__(cold, n)
        self.warm, self.cold_calls = warm, cold_calls

    def __call__(self, model, limit=None):  # type: ignore[no-untyped-def]
        out = super().__call__(model, limit)
        if len(self.limits) >= self.cold_calls:
            self.per = self.warm
        return out


def test_the_probe_times_a_warmed_up_model():
    """A first call's start-up cost (an import, thread pools) is paid by the untimed warm-up:
    without any evaluation in the loop, the reserve is the warm cost from the start."""
    task = get_task("copy", OPTIONS)
    model = models.build(task.model_config(**SHAPE))
    # cold, the whole evaluation would look like 2 s: the share's cap, ~0.4 s of 2
    evaluate = ColdProbe(cold=0.02, warm=0.0005, n=100)
    cfg = TrainConfig(max_time=2.0, batch_size=8, threads=1, progress=False)
    trainer = Trainer(model, task.examples("train"), list(range(100)), config=cfg,
                      objective=task, evaluate=evaluate, started=time.monotonic())  # fmt: skip
    trainer.fit()
    assert evaluate.limits == [WARMUP_EXAMPLES, PROBE_EXAMPLES, None]
    # the whole warm evaluation takes 0.05 s: the reserve is that with the margin (the
    # probe's 16 examples carry their call's overhead: more, never less)
    assert EVAL_MARGIN * 0.05 * 0.9 <= trainer.eval_reserve <= EVAL_MARGIN * 0.05 * 2


def test_a_whole_evaluation_in_the_loop_refits_the_final_ones_reserve():
    task = get_task("copy", OPTIONS)
    model = models.build(task.model_config(**SHAPE))
    # the warm-up and the probe stay cold: 4 + 16 examples take 0.4 s (counted in the
    # budget), the whole evaluation looks like 2 s, so the reserve is the share's cap, a
    # fifth of the ~1.6 s left
    evaluate = ColdProbe(cold=0.02, warm=0.0005, n=100, cold_calls=2)
    cfg = TrainConfig(max_time=2.0, batch_size=8, threads=1, progress=False, eval_every=20)
    trainer = Trainer(model, task.examples("train"), list(range(100)), config=cfg,
                      objective=task, evaluate=evaluate, started=time.monotonic())  # fmt: skip
    kept = []
    refit = trainer._refit_reserve

    def spy() -> None:
        kept.append(trainer.eval_reserve)
        refit()

    trainer._refit_reserve = spy  # type: ignore[method-assign]
    trainer.fit()
    assert evaluate.limits[:2] == [WARMUP_EXAMPLES, PROBE_EXAMPLES] and len(kept) >= 2, (
        evaluate.limits,
        kept,
    )
    assert kept[0] > 0.5 * EVAL_SHARE * 2.0, kept  # the probe's: most of the share
    # the loop's whole evaluations took 0.05 s: the reserve is that with the margin
    assert trainer.eval_reserve < 0.5 * kept[0], (trainer.eval_reserve, kept)
    assert trainer.eval_reserve == pytest.approx(EVAL_MARGIN * 0.05, rel=0.5)
