"""The trainer's process set-up: the device, the ``torchrun`` process group, the DDP/FSDP
wrapper, the optimizer, and what every rank must agree on about Ctrl-C and SIGTERM (the time
budget is :mod:`qkv.training._trainer_budget`'s).

:class:`~qkv.training.Trainer` inherits :class:`ProcessSetup`; the loop itself lives in
:mod:`qkv.training.trainer`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from qkv.training import parallel
from qkv.training.config import TrainConfig, parse_lr_scale
from qkv.training.distributed import DistInfo, all_reduce_sum, init_distributed
from qkv.training.finetune import HEAD_PREFIXES, freeze_modules, parameters_under
from qkv.training.objective import LossOutput, Objective


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available else cpu; other names as given.

    Raises:
        ValueError: an unknown device name, or a device this build of torch cannot use.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N, mps...; got {name!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this torch build or machine has no CUDA GPU")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be cpu, cuda or mps, got {name!r}")
    return dev


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (Vaswani et al. 2017: betas (0.9, 0.98), eps 1e-9) or AdamW with decoupled
    weight decay on matrices only (not biases, norms or embeddings' 1-D params).

    Each parameter group carries ``lr_scale``: ``cfg.head_lr_scale`` for the head's
    parameters (:data:`~qkv.training.finetune.HEAD_PREFIXES`), the scale of the longest
    module name of ``cfg.lr_scale`` that holds a parameter (winning over the head's), 1 for
    the rest; the loop sets a group's lr to the schedule's times its scale.

    Raises:
        ValueError: a ``cfg.lr_scale`` name that is no module or parameter of the model.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    scale = {n: cfg.head_lr_scale if n.startswith(HEAD_PREFIXES) else 1.0 for n, _ in named}
    given = parse_lr_scale(cfg.lr_scale)
    # shortest name first: a longer name that holds a parameter lies inside a shorter one
    # that holds it too, so it is applied later and wins
    for want in sorted(given, key=len):
        for n in parameters_under(model, want, "lr_scale"):
            if n in scale:  # frozen parameters have no group
                scale[n] = given[want]
    # one group per scale, the body's (1.0) first: a run without scales keeps one set of
    # groups, as checkpoints keep them
    scales = sorted(set(scale.values()) - {1.0})
    parts = [([p for n, p in named if scale[n] == s], s) for s in [1.0, *scales]]
    groups: list[dict[str, Any]] = []
    for params, scale in parts:
        if cfg.optimizer == "adam":
            groups.append({"params": params, "lr_scale": scale})
            continue
        groups += [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        groups[-2]["lr_scale"] = groups[-1]["lr_scale"] = scale
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


class ProcessSetup:
    """Mixin of :class:`~qkv.training.Trainer`: where it runs and how the ranks agree."""

    cfg: TrainConfig
    objective: Objective
    _critical: bool
    _stop: int | None
    device: torch.device
    dist: DistInfo
    model: nn.Module
    frozen: list[str]
    ddp: nn.Module
    optimizer: torch.optim.Optimizer
    _loss: Callable[..., LossOutput]

    def _set_up_process(self, model: nn.Module) -> None:
        """Threads, device, process group, frozen modules, the DDP/FSDP wrapper, the
        (compiled) loss and the optimizer, in this order."""
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.dist = init_distributed(self.device)
        self.model = model.to(self.device)
        self.frozen = freeze_modules(self.model, cfg.freeze)  # before DDP and the optimizer
        # what the loop calls: DDP or FSDP (which shards self.model in place), compiled
        self.ddp = parallel.wrap(self.model, cfg, self.dist, self.device)
        # --compile: the model's forward and the objective's loss in one compiled graph
        self._loss = (
            parallel.compile_loss(self.objective.loss) if cfg.compile else self.objective.loss
        )
        self.optimizer = build_optimizer(self.model, cfg)

    # -----------------------------------------------------------------------------------
    # Ctrl-C and SIGTERM
    # -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Inside a step or a save, the first Ctrl-C/SIGTERM only asks to stop at its end;
        elsewhere (evaluation, logging) it interrupts at once, which leaves the state at a
        step boundary."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._critical and self._stop is None:
                self._stop = signum
                if self.dist.is_main:
                    print(
                        "\nqkv: stopping after this step and saving a checkpoint "
                        "(press Ctrl-C again to abort without saving)",
                        flush=True,
                    )
                return
            raise KeyboardInterrupt

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _stop_agreed(self) -> bool:
        """Whether any rank was asked to stop (all ranks stop at the same step)."""
        asked = float(self._stop is not None)
        if self.dist.enabled:
            asked = all_reduce_sum(asked, self.dist, self.device)
        return asked > 0
