"""``TrainConfig``: every setting of a training run, validated, JSON round-trip, and the one
source of the command line's training flags (help, default, choices come from here).

Each field's ``metadata`` holds its help text, its command-line group and whether a resumed
run may change it (``resume_safe``: settings that do not change the training trajectory,
such as how often to evaluate, save or log, how long to train, and where to run).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from qkv._checks import check_bool, check_choice, check_int, check_range

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("noam", "cosine", "constant")
AMP_MODES = ("auto", "bf16", "off")


def _meta(
    help: str, group: str, *, resume_safe: bool = False, flag: str | None = None
) -> dict[str, Any]:
    return {"help": help, "group": group, "resume_safe": resume_safe, "flag": flag}


OPT, EVAL, RUN = "optimization", "evaluation and checkpoints", "runtime"


#: ``steps`` of a run that only a time budget (``max_time``) ends.
UNBOUNDED_STEPS = 10**9
#: The largest count a setting takes (steps, batch, cadences...): larger is a typo (1e30),
#: not a run any machine finishes.
MAX_COUNT = 10**9
#: The largest seed: torch's generators take 64-bit seeds.
MAX_SEED = 2**63 - 1
#: The longest time budget, in seconds (30 days).
MAX_TIME = 30 * 86400.0


def parse_lr_scale(spec: object) -> dict[str, float]:
    """``"vision=0.1,fuse=2"`` -> ``{"vision": 0.1, "fuse": 2.0}`` (``--lr-scale``).

    Raises:
        ValueError: not a string of ``NAME=SCALE`` parts, a name given twice, or a scale
            that is not a finite number > 0 (the message names ``lr_scale`` and the part).
    """
    if not isinstance(spec, str):
        raise ValueError(f"lr_scale must be comma-separated MODULE=SCALE, got {spec!r}")
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, eq, value = (x.strip() for x in part.partition("="))
        if not (name and eq):
            raise ValueError(f"lr_scale: {part!r} is not MODULE=SCALE (e.g. vision=0.1)")
        if name in out:
            raise ValueError(f"lr_scale: {name!r} is given twice in {spec!r}")
        try:
            number: object = float(value)
        except ValueError:
            number = value
        out[name] = check_range(f"lr_scale {name!r}", number, lo=0.0, lo_open=True)
    return out


@dataclass
class TrainConfig:
    """Settings of :class:`qkv.training.Trainer` (each field's help is in its metadata,
    printed by ``qkv train --help``).

    Raises:
        ValueError: from ``__post_init__``, naming the field and the value.
    """

    steps: int = field(
        default=1000,
        metadata=_meta("optimizer steps to run (the run's total)", OPT, resume_safe=True),
    )
    max_time: float | None = field(
        default=None,
        metadata=_meta(
            "time budget of the whole command (30m, 600s, 1h30m): preparing the data counts, "
            "and training stops in time for the final evaluation, which takes the examples "
            "that fit in the rest; the schedule is stretched to fit; --steps is then only an "
            "upper bound (a Trainer given no started= spends it in its loop)",
            OPT,
            resume_safe=True,
        ),
    )
    batch_size: int = field(
        default=64,
        metadata=_meta("global batch in examples (split over processes and --grad-accum)", OPT),
    )
    batch_tokens: int = field(
        default=0,
        metadata=_meta(
            "batch by tokens: length-bucketed batches of at most N tokens, padding included, "
            "instead of --batch-size examples (0 = off)",
            OPT,
        ),
    )
    grad_accum: int = field(default=1, metadata=_meta("micro-batches per optimizer step", OPT))
    optimizer: Literal["adam", "adamw"] = field(
        default="adam",
        metadata=_meta(
            "adam (Vaswani et al.: betas 0.9/0.98, eps 1e-9) or adamw (decoupled weight "
            "decay on matrices only)",
            OPT,
        ),
    )
    lr: float = field(
        default=1.0,
        metadata=_meta("peak learning rate; for --schedule noam, the schedule's factor", OPT),
    )
    head_lr_scale: float = field(
        default=1.0,
        metadata=_meta(
            "multiply the learning rate of the task's head (classifier, head, pooler: the "
            "modules fine-tuning initialises anew) by this",
            OPT,
        ),
    )
    lr_scale: str = field(
        default="",
        metadata=_meta(
            "multiply the learning rate of modules by a factor: comma-separated "
            "MODULE=SCALE (names as --freeze takes them; the longest name that holds a "
            "parameter wins, over --head-lr-scale too), e.g. vision=0.1 tunes a "
            "pretrained image tower slowly under layers that start from scratch",
            OPT,
        ),
    )
    schedule: Literal["noam", "cosine", "constant"] = field(
        default="noam",
        metadata=_meta(
            "noam (the paper's warmup then inverse square root), cosine (warmup then cosine "
            "decay to 0 at --steps), constant (after warmup)",
            OPT,
        ),
    )
    warmup: int = field(default=400, metadata=_meta("warmup steps", OPT))
    weight_decay: float = field(
        default=0.0, metadata=_meta("AdamW decay, not applied to biases and norms", OPT)
    )
    betas: tuple[float, float] = field(
        default=(0.9, 0.98), metadata=_meta("Adam moment coefficients beta1,beta2", OPT)
    )
    eps: float = field(
        default=1e-9, metadata=_meta("Adam epsilon (the paper: 1e-9)", OPT, flag="--adam-eps")
    )
    clip_norm: float = field(
        default=1.0, metadata=_meta("clip the global gradient norm to this (0 = off)", OPT)
    )
    label_smoothing: float = field(
        default=0.1,
        metadata=_meta("epsilon_ls of Szegedy et al. 2016 (the paper: 0.1; 0 = off)", OPT),
    )
    freeze: str = field(
        default="",
        metadata=_meta(
            "keep these parameters fixed: comma-separated module names (embed: the "
            "embeddings; encoder.layers.0: a layer), each the whole module under it; "
            "empty = train all",
            OPT,
        ),
    )
    cache_frozen: bool = field(
        default=False,
        metadata=_meta(
            "keep the frozen prefix's output (--freeze embed and the first layers) for "
            "each training example as the first epoch computes it; later epochs train the "
            "layers above on it: the same steps, without recomputing the prefix. Needs no "
            "dropout in the frozen layers and unaugmented batches; memory: d floats per "
            "training token",
            RUN,
            resume_safe=True,
        ),
    )
    seed: int = field(
        default=0, metadata=_meta("seed of initialization, data order and dropout", OPT)
    )
    eval_every: int = field(
        default=0,
        metadata=_meta("evaluate every N steps (0 = only at the end)", EVAL, resume_safe=True),
    )
    eval_limit: int | None = field(
        default=None,
        metadata=_meta(
            "evaluate on at most N examples (default: the whole split)", EVAL, resume_safe=True
        ),
    )
    eval_beam: int = field(
        default=1,
        metadata=_meta("beam size of generative evaluation (1 = greedy)", EVAL, resume_safe=True),
    )
    save_every: int = field(
        default=0,
        metadata=_meta(
            "checkpoint every N steps (0 = no step schedule: only the timed saves of "
            "--save-minutes, on Ctrl-C and at the end)",
            EVAL,
            resume_safe=True,
        ),
    )
    save_minutes: float = field(
        default=5.0,
        metadata=_meta(
            "also checkpoint when this many minutes have passed since the last save, so a "
            "long run loses little to a crash (0 = off)",
            EVAL,
            resume_safe=True,
        ),
    )
    keep_last: int = field(
        default=5, metadata=_meta("checkpoints kept on disk", EVAL, resume_safe=True)
    )
    average_last: int = field(
        default=1,
        metadata=_meta(
            "at the end, also save the average of the last N step checkpoints (1 = off)", EVAL
        ),
    )
    patience: int = field(
        default=0,
        metadata=_meta("stop after N evaluations without improvement (0 = never)", EVAL),
    )
    log_every: int = field(
        default=10,
        metadata=_meta("log the training loss every N steps", EVAL, resume_safe=True),
    )
    device: str = field(
        default="auto",
        metadata=_meta(
            "auto (cuda when available, else cpu), cpu, cuda, cuda:1 ...", RUN, resume_safe=True
        ),
    )
    amp: Literal["auto", "bf16", "off"] = field(
        default="auto",
        metadata=_meta("auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or off", RUN),
    )
    progress: bool = field(
        default=True, metadata=_meta("show a progress bar", RUN, resume_safe=True)
    )
    threads: int | None = field(
        default=None,
        metadata=_meta(
            "torch intra-op threads, and at most as many for the tokenizer (default: qkv "
            "train takes the cores this process may use less those other work keeps busy "
            "now, at least 1, or OMP_NUM_THREADS when set; a Trainer keeps torch's)",
            RUN,
            resume_safe=True,
        ),
    )
    compile: bool = field(
        default=False,
        metadata=_meta(
            "torch.compile the training forward and loss as one graph (the first steps wait "
            "for the compiler; evaluation runs eagerly)",
            RUN,
            resume_safe=True,
        ),
    )
    fsdp: bool = field(
        default=False,
        metadata=_meta(
            "under torchrun, shard parameters, gradients and optimizer state over the "
            "processes (FSDP2, one unit per block) instead of DDP; checkpoints stay whole, "
            "so a run resumes on 1 process, DDP or FSDP",
            RUN,
            resume_safe=True,
        ),
    )
    activation_checkpointing: bool = field(
        default=False,
        metadata=_meta(
            "recompute each block's activations in the backward pass: less memory, about "
            "one more forward of compute",
            RUN,
            resume_safe=True,
        ),
    )

    def __post_init__(self) -> None:
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers (beta1, beta2), got {self.betas!r}")
        for i, b in enumerate(self.betas):  # before float(): a JSON null or list is no number
            check_range(f"betas[{i}]", b, lo=0.0, hi=1.0)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "keep_last",
            "average_last",
            "log_every",
            "eval_beam",
        ):
            check_int(name, getattr(self, name), 1, maximum=MAX_COUNT)
        for name in ("warmup", "eval_every", "save_every", "patience", "batch_tokens"):
            check_int(name, getattr(self, name), 0, maximum=MAX_COUNT)
        check_int("seed", self.seed, 0, maximum=MAX_SEED)
        if self.eval_limit is not None:
            check_int("eval_limit", self.eval_limit, 1, maximum=MAX_COUNT)
        if self.max_time is not None:
            check_range("max_time", self.max_time, lo=0.0, lo_open=True)
            if self.max_time > MAX_TIME:
                raise ValueError(
                    f"max_time must be at most {MAX_TIME:g} s (30 days), got {self.max_time!r}"
                )
        if self.threads is not None:
            check_int("threads", self.threads, 1, maximum=MAX_COUNT)
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"grad_accum ({self.grad_accum}) must divide batch_size ({self.batch_size})"
            )
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        if self.schedule == "noam" and self.warmup < 1:
            # the noam rate is d^-0.5 * min(step^-0.5, step * warmup^-1.5): no warmup, no rate
            raise ValueError(f"schedule 'noam' needs warmup >= 1, got {self.warmup}")
        check_choice("amp", self.amp, AMP_MODES)
        check_range("lr", self.lr, lo=0.0, lo_open=True)
        check_range("head_lr_scale", self.head_lr_scale, lo=0.0, lo_open=True)
        parse_lr_scale(self.lr_scale)
        check_range("eps", self.eps, lo=0.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, lo=0.0)
        check_range("clip_norm", self.clip_norm, lo=0.0)
        check_range("save_minutes", self.save_minutes, lo=0.0)
        check_range("label_smoothing", self.label_smoothing, lo=0.0, hi=1.0)
        for name in ("progress", "compile", "fsdp", "activation_checkpointing"):
            check_bool(name, getattr(self, name))
        if not isinstance(self.freeze, str) or any(
            not part.strip() for part in self.freeze.split(",") if self.freeze
        ):
            raise ValueError(
                f"freeze must be comma-separated module names (e.g. 'embed'), got {self.freeze!r}"
            )
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be a device name, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` (as saved in a checkpoint's trainer state).

        Raises:
            ValueError: not a dict, unknown fields, or invalid values.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a TrainConfig must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        d = dict(d)
        if isinstance(d.get("betas"), list):
            d["betas"] = tuple(d["betas"])
        return cls(**d)


def flag_of(name: str) -> str:
    """The command-line flag of a :class:`TrainConfig` field (``eval_every`` ->
    ``--eval-every``)."""
    for f in fields(TrainConfig):
        if f.name == name:
            return f.metadata.get("flag") or "--" + name.replace("_", "-")
    raise KeyError(name)


def resume_config(saved: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """The config of a resumed run: the saved one, with the settings given anew applied
    where that is safe.

    A resumed run continues the saved run: its batch size, learning rate, schedule, seed and
    every other setting that shapes the training trajectory stay as they were saved. Only
    fields marked ``resume_safe`` (steps, evaluation/save/log cadence, device, threads,
    progress) may change.

    Args:
        saved: the run's config, from its checkpoint.
        given: fields the user set explicitly this time (unset ones are absent).

    Returns:
        The config to continue with.

    Raises:
        ValueError: a field that may not change was given a different value; the message
            names the flag and both values.
    """
    safe = {f.name for f in fields(TrainConfig) if f.metadata.get("resume_safe")}
    refused = []
    for name, value in given.items():
        old = getattr(saved, name)
        new = tuple(value) if name == "betas" else value
        if name not in safe and new != old:
            refused.append(f"{flag_of(name)} {_show(new)} (the run has {_show(old)})")
    if refused:
        raise ValueError(
            "a resumed run continues with its saved settings; these differ: "
            + "; ".join(refused)
            + ". Drop them, or start a new run with another --out"
        )
    return TrainConfig.from_dict({**saved.to_dict(), **{k: given[k] for k in given if k in safe}})


def _show(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(map(str, v))
    return str(v)


__all__ = [
    "AMP_MODES",
    "MAX_COUNT",
    "MAX_SEED",
    "MAX_TIME",
    "OPTIMIZERS",
    "SCHEDULES",
    "UNBOUNDED_STEPS",
    "TrainConfig",
    "flag_of",
    "parse_lr_scale",
    "resume_config",
]
