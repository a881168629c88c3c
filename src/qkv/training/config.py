"""``TrainConfig``: every setting of a training run, validated, JSON round-trip."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal


@dataclass
class TrainConfig:
    """Settings of :class:`qkv.training.Trainer`.

    Attributes:
        steps: optimizer steps to run.
        batch_size: global batch in examples (split over ranks and accumulation).
        grad_accum: micro-batches per optimizer step.
        optimizer: ``"adam"`` (Vaswani et al.: betas 0.9/0.98, eps 1e-9) or ``"adamw"``.
        lr: peak learning rate, or the ``factor`` of the ``noam`` schedule.
        schedule: ``"noam"`` (the paper's warmup / inverse square root), ``"cosine"``,
            ``"constant"``.
        warmup: warmup steps.
        weight_decay: AdamW decay (not applied to biases and norms).
        betas, eps: Adam moments and epsilon.
        clip_norm: global gradient-norm clip (0 = off).
        label_smoothing: epsilon_ls of Szegedy et al. (2016); 0.1 in the paper.
        eval_every: evaluate every N steps (0 = only at the end).
        eval_limit: evaluate on at most this many examples (None = whole split).
        eval_beam: beam size for generative evaluation (1 = greedy).
        save_every: checkpoint every N steps (0 = only at the end).
        keep_last: checkpoints kept on disk.
        average_last: average the weights of the last N checkpoints at the end (1 = off).
        patience: early stopping after N evaluations without improvement (0 = off).
        log_every: log training loss every N steps.
        seed: seed of initialization, data order and dropout.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        amp: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"bf16"``, ``"off"``.
        progress: show a progress bar.
        threads: torch intra-op threads (None = torch's default).
    """

    steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1.0
    schedule: Literal["noam", "cosine", "constant"] = "noam"
    warmup: int = 400
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    clip_norm: float = 1.0
    label_smoothing: float = 0.1
    eval_every: int = 0
    eval_limit: int | None = None
    eval_beam: int = 1
    save_every: int = 0
    keep_last: int = 5
    average_last: int = 1
    patience: int = 0
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"
    progress: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        positive = (
            "steps",
            "batch_size",
            "grad_accum",
            "keep_last",
            "average_last",
            "log_every",
            "eval_beam",
        )
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("warmup", "eval_every", "save_every", "patience"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"grad_accum ({self.grad_accum}) must divide batch_size ({self.batch_size})"
            )
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("noam", "cosine", "constant"):
            raise ValueError(
                f"schedule must be 'noam', 'cosine' or 'constant', got {self.schedule!r}"
            )
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be 'auto', 'bf16' or 'off', got {self.amp!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.clip_norm < 0:
            raise ValueError(f"clip_norm must be >= 0, got {self.clip_norm!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)
