"""How the trainer runs a model: activation checkpointing, DDP or FSDP, ``torch.compile``.

* **DDP** (``torchrun`` with more than one process): every rank holds the whole model and
  averages gradients (``nn.parallel.DistributedDataParallel``).
* **FSDP** (``--fsdp`` under ``torchrun``): parameters, gradients and optimizer state are
  sharded over the ranks with FSDP2 (``torch.distributed.fsdp.fully_shard``; Zhao et al.
  2023, "PyTorch FSDP"), one unit per transformer block (every
  :class:`~qkv.models.EncoderLayer` / :class:`~qkv.models.DecoderLayer`) and the rest
  (embeddings, output head, final norm) in the root unit. On CUDA with bf16 autocast the
  blocks compute in bfloat16 and reduce gradients in float32 (``MixedPrecisionPolicy``).
  With one process ``--fsdp`` changes nothing, so a run moves freely between 1 process,
  DDP and FSDP.
* **Activation checkpointing** (Chen et al. 2016, "Training Deep Nets with Sublinear Memory
  Cost"): each block's activations are recomputed in the backward pass
  (``torch.utils.checkpoint``, non-reentrant, RNG state restored so dropout masks repeat).
* **Compilation** (``--compile``): the objective's loss, which calls the model, is
  ``torch.compile``'d as one function, so the graph holds the forward *and* the loss
  (cross-entropy over the vocabulary is fused with the output head's backward); the qkv
  models trace without a graph break. Evaluation runs the model eagerly.

Checkpoints are the same files whatever ran: a sharded model is gathered to full tensors
on rank 0 (``torch.distributed.checkpoint.state_dict`` with ``full_state_dict=True``) and
written as a single process writes it; loading scatters full tensors back to the shards.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from qkv.models.blocks import DecoderLayer, EncoderLayer
from qkv.training import checkpoint as ckpt
from qkv.training.config import TrainConfig
from qkv.training.distributed import DistInfo


def _fsdp() -> ModuleType:
    """``torch.distributed.fsdp``, imported on first use: it takes about as long to import
    as torch itself, a cost that every ``qkv`` process without ``--fsdp`` need not pay."""
    import torch.distributed.fsdp as fsdp

    return fsdp


def _dcp() -> ModuleType:
    """``torch.distributed.checkpoint.state_dict`` (sharded save/load), imported on first
    use like :func:`_fsdp`."""
    import torch.distributed.checkpoint.state_dict as dcp

    return dcp


#: the modules that become one FSDP unit and one activation-checkpointing region each
BLOCK_TYPES: tuple[type[nn.Module], ...] = (EncoderLayer, DecoderLayer)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a model, in module order."""
    return [m for m in model.modules() if isinstance(m, BLOCK_TYPES)]


# ---------------------------------------------------------------------------------------
# wrapping
# ---------------------------------------------------------------------------------------
def checkpoint_blocks(model: nn.Module) -> int:
    """Recompute each block's activations in the backward pass instead of keeping them.

    The block's ``forward`` is replaced, on the instance, by one that runs it under
    ``torch.utils.checkpoint.checkpoint`` (non-reentrant): parameter names and the state
    dict stay as they were (a wrapper module would add a prefix to every name), and FSDP's
    hooks, which sit on the module call, still run around it. Only during training with
    gradients does it recompute; evaluation runs the block as usual.

    Returns:
        The number of blocks checkpointed.
    """
    found = blocks(model)
    for block in found:
        if getattr(block, "_qkv_checkpointed", False):
            continue
        plain = block.forward

        def forward(*args: Any, _plain: Callable[..., Tensor] = plain, **kwargs: Any) -> Tensor:
            if not torch.is_grad_enabled():
                return _plain(*args, **kwargs)
            return checkpoint(_plain, *args, use_reentrant=False, **kwargs)  # type: ignore[no-any-return]

        block.forward = forward  # type: ignore[method-assign]
        block._qkv_checkpointed = True  # type: ignore[assignment]
    return len(found)


