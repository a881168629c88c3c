"""``TrainerState``: the trainer's position in a run, typed, validated, JSON round-trip.

It is what ``trainer_state.json`` holds next to the weights: the step, the data position
(epoch and batch within it), early-stopping bookkeeping, the RNG states (so dropout resumes
exactly) and the settings. Every field is checked for type and range when read, so a
damaged or hand-edited file gives one :class:`~qkv.training.checkpoint.CheckpointError`
naming the file and the field, never a ``KeyError`` deep inside the resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from qkv._checks import is_int
from qkv.training.checkpoint import CheckpointError, read_json_object

#: Keys written by :meth:`TrainerState.to_dict`; any other key is kept in ``extra``.
_KNOWN = (
    "qkv_version",
    "task",
    "step",
    "epoch",
    "batch_in_epoch",
    "best",
    "bad_evals",
    "rng",
    "train_config",
    "optimizer",
    "elapsed",
    "scheduled",
)
_REQUIRED = ("step", "epoch", "batch_in_epoch", "rng")


def capture_rng() -> dict[str, Any]:
    """The RNG states to save: ``{"torch": bytes, "cuda": [bytes per device]}`` as int lists."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        rng["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return rng


def _byte_list(x: Any) -> bool:
    if not isinstance(x, list) or not all(type(b) is int for b in x):  # not bool, not float
        return False
    return not x or (min(x) >= 0 and max(x) <= 255)


@dataclass
class TrainerState:
    """The trainer's position in a run (``trainer_state.json``).

    Attributes:
        step: optimizer steps taken (>= 0).
        epoch: the current epoch of the data order (>= 0).
        batch_in_epoch: global batches already taken from that epoch (>= 0).
        rng: ``{"torch": [bytes], "cuda": [[bytes] per device]}`` (``"cuda"`` optional).
        best: the best headline metric so far, or None.
        bad_evals: evaluations since the best one (early stopping; >= 0).
        task: the task's name.
        qkv_version: the version that wrote the state.
        train_config: the :class:`~qkv.training.TrainConfig` as a dict.
        optimizer: optimizer hyper-parameters and non-tensor state (the tensors are in
            ``optimizer.safetensors``); None when no optimizer was saved.
        elapsed: seconds spent training so far, across resumes (>= 0).
        scheduled: a save of the step schedule or the end of the run (kept by
            ``keep_last`` and averaged), or a timed/interrupt save (False).
        extra: keys this version does not know, kept for a round trip.
    """

    step: int
    epoch: int
    batch_in_epoch: int
    rng: dict[str, Any]
    best: float | None = None
    bad_evals: int = 0
    task: str = ""
    qkv_version: str = ""
    train_config: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    elapsed: float = 0.0
    scheduled: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self, where: str = "trainer state") -> None:
        """Check every field's type and range.

        Args:
            where: what to name in errors (the file).

        Raises:
            CheckpointError: naming ``where``, the field and its value.
        """

        def bad(name: str, want: str, got: Any) -> CheckpointError:
            return CheckpointError(f"{where}: {name!r} must be {want}, got {_short(got)}")

        for name in ("step", "epoch", "batch_in_epoch", "bad_evals"):
            v = getattr(self, name)
            if not is_int(v) or v < 0:
                raise bad(name, "an int >= 0", v)
        if self.best is not None and (
            not isinstance(self.best, int | float) or isinstance(self.best, bool)
        ):
            raise bad("best", "a number or null", self.best)
        if (
            not isinstance(self.elapsed, int | float)
            or isinstance(self.elapsed, bool)
            or not self.elapsed >= 0
            or self.elapsed == float("inf")
        ):
            raise bad("elapsed", "a finite number >= 0", self.elapsed)
        if not isinstance(self.scheduled, bool):
            raise bad("scheduled", "true or false", self.scheduled)
        for name in ("task", "qkv_version"):
            if not isinstance(getattr(self, name), str):
                raise bad(name, "a string", getattr(self, name))
        if not isinstance(self.train_config, dict):
            raise bad("train_config", "an object", self.train_config)
        if self.optimizer is not None and not isinstance(self.optimizer, dict):
            raise bad("optimizer", "an object", self.optimizer)
        rng = self.rng
        if not isinstance(rng, dict) or "torch" not in rng:
            raise bad("rng", 'an object with "torch"', rng)
        size = torch.get_rng_state().numel()
        if not _byte_list(rng["torch"]) or len(rng["torch"]) != size:
            raise bad("rng.torch", f"a list of {size} ints in [0, 255]", rng["torch"])
        cuda = rng.get("cuda", [])
        if not isinstance(cuda, list) or not all(_byte_list(s) for s in cuda):
            raise bad("rng.cuda", "a list of lists of ints in [0, 255]", cuda)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``trainer_state.json`` (``optimizer`` only when set).

        Raises:
            CheckpointError: a field of the wrong type or range (see :meth:`validate`).
        """
        self.validate()
        d: dict[str, Any] = {
            **self.extra,
            "qkv_version": self.qkv_version,
            "task": self.task,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "rng": self.rng,
            "train_config": self.train_config,
            "elapsed": self.elapsed,
            "scheduled": self.scheduled,
        }
        if self.optimizer is not None:
            d["optimizer"] = self.optimizer
        return d

    @classmethod
    def from_dict(cls, obj: Any, where: str = "trainer state") -> TrainerState:
        """Rebuild from :meth:`to_dict` output, checking every field.

        Args:
            obj: the parsed JSON.
            where: what to name in errors (the file).

        Raises:
            CheckpointError: not an object, a missing required key, or a bad value.
        """
        if not isinstance(obj, dict):
            raise CheckpointError(f"{where} must hold a JSON object, got {type(obj).__name__}")
        missing = [k for k in _REQUIRED if k not in obj]
        if missing:
            raise CheckpointError(f"{where} lacks {', '.join(map(repr, missing))}")
        known = {k: obj[k] for k in _KNOWN if k in obj}
        extra = {k: v for k, v in obj.items() if k not in _KNOWN}
        state = cls(**known, extra=extra)
        state.validate(where)
        return state

    @classmethod
    def from_json(cls, path: str | Path) -> TrainerState:
        """Read and check ``trainer_state.json``.

        Raises:
            CheckpointError: naming ``path``: missing, not JSON, or any bad field.
        """
        path = Path(path)
        return cls.from_dict(read_json_object(path), str(path))

    # -- RNG -----------------------------------------------------------------------------
    def restore_rng(self) -> None:
        """Set torch's CPU (and, where present, CUDA) RNG states to the saved ones."""
        torch.set_rng_state(torch.tensor(self.rng["torch"], dtype=torch.uint8))
        cuda = self.rng.get("cuda", [])
        if cuda and torch.cuda.is_available():
            n = min(len(cuda), torch.cuda.device_count())
            for i in range(n):
                torch.cuda.set_rng_state(torch.tensor(cuda[i], dtype=torch.uint8), i)


def _short(x: Any) -> str:
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."


__all__ = ["TrainerState", "capture_rng"]
