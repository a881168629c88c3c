"""Every damaged file gives one exception of a known class whose message names the file.

A table: each row damages one file of an otherwise good checkpoint (or run directory, or
Hugging Face model directory), loads it the way a user would, and checks the exact class of
the exception and that its message names the damaged file. Never a raw ``SafetensorError``,
``KeyError``, ``TypeError``, ``RecursionError`` or ``UnicodeDecodeError``.

Classes: :class:`CheckpointError` for what the trainer writes (weights, optimizer, trainer
state, model config, ``latest``), :class:`TaskError` for what the task writes (``task.json``
and tokenizers, whose :class:`TokenizerFileError` the task wraps), :class:`HFFileError` for a
Hugging Face directory.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from qkv.data import Tokenizer, TokenizerFileError
from qkv.interop import HFFileError, from_hf
from qkv.tasks import TaskError, TaskOptions, build_trainer, get_task, load_trained
from qkv.training import CheckpointError, TrainConfig, check_checkpoint, rundir

TINY = {"d_model": 32, "n_heads": 2, "d_ff": 64, "n_encoder_layers": 1, "n_decoder_layers": 1}
NESTED = b"[" * 100_000 + b"]" * 100_000  # json.loads raises RecursionError on it
NOT_UTF8 = b'{"a": "\xff\xfe"}'


def _noise(n: int) -> bytes:
    return random.Random(n).randbytes(n)


def _cfg() -> TrainConfig:
    return TrainConfig(steps=1, batch_size=8, lr=1e-3, schedule="constant", warmup=0,
                       progress=False, eval_limit=4)  # fmt: skip


# -- damage --------------------------------------------------------------------------------
Damage = Callable[[Path], None]


def raw(data: bytes) -> Damage:
    return lambda p: p.write_bytes(data)


def truncate(fraction: float) -> Damage:
    return lambda p: p.write_bytes(p.read_bytes()[: int(len(p.read_bytes()) * fraction)])


def edit_json(fn: Callable[[Any], None]) -> Damage:
    """Parse, change in place with ``fn``, write back."""

    def damage(p: Path) -> None:
        obj = json.loads(p.read_text())
        fn(obj)
        p.write_text(json.dumps(obj))

    return damage


def set_key(key: str, value: Any) -> Damage:
    return edit_json(lambda o: o.__setitem__(key, value))


def del_key(key: str) -> Damage:
    return edit_json(lambda o: o.__delitem__(key))


def unlink(p: Path) -> None:
    p.unlink()


def header(fn: Callable[[dict[str, Any]], None]) -> Damage:
    """Rewrite a safetensors header (the data stays as it was)."""

    def damage(p: Path) -> None:
        b = p.read_bytes()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8 : 8 + n])
        fn(h)
        hb = json.dumps(h).encode()
        p.write_bytes(struct.pack("<Q", len(hb)) + hb + b[8 + n :])

    return damage


def _first(h: dict[str, Any], ndim: int | None = None, dtype: str = "F32") -> dict[str, Any]:
    return next(
        v
        for k, v in sorted(h.items())
        if k != "__metadata__" and v["dtype"] == dtype and (ndim is None or len(v["shape"]) == ndim)
    )


def offsets_past_end(h: dict[str, Any]) -> None:
    e = _first(h)
    e["data_offsets"] = [e["data_offsets"][0], e["data_offsets"][1] + 10_000]


def dtype_lie(h: dict[str, Any]) -> None:
    _first(h)["dtype"] = "F64"


def shape_lie(h: dict[str, Any]) -> None:
    e = _first(h, ndim=2)
    e["shape"] = [e["shape"][0] + 1, e["shape"][1]]


def transpose(h: dict[str, Any]) -> None:
    """A lie safetensors cannot see: the byte count fits, the shape does not."""
    e = next(v for k, v in sorted(h.items())
             if k != "__metadata__" and len(v["shape"]) == 2 and v["shape"][0] != v["shape"][1])  # fmt: skip
    e["shape"] = e["shape"][::-1]


def drop_tensor(suffix: str) -> Damage:
    def damage(p: Path) -> None:
        t = load_file(str(p))
        save_file({k: v for k, v in t.items() if not k.endswith(suffix)}, str(p))

    return damage


def add_tensor(name: str) -> Damage:
    def damage(p: Path) -> None:
        t = load_file(str(p))
        save_file({**t, name: torch.zeros(3)}, str(p))

    return damage


def rng_torch(value: Any) -> Damage:
    return edit_json(lambda o: o["rng"].__setitem__("torch", value))


def rng_cuda(value: Any) -> Damage:
    return edit_json(lambda o: o["rng"].__setitem__("cuda", value))


def option(key: str, value: Any) -> Damage:
    return edit_json(lambda o: o["options"].__setitem__(key, value))


def groups_resized(o: dict[str, Any]) -> None:
    o["optimizer"]["param_groups"][0]["params"].pop()


def groups_object(o: dict[str, Any]) -> None:
    o["optimizer"]["param_groups"] = {}


def vocab(value: Any) -> Damage:
    return set_key("vocab", value)


SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def as_pickle(damage: Damage) -> Damage:
    """Replace the HF directory's model.safetensors by a ``pytorch_model.bin``, then damage it."""

    def both(p: Path) -> None:
        torch.save(load_file(str(p.parent / "model.safetensors")), p)
        (p.parent / "model.safetensors").unlink()
        damage(p)

    return both


class _Payload:
    def __reduce__(self) -> Any:
        return (os.system, ("echo pickled code ran",))


def code_pickle(p: Path) -> None:
    torch.save({"x": _Payload()}, p)


def list_pickle(p: Path) -> None:
    torch.save([torch.ones(1)], p)


# -- the table -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    where: str  # "ckpt" (inside the checkpoint), "run" (the run directory), "hf"
    file: str
    damage: Damage
    load: str  # "load" (load_trained), "resume" (build_trainer(resume=True)), "tokenizer", "hf"
    exc: type[Exception]
    match: str = ""


M, OPT, ST, CFG, TOK, TASK = (
    "model.safetensors",
    "optimizer.safetensors",
    "trainer_state.json",
    "config.json",
    "tokenizer.json",
    "task.json",
)
CE, TE, HE = CheckpointError, TaskError, HFFileError
BIN = "pytorch_model.bin"
# fmt: off
CASES = [
    # model weights
    Case("model-empty", "ckpt", M, raw(b""), "load", CE, "not a readable safetensors"),
    Case("model-truncated", "ckpt", M, truncate(0.6), "load", CE, "not a readable"),
    Case("model-header-only", "ckpt", M, truncate(0.02), "load", CE),
    Case("model-random", "ckpt", M, raw(_noise(4096)), "load", CE),
    Case("model-offsets-past-end", "ckpt", M, header(offsets_past_end), "load", CE),
    Case("model-dtype-lie", "ckpt", M, header(dtype_lie), "load", CE),
    Case("model-shape-lie", "ckpt", M, header(shape_lie), "load", CE),
    Case("model-transposed", "ckpt", M, header(transpose), "load", CE, "shape mismatch"),
    Case("model-huge-header", "ckpt", M, raw(struct.pack("<Q", 2**60) + b"{}"), "load", CE),
    Case("model-missing-tensor", "ckpt", M, drop_tensor("fc1.bias"), "load", CE, "does not fit"),
    Case("model-missing", "ckpt", M, unlink, "load", CE, "missing model.safetensors"),
    # optimizer state
    Case("optim-empty", "ckpt", OPT, raw(b""), "resume", CE),
    Case("optim-truncated", "ckpt", OPT, truncate(0.5), "resume", CE),
    Case("optim-random", "ckpt", OPT, raw(_noise(1000)), "resume", CE),
    Case("optim-shape-lie", "ckpt", OPT, header(shape_lie), "resume", CE),
    Case("optim-transposed", "ckpt", OPT, header(transpose), "resume", CE, "has shape"),
    Case("optim-missing-moment", "ckpt", OPT, drop_tensor("state.0.exp_avg"), "resume", CE,
         "incomplete optimizer state"),
    Case("optim-unknown-entry", "ckpt", OPT, add_tensor("momentum"), "resume", CE, "unexpected"),
    Case("optim-unknown-param", "ckpt", OPT, add_tensor("state.9999.exp_avg"), "resume", CE),
    Case("optim-missing", "ckpt", OPT, unlink, "resume", CE, "is missing"),
    # trainer state
    Case("state-list", "ckpt", ST, raw(b"[1, 2]"), "resume", CE, "JSON object, got list"),
    Case("state-null", "ckpt", ST, raw(b"null"), "resume", CE, "got NoneType"),
    Case("state-nested", "ckpt", ST, raw(NESTED), "resume", CE, "nested too deeply"),
    Case("state-not-json", "ckpt", ST, raw(b'{"step": 1,'), "resume", CE, "not valid JSON"),
    Case("state-not-utf8", "ckpt", ST, raw(NOT_UTF8), "resume", CE, "not UTF-8"),
    Case("state-empty", "ckpt", ST, raw(b""), "resume", CE),
    Case("state-no-step", "ckpt", ST, del_key("step"), "resume", CE, "lacks 'step'"),
    Case("state-no-rng", "ckpt", ST, del_key("rng"), "resume", CE, "lacks 'rng'"),
    Case("state-no-optimizer", "ckpt", ST, del_key("optimizer"), "resume", CE, "no 'optimizer'"),
    Case("state-step-str", "ckpt", ST, set_key("step", "50"), "resume", CE, "'step' must be"),
    Case("state-step-negative", "ckpt", ST, set_key("step", -1), "resume", CE, "'step' must be"),
    Case("state-step-bool", "ckpt", ST, set_key("step", True), "resume", CE, "'step' must be"),
    Case("state-epoch-float", "ckpt", ST, set_key("epoch", 1.5), "resume", CE, "'epoch'"),
    Case("state-best-str", "ckpt", ST, set_key("best", "high"), "resume", CE, "'best'"),
    Case("state-rng-str", "ckpt", ST, set_key("rng", "seed"), "resume", CE, "'rng'"),
    Case("state-rng-not-bytes", "ckpt", ST, rng_torch([300] * 5056), "resume", CE, "rng.torch"),
    Case("state-rng-floats", "ckpt", ST, rng_torch([1.0] * 5056), "resume", CE, "rng.torch"),
    Case("state-rng-short", "ckpt", ST, rng_torch([1, 2, 3]), "resume", CE, "rng.torch"),
    Case("state-rng-cuda", "ckpt", ST, rng_cuda([[-1]]), "resume", CE, "rng.cuda"),
    Case("state-groups-resized", "ckpt", ST, edit_json(groups_resized), "resume", CE, "groups"),
    Case("state-groups-not-list", "ckpt", ST, edit_json(groups_object), "resume", CE, "groups"),
    # model config
    Case("config-list", "ckpt", CFG, raw(b"[]"), "load", CE, "JSON object, got list"),
    Case("config-null", "ckpt", CFG, raw(b"null"), "load", CE),
    Case("config-no-family", "ckpt", CFG, del_key("family"), "load", CE, "family must be one of"),
    Case("config-unknown-family", "ckpt", CFG, set_key("family", "gpt9"), "load", CE, "'gpt9'"),
    Case("config-bad-value", "ckpt", CFG, set_key("n_heads", 0), "load", CE, "n_heads must be"),
    Case("config-bad-type", "ckpt", CFG, set_key("d_model", "wide"), "load", CE, "d_model must"),
    Case("config-unknown-field", "ckpt", CFG, set_key("colour", 1), "load", CE, "unknown"),
    Case("config-nested", "ckpt", CFG, raw(NESTED), "load", CE, "nested too deeply"),
    Case("config-not-utf8", "ckpt", CFG, raw(NOT_UTF8), "load", CE, "not UTF-8"),
    Case("config-for-resume", "ckpt", CFG, set_key("family", 7), "resume", CE),
    # tokenizer (the task wraps the tokenizer's own TokenizerFileError)
    Case("tok-vocab-ints", "ckpt", TOK, vocab([0, 1, 2, 3]), "load", TE, "list of strings"),
    Case("tok-vocab-no-specials", "ckpt", TOK, vocab(["a", "b"]), "load", TE, "start with"),
    Case("tok-vocab-duplicates", "ckpt", TOK, vocab([*SPECIALS, "a", "a"]), "load", TE, "twice"),
    Case("tok-vocab-null", "ckpt", TOK, vocab(None), "load", TE),
    Case("tok-kind-unknown", "ckpt", TOK, set_key("kind", "morse"), "load", TE, "'morse'"),
    Case("tok-kind-list", "ckpt", TOK, set_key("kind", []), "load", TE, "unknown"),
    Case("tok-not-json", "ckpt", TOK, raw(b"{"), "load", TE, "not valid JSON"),
    Case("tok-nested", "ckpt", TOK, raw(NESTED), "load", TE, "nested too deeply"),
    Case("tok-not-utf8", "ckpt", TOK, raw(NOT_UTF8), "load", TE, "not UTF-8"),
    Case("tok-for-resume", "ckpt", TOK, vocab([1]), "resume", TE),
    Case("tok-direct-ints", "ckpt", TOK, vocab([0, 1]), "tokenizer", TokenizerFileError),
    Case("tok-direct-list", "ckpt", TOK, raw(b"[]"), "tokenizer", TokenizerFileError),
    Case("tok-direct-nested", "ckpt", TOK, raw(NESTED), "tokenizer", TokenizerFileError),
    # task.json
    Case("task-max-len-negative", "ckpt", TASK, option("max_len", -1), "load", TE,
         "'max_len' must be int >= 1"),
    Case("task-max-len-str", "ckpt", TASK, option("max_len", "6"), "load", TE, "max_len"),
    Case("task-seed-str", "ckpt", TASK, option("seed", "0"), "load", TE, "'seed'"),
    Case("task-n-train-bool", "ckpt", TASK, option("n_train", True), "load", TE, "n_train"),
    Case("task-extra-list", "ckpt", TASK, option("extra", []), "load", TE, "'extra'"),
    Case("task-unknown-option", "ckpt", TASK, option("colour", 1), "load", TE, "colour"),
    Case("task-options-list", "ckpt", TASK, set_key("options", []), "load", TE),
    Case("task-name-int", "ckpt", TASK, set_key("name", 5), "load", TE, "'name'"),
    Case("task-unknown-name", "ckpt", TASK, set_key("name", "paint"), "load", TE, "paint"),
    Case("task-bad-tokenizer", "ckpt", TASK, option("tokenizer", "bpe"), "load", TE),
    Case("task-state-list", "ckpt", TASK, set_key("state", []), "load", TE, "'state'"),
    Case("task-list", "ckpt", TASK, raw(b"[]"), "load", TE),
    Case("task-nested", "ckpt", TASK, raw(NESTED), "load", TE, "nested too deeply"),
    Case("task-not-utf8", "ckpt", TASK, raw(NOT_UTF8), "load", TE, "not UTF-8"),
    Case("task-for-resume", "ckpt", TASK, option("max_len", -1), "resume", TE),
    # the run directory's latest pointer
    Case("latest-empty", "run", "latest", raw(b""), "load", CE, "must hold the name"),
    Case("latest-traversal", "run", "latest", raw(b"../../etc\n"), "load", CE, "must hold"),
    Case("latest-slash", "run", "latest", raw(b"a/b\n"), "load", CE, "must hold"),
    Case("latest-binary", "run", "latest", raw(b"\xff\x00\xfe"), "load", CE, "cannot be read"),
    Case("latest-huge", "run", "latest", raw(b"x" * 10_000), "load", CE, "must hold"),
    Case("latest-dangling", "run", "latest", raw(b"step-00000099\n"), "load", CE, "not exist"),
    Case("latest-for-resume", "run", "latest", raw(b"..\n"), "resume", CE),
    # Hugging Face directories (--hf)
    Case("hf-pickle-code", "hf", BIN, as_pickle(code_pickle), "hf", HE, "not a weights-only"),
    Case("hf-pickle-random", "hf", BIN, as_pickle(raw(_noise(512))), "hf", HE),
    Case("hf-pickle-truncated", "hf", BIN, as_pickle(truncate(0.5)), "hf", HE, "damaged"),
    Case("hf-pickle-empty", "hf", BIN, as_pickle(raw(b"")), "hf", HE),
    Case("hf-pickle-list", "hf", BIN, as_pickle(list_pickle), "hf", HE, "flat dict of tensors"),
    Case("hf-safetensors-truncated", "hf", M, truncate(0.5), "hf", HE),
    Case("hf-safetensors-lie", "hf", M, header(offsets_past_end), "hf", HE),
    Case("hf-config-list", "hf", CFG, raw(b"[]"), "hf", HE, "JSON object"),
    Case("hf-config-nested", "hf", CFG, raw(NESTED), "hf", HE, "nested too deeply"),
    Case("hf-config-not-utf8", "hf", CFG, raw(NOT_UTF8), "hf", HE, "not UTF-8"),
]
# fmt: on


# -- fixtures and the test -------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("good") / "run"
    task = get_task("copy", TaskOptions(n_train=32, n_valid=8, n_test=8, max_len=4))
    tr = build_trainer(task, _cfg(), run, model_overrides=TINY)
    tr.fit()
    rundir.release_run_dir(tr)
    return run


@pytest.fixture(scope="module")
def good_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    T = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("hf") / "bert"
    cfg = T.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=20, max_position_embeddings=8)  # fmt: skip
    T.BertModel(cfg).save_pretrained(d)
    return d


def _load(how: str, root: Path) -> None:
    if how == "load":
        load_trained(root)
    elif how == "resume":
        tr = build_trainer("copy", _cfg(), root, resume=True)
        rundir.release_run_dir(tr)
    elif how == "tokenizer":
        Tokenizer.load(check_checkpoint(root))
    elif how == "hf":
        from_hf(root)
    else:  # pragma: no cover
        raise AssertionError(how)


def test_the_good_files_load(good_run, good_hf):
    for how in ("load", "resume", "tokenizer"):
        _load(how, good_run)
    _load("hf", good_hf)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_damaged_file_gives_one_named_error(case: Case, tmp_path, request, capfd):
    src = request.getfixturevalue("good_hf" if case.where == "hf" else "good_run")
    root = tmp_path / src.name
    shutil.copytree(src, root, symlinks=True)
    if case.where == "ckpt":
        path = check_checkpoint(root) / case.file
    else:
        path = root / case.file
    case.damage(path)
    with pytest.raises(Exception) as info:
        _load(case.load, root)
    e = info.value
    assert type(e) is case.exc, f"{type(e).__name__}: {e}"
    assert str(path) in str(e), str(e)
    if case.match:
        assert case.match in str(e), str(e)
    assert "pickled code ran" not in capfd.readouterr().out


def test_the_table_covers_every_file_kind():
    files = {(c.where, c.file) for c in CASES}
    for f in (M, OPT, ST, CFG, TOK, TASK):
        assert ("ckpt", f) in files
    assert ("run", "latest") in files and ("hf", BIN) in files
    assert len(CASES) >= 80
