"""Heatmaps: PNG and SVG files are written and decode as images."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import matplotlib.image as mpimg
import pytest
import torch

from qkv.interp import plot_grid, plot_head, record_attention, save_figure
from qkv.interp.plots import write_figures


@pytest.fixture(scope="module")
def record(tiny):
    model = tiny.seq2seq()
    with torch.no_grad(), record_attention(model, layers=[0], heads=[0, 1]) as rec:
        model(torch.randint(4, 50, (1, 6)), torch.randint(4, 50, (1, 4)))
    return rec


def test_plot_head_png_with_token_labels(tmp_path, record):
    e = record["decoder.layers.0.cross_attn"]
    fig = plot_head(
        e,
        1,
        query_tokens=["<bos>", "a", "b", "c"],
        key_tokens=list("uvwxyz"),
        path=tmp_path / "h.png",
    )
    img = mpimg.imread(tmp_path / "h.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list("uvwxyz")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["<bos>", "a", "b", "c"]
    # a bare (s_q, s_k) tensor works too, and SVG is valid XML
    plot_head(e.weights[0, 0], path=tmp_path / "h.svg")
    assert ET.parse(tmp_path / "h.svg").getroot().tag.endswith("svg")


def test_plot_grid_and_write_figures(tmp_path, record):
    fig = plot_grid(record, "encoder_self", path=tmp_path / "grid.png")
    assert len([a for a in fig.axes if a.has_data()]) == 2  # 1 layer x 2 heads
    assert mpimg.imread(tmp_path / "grid.png").shape[-1] in (3, 4)
    paths = write_figures(
        record, tmp_path / "figs", tokens=list("uvwxyz"), target_tokens=["<bos>", "a", "b", "c"]
    )
    names = sorted(p.name for p in paths)
    assert "cross_grid.png" in names and "decoder_self_layer0_head1.png" in names
    assert len(names) == 3 * (1 + 2)
    for p in paths:
        assert mpimg.imread(p).ndim == 3


def test_plot_errors(tmp_path, record):
    e = record["encoder.layers.0.self_attn"]
    with pytest.raises(ValueError, match=r"head \(3\) was not recorded"):
        plot_head(e, 3)
    with pytest.raises(ValueError, match="key_tokens has 2 tokens but the weights have 6 keys"):
        plot_head(e, 0, key_tokens=["a", "b"])
    with pytest.raises(ValueError, match=r"must end in one of \['.png', '.svg'\]"):
        save_figure(plot_head(e, 0), tmp_path / "x.jpg")