def uses_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the trainer's autocast computes in bfloat16 (``--amp``)."""
    return cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")


def shard(model: nn.Module, *, mixed_precision: bool = False) -> nn.Module:
    """FSDP2 over the default process group: one unit per block, then the root.

    Args:
        model: on its training device; modified in place (its parameters become
            ``DTensor`` shards) and returned.
        mixed_precision: compute in bfloat16 and reduce gradients in float32.

    Returns:
        ``model``.
    """
    kw: dict[str, Any] = {}
    if mixed_precision:
        kw["mp_policy"] = _fsdp().MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32
        )
    fully_shard = _fsdp().fully_shard
    for block in blocks(model):
        fully_shard(block, **kw)
    fully_shard(model, **kw)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` was sharded by :func:`shard` (FSDP2)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")  # never imported: nothing is sharded
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def check_config(cfg: TrainConfig, info: DistInfo) -> None:
    """Refuse the settings FSDP cannot honour.

    Raises:
        ValueError: ``average_last > 1`` with FSDP on more than one process (averaging
            loads weights into rank 0's copy, which FSDP shards).
    """
    if cfg.fsdp and info.enabled and cfg.average_last > 1:
        raise ValueError(
            f"average_last ({cfg.average_last}) needs the whole model on one process; "
            f"FSDP shards it: drop --average-last or --fsdp (average afterwards with "
            f"qkv.training.average_checkpoints)"
        )


def wrap(model: nn.Module, cfg: TrainConfig, info: DistInfo, device: torch.device) -> nn.Module:
    """The module the training loop calls: ``model`` with activation checkpointing, then
    DDP or FSDP (more than one process), each as ``cfg`` asks (compilation is of the loss
    around it: :func:`compile_loss`).

    ``model`` itself stays the one to read parameters, save and evaluate from (FSDP shards
    it in place; DDP wraps it).

    Raises:
        ValueError: see :func:`check_config`.
    """
    check_config(cfg, info)
    if cfg.activation_checkpointing:
        checkpoint_blocks(model)
    run: nn.Module = model
    if info.enabled and cfg.fsdp:
        run = shard(model, mixed_precision=uses_bf16(cfg, device))
    elif info.enabled:
        run = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )
    return run


def compile_loss(loss: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile`` of an objective's ``loss(model, batch, ...)``: the model's forward
    and the loss in one graph (the model, an argument, is traced inline). Measured on CPU
    (``docs/performance.md``): compiling the model alone gained less than compiling it
    with the cross-entropy over the vocabulary.

    Random ops (dropout, drop path) draw from torch's generator as eager mode does
    (inductor's ``fallback_random``), so a compiled run and an eager one of the same seed
    draw the same masks and leave the generator in the same state. Inductor's own
    generator drew other masks: digits' first loss (dropout 0.1) was 1.0e-2 away from
    eager's, 2.4e-7 with this; the speed was the same (docs/performance.md)."""
    return torch.compile(loss, options={"fallback_random": True})


def _unwrap_compiled(module: nn.Module) -> nn.Module:
    return getattr(module, "_orig_mod", module)


@contextlib.contextmanager
def no_sync(module: nn.Module) -> Iterator[None]:
    """Accumulate gradients locally for a micro-batch that is not the step's last: DDP's
    ``no_sync()``, FSDP's ``set_requires_gradient_sync(False)``; nothing for one process."""
    inner = _unwrap_compiled(module)
    if isinstance(inner, nn.parallel.DistributedDataParallel):
        with inner.no_sync():
            yield
        return
    if is_sharded(inner):
        inner.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            inner.set_requires_gradient_sync(True)  # type: ignore[operator]
        return
    yield


def _sharded_units(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if is_sharded(m)]


@contextlib.contextmanager
def full_parameters(model: nn.Module) -> Iterator[None]:
    """Inside the block, a sharded model holds its full parameters on every rank, so one
    rank can run it alone (rank 0's evaluation, samples): forward calls then gather
    nothing. Every rank must enter (the gathering is collective); on leaving, the
    parameters are sharded again. Nothing happens for a model that is not sharded.

    Do not call ``state_dict()`` inside (FSDP's hook would shard the parameters again).
    """
    units = _sharded_units(model) if is_sharded(model) else []
    for m in units:
        m.set_reshard_after_forward(False, recurse=False)  # type: ignore[operator]
    for m in units:
        m.unshard()  # type: ignore[operator]
    try:
        yield
    finally:
        for m in units:
            m.reshard()  # type: ignore[operator]
        for i, m in enumerate(units):
            # blocks free their full parameters after forward; the root keeps them (FSDP's
            # defaults)
            m.set_reshard_after_forward(i > 0, recurse=False)  # type: ignore[operator]


# ---------------------------------------------------------------------------------------
# checkpoints of sharded models: the single-process files
# ---------------------------------------------------------------------------------------
class StateSnapshot:
    """A state dict held outside its module, offered through ``state_dict()`` so that
    :func:`qkv.training.checkpoint.write_checkpoint` writes it as it writes a module's
    (and an optimizer's) state."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        """A new dict of the held tensors (writers may drop entries, as safetensors'
        ``save_model`` drops tied names)."""
        return dict(self._state)


def _alias_groups(model: nn.Module) -> list[list[str]]:
    """Names of each parameter, tied ones together (``[[embed.tok_emb.weight,
    lm_head.weight], ...]``), in module order."""
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    return list(by_id.values())


def _param_index(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Parameter name -> its index in ``optimizer.state_dict()`` (the single-process ids)."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [p for g in optimizer.param_groups for p in g["params"]]
    return {names[id(p)]: i for i, p in enumerate(order)}


def gather_for_save(
    model: nn.Module, optimizer: torch.optim.Optimizer, info: DistInfo
) -> tuple[Any, Any]:
    """What to hand :func:`~qkv.training.rundir.save_run_checkpoint`: ``(model,
    optimizer)`` themselves, or for a sharded model their full state on rank 0.

    Collective for a sharded model: every rank must call it. Rank 0 receives
    :class:`StateSnapshot` s whose ``state_dict()`` are exactly what the unsharded model
    and optimizer of a single process return (tied weights one tensor under both names;
    optimizer state keyed by parameter index), so the files are the same; the other ranks
    receive ``(None, None)``.
    """
    if not is_sharded(model):
        return model, optimizer
    dcp = _dcp()
    opts = dcp.StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = dcp.get_model_state_dict(model, options=opts)
    optim = dcp.get_optimizer_state_dict(model, optimizer, options=opts)
    if not info.is_main:
        return None, None
    for names in _alias_groups(model):
        kept = next(n for n in names if n in weights)
        for n in names:
            weights[n] = weights[kept]  # one tensor: written once, as save_model does
    index = _param_index(model, optimizer)
    state = {index[name]: st for name, st in optim.get("state", {}).items()}
    groups = optimizer.state_dict()["param_groups"]  # hyper-parameters, integer ids
    return StateSnapshot(weights), StateSnapshot({"state": state, "param_groups": groups})


def load_sharded(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    directory: str | Path,
    optimizer_meta: dict[str, Any] | None,
    device: torch.device,
) -> None:
    """Load a checkpoint (written by any number of processes) into a sharded model and
    its optimizer: every rank reads the full tensors and keeps its shards.

    Raises:
        qkv.training.checkpoint.CheckpointError: a damaged file, tensors missing,
            unexpected or of other shapes (listed), or an optimizer state that does not fit.
    """
    d = Path(directory)
    path = d / ckpt.MODEL_FILE
    tensors = ckpt.read_tensors(path)
    full: dict[str, Tensor] = {}
    missing, shapes = [], []
    params = dict(model.named_parameters(remove_duplicate=False))
    for names in _alias_groups(model):
        have = [n for n in names if n in tensors]
        if not have:
            missing.extend(names)
            continue
        t = tensors[have[0]]
        if tuple(t.shape) != tuple(params[names[0]].shape):
            shapes.append(
                f"{have[0]}: file {tuple(t.shape)} vs model {tuple(params[names[0]].shape)}"
            )
        full[names[0]] = t  # DCP distributes the tensor under its first name only
    own = set(model.state_dict())
    for name in own - set(params):  # persistent buffers
        if name in tensors:
            full[name] = tensors[name]
        else:
            missing.append(name)
    unexpected = sorted(set(tensors) - own)
    if missing or unexpected or shapes:
        problems = [
            f"missing {sorted(missing)}" if missing else "",
            f"unexpected {unexpected}" if unexpected else "",
            f"shape mismatches [{'; '.join(shapes)}]" if shapes else "",
        ]
        raise ckpt.CheckpointError(
            f"{path} does not fit {type(model).__name__}: " + ", ".join(p for p in problems if p)
        )
    # checked above; strict=False because tied names other than the first are absent
    dcp = _dcp()
    dcp.set_model_state_dict(
        model, full, options=dcp.StateDictOptions(full_state_dict=True, strict=False)
    )
    if optimizer_meta is None:
        raise ckpt.CheckpointError(f"{d / ckpt.STATE_FILE} has no 'optimizer' entry to resume from")
    flat = ckpt.read_tensors(d / ckpt.OPTIM_FILE, device=str(device))
    sd = ckpt.optimizer_state_from_flat(
        optimizer,
        flat,
        optimizer_meta,
        tensor_file=d / ckpt.OPTIM_FILE,
        state_file=d / ckpt.STATE_FILE,
    )
    name_of = {i: n for n, i in _param_index(model, optimizer).items()}
    by_name = {
        "state": {name_of[i]: st for i, st in sd["state"].items()},
        "param_groups": [
            {**g, "params": [name_of[i] for i in g["params"]]} for g in sd["param_groups"]
        ],
    }
    try:
        dcp.set_optimizer_state_dict(
            model, optimizer, by_name, options=dcp.StateDictOptions(full_state_dict=True)
        )
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ckpt.CheckpointError(
            f"{d / ckpt.STATE_FILE}: the optimizer state does not load: {e}"
        ) from None


def load_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    directory: str | Path,
    optimizer_meta: dict[str, Any] | None,
    device: torch.device,
) -> None:
    """Restore weights and optimizer state from a checkpoint directory, sharded or not
    (:func:`load_sharded` or :func:`qkv.training.checkpoint.load_weights` and
    :func:`~qkv.training.checkpoint.load_optimizer`).

    Raises:
        qkv.training.checkpoint.CheckpointError: see those functions.
    """
    if is_sharded(model):
        load_sharded(model, optimizer, directory, optimizer_meta, device)
        return
    ckpt.load_weights(model, directory)
    ckpt.load_optimizer(optimizer, directory, optimizer_meta, device=device)


def grad_norm_value(norm: Tensor) -> float:
    """``clip_grad_norm_``'s result as a float (a replicated ``DTensor`` under FSDP)."""
    full = getattr(norm, "full_tensor", None)
    return float(full() if full is not None else norm)


def world_note(model: nn.Module, info: DistInfo) -> str:
    """How the model is spread, for the run header."""
    if not info.enabled:
        return "1 process"
    how = "FSDP (sharded per block)" if is_sharded(model) else "DDP"
    return f"{info.world_size} processes, {how}"


__all__ = [
    "BLOCK_TYPES",
    "StateSnapshot",
    "blocks",
    "check_config",
    "checkpoint_blocks",
    "compile_loss",
    "full_parameters",
    "gather_for_save",
    "grad_norm_value",
    "is_sharded",
    "load_checkpoint",
    "load_sharded",
    "no_sync",
    "shard",
    "uses_bf16",
    "world_note",
    "wrap",
]
