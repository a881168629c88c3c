"""Attention on images for Swin and DETR: window weights put back on the grid equal the
dense masked reference's weights, and ``qkv viz`` writes the figures (PNG and in the HTML)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import qkv.models as M
from qkv.attn.functional import attention_weights, make_problem
from qkv.cli import main
from qkv.interp import record_attention
from qkv.interp.images import windows_to_grid
from qkv.tasks import TaskOptions, get_task
from qkv.tasks.viz_vision import report_for_detection, report_for_swin, swin_grid_record

pytest.importorskip("matplotlib")


@pytest.mark.parametrize(("image_size", "window"), [(32, 4), (28, 4)])  # 16x16, 14x14 (padded)
def test_windows_to_grid_equals_the_dense_reference(image_size: int, window: int) -> None:
    model = M.from_preset("swin-tiny", image_size=image_size, window_size=window).eval()
    x = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad(), record_attention(model, layers=["layers.1.self_attn"]) as rec:
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
    with torch.no_grad(), record_attention(model) as rec:
        model(task.read_image("test:0")[None])
    grid = swin_grid_record(model, rec)
    assert list(grid) == ["layers.0.self_attn", "layers.1.self_attn"]
    w = grid["layers.1.self_attn"].weights  # (1, h, 64, 64): every row sums to 1
    assert w.shape == (1, model.config.n_heads, 64, 64)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, model.config.n_heads, 64))


def test_detr_report_shows_each_query_with_its_box(tmp_path) -> None:
    pytest.importorskip("sklearn")
    task = get_task(
        "detect", TaskOptions(extra={"items": "digits"}, n_train=4, n_valid=4, n_test=4)
    )
    cfg = task.model_config(d_model=32, n_heads=4, d_ff=64, n_encoder_layers=1, n_decoder_layers=2)
    model = M.build(cfg).eval()
    path = report_for_detection(
        model, task, "test:1", tmp_path / "detr.html", png_dir=tmp_path / "png"
    )
    html = path.read_text(encoding="utf-8")
    assert "each object query" in html and "data:image/png;base64," in html
    assert "q9" in html and "r3c3" in html  # 10 queries; a 4x4 feature map
    assert (tmp_path / "png" / "attention_on_image.png").stat().st_size > 1000


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
