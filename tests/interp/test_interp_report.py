"""The HTML report: its data and escaping, and the page itself in headless Chromium."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time

import pytest
import torch

from _browser import Page
from qkv.interp import build_report, head_stats, record_attention, write_report
from qkv.interp.report import report_data

XSS = "<img src=x onerror=alert(1)>"
BREAKOUT = "</script><script>alert(2)</script>"
SRC = ["the", "cat", XSS, "sat", BREAKOUT, "mat"]
TGT = ["<bos>", "die", "Katze", "&amp;"]


@pytest.fixture(scope="module")
def record(tiny):
    model = tiny.seq2seq()
    src = torch.randint(4, 50, (1, len(SRC)))
    tgt = torch.randint(4, 50, (1, len(TGT)))
    with torch.no_grad(), record_attention(model) as rec:
        model(src, tgt)
    return rec


def _data(text: str) -> dict:
    m = re.search(r'<script id="qkv-data" type="application/json">(.*?)</script>', text, re.S)
    assert m is not None
    return json.loads(m.group(1))


# ---------------------------------------------------------------------------------------
# the document (no browser)
# ---------------------------------------------------------------------------------------
def test_report_data_round_trips_and_tokens_cannot_break_out(record):
    text = build_report(record, SRC, target_tokens=TGT, title="<b>t</b>")
    assert "<img" not in text and "alert(2)" not in text.split("<script>")[-1]
    assert text.count("</script>") == 2  # only the data element and the script close
    assert "<title>&lt;b&gt;t&lt;/b&gt;</title>" in text
    data = _data(text)
    assert data["tokens"] == {"input": SRC, "target": TGT}
    assert [v["kind"] for v in data["views"]] == ["encoder_self", "decoder_self", "cross"]
    cross = data["views"][2]
    assert (cross["q"], cross["k"], cross["nk"]) == ("target", "input", len(SRC))
    e = record["decoder.layers.1.cross_attn"]
    raw = base64.b64decode(cross["layers"][1]["data"][3])
    got = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(len(TGT), len(SRC))
    w = e.weights[0, 3].float()  # stored in bfloat16, encoded from float32
    assert torch.equal(got, (w.sqrt() * 255).round().to(torch.uint8))
    torch.testing.assert_close((got / 255.0) ** 2, w, atol=0.008, rtol=0)
    assert len(data["stats"]) == len(head_stats(record))
    # the Content Security Policy pins the one script by its hash
    script = text.rsplit("<script>", 1)[1].split("</script>")[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in text and "default-src 'none'" in text


def test_sparse_encoding_keeps_the_strongest_keys(record):
    data = report_data(record, SRC, target_tokens=TGT, max_values=10, top_k=2)
    layer = data["views"][0]["layers"][0]
    assert data["encoding"] == "topk" and layer["k"] == 2
    idx = torch.frombuffer(bytearray(base64.b64decode(layer["data"][0]["idx"])), dtype=torch.int16)
    w = record["encoder.layers.0.self_attn"].weights[0, 0]
    assert torch.equal(idx.view(len(SRC), 2).long(), w.topk(2, dim=-1).indices)


def test_token_lengths_are_checked(record):
    with pytest.raises(
        ValueError,
        match=r"'encoder.layers.0.self_attn' \(encoder_self\) has 6 keys but input tokens number 5",
    ):
        build_report(record, SRC[:5], target_tokens=TGT)
    with pytest.raises(ValueError, match="pass target_tokens"):
        build_report(record, SRC)
    with pytest.raises(ValueError, match=r"batch \(1\) out of range \[0, 1\)"):
        build_report(record, SRC, target_tokens=TGT, batch=1)


# ---------------------------------------------------------------------------------------
# the page, in real headless Chromium
# ---------------------------------------------------------------------------------------
def test_report_renders_every_view_without_errors(browser, record, tmp_path):
    path = write_report(tmp_path / "r.html", record, SRC, target_tokens=TGT)
    p = Page(browser, path)
    try:
        assert p.problems == []
        pg = p.page
        kinds = pg.eval_on_selector_all("#kind option", "os => os.map(o => o.textContent)")
        assert len(kinds) == 3 and "Cross-attention" in kinds[2]
        assert pg.locator("#headview .edges line").count() > 0
        assert pg.locator("#modelview canvas").count() == 2 * 4
        assert pg.locator("#stats tbody tr").count() == len(head_stats(record))
        assert pg.locator("#headview .ltok text").count() == len(SRC)
        # cross-attention: target tokens query the source tokens
        pg.select_option("#kind", "2")
        left = pg.eval_on_selector_all(
            "#headview .ltok text title", "ts => ts.map(t => t.textContent)"
        )
        right = pg.eval_on_selector_all(
            "#headview .rtok text title", "ts => ts.map(t => t.textContent)"
        )
        assert left == TGT and right == SRC
        assert p.problems == []
    finally:
        p.close()


def test_changing_the_head_changes_what_is_drawn(browser, record, tmp_path):
    path = write_report(tmp_path / "r.html", record, SRC, target_tokens=TGT)
    p = Page(browser, path)
    try:
        pg = p.page
        edges0, heat0 = p.edges(), p.heatmap()
        pg.select_option("#head", "1")
        assert "head 1" in pg.inner_text("#status")
        assert p.edges() != edges0 and p.heatmap() != heat0
        pg.select_option("#layer", "1")
        assert "layer 1" in pg.inner_text("#status")
        # clicking a model-view thumbnail selects its head
        pg.click("#modelview canvas[data-l='0'][data-h='3']")
        assert pg.input_value("#head") == "3" and pg.input_value("#layer") == "0"
        # hovering a token highlights its connections
        pg.hover("#headview .ltok text[data-i='1']")
        assert pg.locator("#headview .hl line").count() > 0
        assert "focus" in (pg.get_attribute("#headview", "class") or "")
        assert p.problems == []
    finally:
        p.close()


def test_injected_markup_token_shows_as_text(browser, record, tmp_path):
    path = write_report(tmp_path / "r.html", record, SRC, target_tokens=TGT)
    p = Page(browser, path)
    try:
        pg = p.page
        pg.hover(f"#headview .ltok text[data-i='{SRC.index(XSS)}']")
        assert pg.locator("img").count() == 0
        shown = pg.eval_on_selector_all(
            "#headview .ltok text", "ts => ts.map(t => t.firstChild.textContent)"
        )
        full = pg.eval_on_selector_all(
            "#headview .ltok text title", "ts => ts.map(t => t.textContent)"
        )
        assert (
            XSS in shown and full == SRC
        )  # the long one is shortened on screen, whole in its title
        assert pg.locator("#headview .ltok text", has_text=XSS).is_visible()
        assert pg.evaluate("() => document.querySelectorAll('script').length") == 2
        assert p.problems == []  # no alert dialog, no error
    finally:
        p.close()


@pytest.mark.parametrize("max_values", [4_000_000, 100_000])  # dense, then strongest keys only
def test_a_600_token_report_stays_usable(browser, tmp_path, max_values, tiny):
    n = 600
    model = tiny.lm()
    with torch.no_grad(), record_attention(model) as rec:
        model(torch.randint(0, 50, (1, n)))
    tokens = [f"w{i}" for i in range(n)]
    path = write_report(tmp_path / "long.html", rec, tokens, max_values=max_values)
    t0 = time.perf_counter()
    p = Page(browser, path)
    try:
        pg = p.page
        assert time.perf_counter() - t0 < 15
        drawn = int(pg.get_attribute("#headview", "data-edges"))
        assert n <= drawn <= n * 3  # the strongest edge(s) of each query, not all n^2 / 2
        pg.select_option("#head", "2")
        pg.hover(f"#headview .ltok text[data-i='{n - 1}']")
        assert pg.locator("#headview .hl line").count() >= 1
        assert p.problems == []
    finally:
        p.close()
