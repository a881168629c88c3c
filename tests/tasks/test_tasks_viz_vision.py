"""Attention on images for Swin and DETR: window weights put back on the grid equal the
dense masked reference's weights, and ``qkv viz`` writes the figures (PNG and in the HTML)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import qkv.models as M
from _browser import Page
from qkv.attn.functional import attention_weights, make_problem
from qkv.cli import main
from qkv.interp import record_attention
from qkv.interp.images import windows_to_grid
from qkv.tasks import TaskOptions, get_task
from qkv.tasks.vision.viz import report_for_detection, report_for_swin, swin_grid_record
from qkv.tasks.viz import report_for_task

pytest.importorskip("matplotlib")


def _data(html: str) -> dict:
    m = re.search(r'<script id="qkv-data" type="application/json">(.*?)</script>', html, re.S)
    assert m is not None
    return json.loads(m.group(1))


def _detr_report(tmp_path: Path, png_dir: Path | None = None) -> Path:
    pytest.importorskip("sklearn")
    task = get_task(
        "detect", TaskOptions(extra={"items": "digits"}, n_train=4, n_valid=4, n_test=4)
    )
    cfg = task.model_config(  # 3 stages: a 4x4 map of the 32x32 canvas
        d_model=32, n_heads=4, d_ff=64, n_encoder_layers=1, n_decoder_layers=2,
        backbone_channels=[8, 16, 32],
    )  # fmt: skip
    model = M.build(cfg).eval()
    return report_for_detection(model, task, "test:1", tmp_path / "detr.html", png_dir=png_dir)


def test_vit_report_has_the_image_panel_after_the_class_token(tmp_path) -> None:
    task = get_task("digits")
    model = M.build(task.model_config()).eval()
    assert isinstance(model, M.ViT)
    html = report_for_task(model, task, "test:0", tmp_path / "vit.html").read_text("utf-8")
    data = _data(html)
    side = model.config.image_size // model.config.patch_size
    panel = data["image"]
    assert (panel["rows"], panel["cols"]) == (side, side)
    assert panel["patches"] == list(range(1, 1 + side * side))  # token 0 is [CLS]
    assert data["tokens"]["input"][panel["patches"][-1]] == f"r{side - 1}c{side - 1}"
    assert (panel["width"], panel["height"]) == (task.image_size, task.image_size)


@pytest.mark.parametrize(("image_size", "window"), [(32, 4), (28, 4)])  # 16x16, 14x14 (padded)
def test_windows_to_grid_equals_the_dense_reference(image_size: int, window: int) -> None:
    model = M.from_preset("swin-tiny", image_size=image_size, window_size=window).eval()
    x = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad(), record_attention(model, layers=["layers.1.self_attn"], dtype=None) as rec:
        model(x)
    block = model.layers[1]
    grid = model.stage_of_layers()[1][1]
    assert block.shift == window // 2
    got = windows_to_grid(
        rec["layers.1.self_attn"].weights, grid, block.window, block.shift, batch=1
    )
    # the reference: global attention over the padded grid with the ShiftedWindow mask
    with torch.no_grad():
        h = model.embed_norm(model.patch_embed(x))
        h = model.layers[0](h, grid)
        t = block.self_attn_norm(h)[1:2]
        hp, wp = block.padded(grid)
        t = F.pad(t.view(1, *grid, -1), (0, 0, 0, wp - grid[1], 0, hp - grid[0])).reshape(
            1, hp * wp, -1
        )
        a = block.self_attn
        q, k, _ = a._project_self(t)
        bias = block.pos_bias.grid(hp, wp)
        mask = block.mask(grid).to_dense(hp * wp, hp * wp)
        p = make_problem(q, k, k, bias.masked_fill(~mask, float("-inf")), return_weights=True)
        ref = attention_weights(p)[0]  # (h, n_p, n_p)
        keep = ((torch.arange(hp)[:, None] < grid[0]) & (torch.arange(wp)[None] < grid[1])).reshape(
            -1
        )
        ref = ref[:, keep][:, :, keep]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_swin_report_and_grid_record(tmp_path) -> None:
    task = get_task("digits")
    model = M.build(task.model_config("swin")).eval()
    path = report_for_swin(model, task, "test:0", tmp_path / "swin.html")
    html = path.read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "where the centre patch attends" in html
    assert "r7c7" in html  # the stage-0 grid is 8x8 patches
    panel = _data(html)["image"]  # the image panel over the same grid, every cell a patch
    assert (panel["rows"], panel["cols"], panel["patches"]) == (8, 8, list(range(64)))
    with torch.no_grad(), record_attention(model, dtype=None) as rec:
        model(task.read_image("test:0")[None])
    grid = swin_grid_record(model, rec)
    assert list(grid) == ["layers.0.self_attn", "layers.1.self_attn"]
    w = grid["layers.1.self_attn"].weights  # (1, h, 64, 64): every row sums to 1
    assert w.shape == (1, model.config.n_heads, 64, 64)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, model.config.n_heads, 64))


# 13 s: trains a DETR first
@pytest.mark.slow
def test_detr_report_shows_each_query_with_its_box(tmp_path) -> None:
    html = _detr_report(tmp_path, tmp_path / "png").read_text(encoding="utf-8")
    assert "each object query" in html and "data:image/png;base64," in html
    assert "q9" in html and "r3c3" in html  # 10 queries; a 4x4 feature map
    assert (tmp_path / "png" / "attention_on_image.png").stat().st_size > 1000
    panel = _data(html)["image"]  # the image panel: the feature-map cells are the patches
    assert (panel["rows"], panel["cols"], panel["patches"]) == (4, 4, list(range(16)))


def test_detr_image_panel_in_chromium_encoder_cells_and_object_queries(browser, tmp_path):
    p = Page(browser, _detr_report(tmp_path))
    try:
        pg = p.page
        pg.wait_for_selector("body[data-image='1']", timeout=20_000)
        shot = "() => document.getElementById('imgview').toDataURL()"
        plain = pg.evaluate(shot)
        pg.locator("#imgview").scroll_into_view_if_needed()  # below the figure
        box = pg.locator("#imgview").bounding_box()
        assert box is not None
        pg.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1)
        assert pg.get_attribute("#imgview", "data-query") == "0"  # encoder: cell r0c0
        cell0 = pg.evaluate(shot)
        pg.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.9)
        assert pg.get_attribute("#imgview", "data-query") == "15"
        assert len({plain, cell0, pg.evaluate(shot)}) == 3
        # cross-attention: the object queries are picked from a list, the cells are keys
        kinds = pg.eval_on_selector_all("#kind option", "os => os.map(o => o.textContent)")
        pg.select_option("#kind", str(next(i for i, k in enumerate(kinds) if "Cross" in k)))
        assert pg.locator("#img-query option").count() == 10
        assert pg.get_attribute("#imgview", "data-query") == "0"
        q0 = pg.evaluate(shot)
        pg.select_option("#img-query", "7")
        assert pg.get_attribute("#imgview", "data-query") == "7" and pg.evaluate(shot) != q0
        assert "q7" in pg.inner_text("#img-tip")
        # decoder self-attention has no image keys: the panel says so
        pg.select_option("#kind", str(next(i for i, k in enumerate(kinds) if "Decoder" in k)))
        assert "not image patches" in pg.inner_text("#img-tip")
        assert pg.get_attribute("#imgview", "data-query") == ""
        assert p.problems == []
    finally:
        p.close()


@pytest.mark.slow
def test_viz_a_trained_swin_from_the_command_line_with_pngs(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "--task", "digits", "--preset", "swin", "--steps", "2", "--batch-size", "8",
            "--no-progress", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    html = tmp_path / "swin.html"
    argv = [
        "viz",
        "--checkpoint",
        str(run),
        "test:0",
        "--out",
        str(html),
        "--png",
        str(tmp_path / "png"),
    ]
    assert main(argv) == 0
    assert "where the centre patch attends" in html.read_text(encoding="utf-8")
    assert (tmp_path / "png" / "attention_on_image.png").stat().st_size > 1000
