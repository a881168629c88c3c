"""``qkv viz``: a checkpoint and an input in, an HTML report (and PNGs) out."""

from __future__ import annotations

import json
import re

import matplotlib.image as mpimg
import pytest

from qkv.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from qkv.models import build
    from qkv.tasks import TaskOptions, get_task
    from qkv.training import save_checkpoint

    task = get_task("copy", TaskOptions(n_train=32, n_valid=4, n_test=4, max_len=12))
    cfg = task.model_config(
        None, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1
    )
    d = tmp_path_factory.mktemp("run") / "ckpt"
    save_checkpoint(d, build(cfg), cfg.to_dict(), extra_writer=task.save)
    return d


def test_viz_writes_report_and_pngs(checkpoint, tmp_path, capsys):
    out, png = tmp_path / "report.html", tmp_path / "png"
    rc = main(
        ["viz", "--checkpoint", str(checkpoint), "abcab", "--out", str(out), "--png", str(png)]
    )
    assert rc == 0 and f"wrote {out}" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    data = json.loads(re.search(r'type="application/json">(.*?)</script>', text, re.S).group(1))
    assert [v["kind"] for v in data["views"]] == ["encoder_self", "decoder_self", "cross"]
    assert len(data["tokens"]["input"]) == 5  # one character token each
    assert data["tokens"]["target"][0] == "<bos>"
    assert "image" not in data and 'id="imgview"' not in text  # no image panel for text
    names = sorted(p.name for p in png.iterdir())
    assert "encoder_self_grid.png" in names and "cross_layer0_head1.png" in names
    assert mpimg.imread(png / "cross_grid.png").ndim == 3


def test_viz_reports_a_missing_checkpoint(tmp_path, capsys):
    rc = main(
        ["viz", "--checkpoint", str(tmp_path / "nope"), "x", "--out", str(tmp_path / "r.html")]
    )
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
