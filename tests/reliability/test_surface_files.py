"""Files a run writes and model directories it reads: the ``files`` surface.

Each case is a real attack or accident that once lost data or read outside the directory it
was given: a symbolic link planted where a run writes (``run.lock``, ``metrics.jsonl``), a
Hugging Face index naming a shard outside its directory, and a crash in the middle of
``save_pretrained``. The CLI cases assert exit 2 with one ``qkv: error:`` line naming the
file, and that the planted target is untouched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure
from safetensors.torch import save_file

import qkv
from qkv.cli import main
from qkv.data import CharTokenizer, Tokenizer
from qkv.data.outfiles import write_output_file
from qkv.interop import HFFileError, load_hf_tokenizer, read_hf_weights
from qkv.interop._checkpoint import write_hf_dir
from qkv.interp.plots import save_figure
from qkv.models._pretrained import PENDING_DIR
from qkv.training._atomic import UnsafeRunFileError, append_run_file, open_run_file
from qkv.training.runlock import RunLock

TINY = [
    "--task", "copy", "--n-train", "64", "--max-len", "4", "--steps", "1", "--batch-size", "8",
    "--model", "d_model=16", "--model", "n_heads=2", "--model", "d_ff=32",
    "--model", "n_encoder_layers=1", "--model", "n_decoder_layers=1",
    "--eval-limit", "4", "--no-progress",
]  # fmt: skip


def _one_error(capsys: pytest.CaptureFixture[str], rc: int, fragment: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("qkv: error: "), err
    assert "Traceback" not in err
    assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# -- run files: never written through a link -----------------------------------------------
def _plant(run: Path, name: str, victim: Path, how: str) -> None:
    run.mkdir(exist_ok=True)
    if how == "symlink":
        os.symlink(victim, run / name)
    elif how == "hardlink":
        os.link(victim, run / name)
    elif how == "directory":
        (run / name).mkdir()
    elif how == "fifo":
        os.mkfifo(run / name)
    elif how == "user file":
        (run / name).write_text("my notes, not a lock\n")


RUN_FILE_CASES = [
    # (run file, how it is planted, a fragment of the one line)
    ("run.lock", "symlink", "symbolic link"),
    ("run.lock", "hardlink", "hard link"),
    ("run.lock", "directory", "directory"),
    ("run.lock", "fifo", "not a regular file"),
    ("run.lock", "user file", "not a qkv lock file"),
    ("metrics.jsonl", "symlink", "symbolic link"),
    ("metrics.jsonl", "hardlink", "hard link"),
]


@pytest.mark.parametrize(("name", "how", "fragment"), RUN_FILE_CASES)
def test_run_files_are_never_written_through_a_link(tmp_path, name, how, fragment):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")
    run = tmp_path / "run"
    _plant(run, name, victim, how)
    if name == "run.lock":
        with pytest.raises(UnsafeRunFileError, match=fragment):
            RunLock(run).acquire()
    else:
        with pytest.raises(UnsafeRunFileError, match=fragment):
            append_run_file(run / name, "{}\n")
    assert victim.read_text() == "precious data\n"
    if how == "user file":
        assert (run / name).read_text() == "my notes, not a lock\n"


def test_train_into_a_run_dir_with_a_symlinked_lock_exits_2_and_keeps_the_target(tmp_path, capsys):
    victim = tmp_path / "v"
    victim.write_text("data\n")
    run = tmp_path / "r"
    _plant(run, "run.lock", victim, "symlink")
    rc = main(["train", *TINY, "--out", str(run)])
    line = _one_error(capsys, rc, "run.lock")
    assert "symbolic link" in line
    assert victim.read_text() == "data\n"


def test_train_with_a_symlinked_metrics_file_exits_2_and_keeps_the_target(tmp_path, capsys):
    victim = tmp_path / "v"
    victim.write_text("data\n")
    run = tmp_path / "r"
    _plant(run, "metrics.jsonl", victim, "symlink")
    rc = main(["train", *TINY, "--out", str(run)])
    _one_error(capsys, rc, "metrics.jsonl")
    assert victim.read_text() == "data\n"


def test_a_run_file_of_its_own_is_created_appended_and_locked(tmp_path):
    p = tmp_path / "m.jsonl"
    append_run_file(p, "a\n")
    append_run_file(p, "b\n")
    assert p.read_text() == "a\nb\n"
    fd = open_run_file(p, os.O_RDWR)
    os.close(fd)
    with RunLock(tmp_path):
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()


# -- Hugging Face directories: only files inside DIR are read ------------------------------
def _weights(path: Path) -> None:
    save_file({"w": torch.ones(2)}, str(path))


def _hf_dir(tmp_path: Path, shard: object, *, kind: str = "safetensors") -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10}))
    index = (
        "model.safetensors.index.json"
        if kind == "safetensors"
        else ("pytorch_model.bin.index.json")
    )
    (d / index).write_text(json.dumps({"weight_map": {"w": shard}}))
    return d


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    _weights(out / "x.safetensors")
    return out / "x.safetensors"


HF_CASES = [
    # (name, how the shard is named, a fragment of the error)
    ("../ in the shard name", lambda t, d: "../outside/x.safetensors", "outside the model"),
    ("an absolute shard path", lambda t, d: str(_outside(t)), "outside the model"),
    ("a link out of the directory", "link", "a link to"),
    ("a shard that is not a string", lambda t, d: 7, "not a file name"),
    ("an empty shard name", lambda t, d: "", "not a file name"),
    ("a missing shard", lambda t, d: "nope.safetensors", "not a file in"),
]


@pytest.mark.parametrize(("case", "shard", "fragment"), HF_CASES, ids=[c[0] for c in HF_CASES])
@pytest.mark.parametrize("kind", ["safetensors", "pickle"])
def test_hf_index_cannot_name_a_file_outside_the_directory(tmp_path, case, shard, fragment, kind):
    if shard == "link":
        outside = _outside(tmp_path)
        d = _hf_dir(tmp_path, "x.safetensors", kind=kind)
        os.symlink(outside, d / "x.safetensors")
    else:
        if case == "../ in the shard name":
            _outside(tmp_path)
        d = _hf_dir(tmp_path, shard(tmp_path, None), kind=kind)
    error = FileNotFoundError if case == "a missing shard" else HFFileError
    with pytest.raises(error, match=fragment):
        read_hf_weights(d)


def test_hf_weights_file_linking_outside_is_refused_inside_is_read(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    _weights(d / "real.safetensors")
    os.symlink("real.safetensors", d / "model.safetensors")  # inside: fine
    assert torch.equal(read_hf_weights(d)["w"], torch.ones(2))
    os.unlink(d / "model.safetensors")
    os.symlink(_outside(tmp_path), d / "model.safetensors")
    with pytest.raises(HFFileError, match="outside the model directory"):
        read_hf_weights(d)


def test_hub_cache_snapshot_links_into_blobs_are_read(tmp_path):
    repo = tmp_path / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    _weights(repo / "blobs" / "f00d")
    os.symlink("../../blobs/f00d", snap / "model.safetensors")
    assert torch.equal(read_hf_weights(snap)["w"], torch.ones(2))


def test_cli_hf_index_naming_a_shard_outside_exits_2(tmp_path, capsys):
    _outside(tmp_path)
    d = _hf_dir(tmp_path, "../outside/x.safetensors")
    rc = main(["generate", "--hf", str(d), "a"])
    _one_error(capsys, rc, "../outside/x.safetensors")


# -- save_pretrained: the old model or the new one, never a mix -----------------------------
def _model(seed: int, **kw: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return qkv.from_preset("gpt2-tiny", vocab_size=11, **kw)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return (
        a.config == b.config
        and sa.keys() == sb.keys()
        and all(torch.equal(sa[k], sb[k]) for k in sa)
    )


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4, 5])
def test_save_pretrained_crash_leaves_the_old_or_the_new_model(tmp_path, monkeypatch, crash_at):
    """Every rename of the save is a possible crash point: the k-th one raises, and a
    later ``qkv.load`` must give exactly the old model or exactly the new one."""
    d = tmp_path / "m"
    old = _model(0)
    old.save_pretrained(d, tokenizer=CharTokenizer("abc"))
    new = _model(1, n_heads=4, activation="relu")
    assert new.config != old.config
    calls = {"n": 0}
    real_replace, real_rename = os.replace, os.rename

    def counting(real):
        def fn(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise OSError("simulated crash")
            return real(*args, **kwargs)

        return fn

    monkeypatch.setattr(os, "replace", counting(real_replace))
    monkeypatch.setattr(os, "rename", counting(real_rename))
    crashed = True
    try:
        new.save_pretrained(d, tokenizer=CharTokenizer("xyz"))
        crashed = False
    except (OSError, ValueError):  # after the commit point the error names the pending save
        pass
    monkeypatch.undo()
    got = qkv.load(d)
    assert _same(got, old) or _same(got, new), crash_at
    tok = Tokenizer.load(d)  # read after qkv.load, which finishes an interrupted save
    assert (tok.vocab == CharTokenizer("xyz").vocab) == _same(got, new)
    assert not (d / PENDING_DIR).exists()
    if not crashed:
        assert _same(got, new)


@pytest.mark.parametrize("crash_at", [3, 4, 5])
def test_tokenizer_load_alone_finishes_an_interrupted_save(tmp_path, monkeypatch, crash_at):
    """A save interrupted after its commit point (rename 1 writes the staged tokenizer, 2
    commits, 3-5 move the three files into place),
    read by ``Tokenizer.load`` first: it finishes the move as the model's readers do, so
    the tokenizer read is the new one, the one saved with the weights read next."""
    d = tmp_path / "m"
    _model(0).save_pretrained(d, tokenizer=CharTokenizer("abc"))
    new = _model(1, n_heads=4)
    calls = {"n": 0}
    real_replace, real_rename = os.replace, os.rename

    def counting(real):
        def fn(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise OSError("simulated crash")
            return real(*args, **kwargs)

        return fn

    monkeypatch.setattr(os, "replace", counting(real_replace))
    monkeypatch.setattr(os, "rename", counting(real_rename))
    with pytest.raises(ValueError, match="interrupted save"):
        new.save_pretrained(d, tokenizer=CharTokenizer("xyz"))
    monkeypatch.undo()
    assert (d / PENDING_DIR).is_dir()
    assert Tokenizer.load(d).vocab == CharTokenizer("xyz").vocab
    assert not (d / PENDING_DIR).exists()
    assert _same(qkv.load(d), new)


def test_tokenizer_save_leaves_the_old_file_or_the_new_one(tmp_path, monkeypatch):
    """``Tokenizer.save`` writes a hidden sibling and renames it: a crash before the rename
    (in the write, in the rename itself) keeps the old file whole and leaves no sibling; a
    sibling a killed process left is ignored by ``load``."""
    d = tmp_path / "t"
    CharTokenizer("abc").save(d)
    old = (d / "tokenizer.json").read_bytes()
    for target in ("fsync", "replace"):
        real = getattr(os, target)

        def crash(*args, **kwargs):
            raise OSError("simulated crash")

        monkeypatch.setattr(os, target, crash)
        with pytest.raises(OSError, match="simulated crash"):
            CharTokenizer("xyz").save(d)
        monkeypatch.setattr(os, target, real)
        assert (d / "tokenizer.json").read_bytes() == old
        assert sorted(p.name for p in d.iterdir()) == ["tokenizer.json"]
    (d / ".tokenizer.json-999-deadbeef").write_text('{"kind": "char", "vocab": [')  # killed
    assert Tokenizer.load(d).vocab == CharTokenizer("abc").vocab
    CharTokenizer("xyz").save(d)
    assert Tokenizer.load(d).vocab == CharTokenizer("xyz").vocab


def test_hf_tokenizer_must_be_inside_the_directory(tmp_path):
    """The ``tokenizer.json`` of a Hugging Face directory follows the weight shards' rule: a
    link out of the directory is refused, a link inside it is read; a file the
    ``tokenizers`` package cannot read is named (a ValueError: one line in the CLI)."""
    d = tmp_path / "model"
    d.mkdir()
    CharTokenizer("abc").save(tmp_path / "outside")  # any file outside the directory
    os.symlink(tmp_path / "outside" / "tokenizer.json", d / "tokenizer.json")
    with pytest.raises(HFFileError, match="outside the model directory"):
        load_hf_tokenizer(d)
    os.unlink(d / "tokenizer.json")
    (d / "real.json").write_text("not json")
    os.symlink("real.json", d / "tokenizer.json")  # inside: read, and found damaged
    with pytest.raises(HFFileError, match="tokenizer.json is not a tokenizer file"):
        load_hf_tokenizer(d)


def test_cli_train_init_from_hf_with_a_shard_outside_exits_2(tmp_path, capsys):
    _outside(tmp_path)
    d = _hf_dir(tmp_path, "../outside/x.safetensors")
    argv = ["train", "--task", "classify", "--steps", "1", "--init-from-hf", str(d),
            "--out", str(tmp_path / "run")]  # fmt: skip
    rc = main(argv)
    _one_error(capsys, rc, "../outside/x.safetensors")


# -- output files the user points at (reports, figures): never written through a link --------
def test_reports_and_figures_are_never_written_through_a_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "report.html"
    out.write_text("an old report")
    write_output_file(out, b"<html>new</html>")  # a regular file is replaced
    assert out.read_text() == "<html>new</html>"
    link = tmp_path / "link.html"
    os.symlink(victim, link)
    with pytest.raises(UnsafeRunFileError, match="symbolic link"):
        write_output_file(link, b"<html>x</html>")
    png = tmp_path / "png" / "alignment.png"
    png.parent.mkdir()
    os.symlink(victim, png)
    with pytest.raises(UnsafeRunFileError, match="symbolic link"):
        save_figure(Figure(), png)
    assert victim.read_text() == "precious\n"


def test_cli_viz_report_through_a_planted_link_exits_2(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    victim = tmp_path / "v"
    victim.write_text("data\n")
    os.symlink(victim, tmp_path / "r.html")
    capsys.readouterr()
    rc = main(["viz", "--checkpoint", str(run), "a b", "--out", str(tmp_path / "r.html")])
    _one_error(capsys, rc, "r.html")
    assert victim.read_text() == "data\n"


def test_hf_export_replaces_planted_links_instead_of_writing_through_them(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    d = tmp_path / "export"
    d.mkdir()
    os.symlink(victim, d / "config.json")
    os.symlink(victim, d / "model.safetensors")
    write_hf_dir(d, {"model_type": "bert"}, {"w": torch.ones(2)})
    assert victim.read_text() == "precious\n"
    assert not (d / "config.json").is_symlink() and json.loads((d / "config.json").read_text())
    assert torch.equal(read_hf_weights(d)["w"], torch.ones(2))
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []
