"""The report's image panel: its data (the picture as a PNG, the patch grid) and, in headless
Chromium, the overlay drawn when a patch is hovered, on a record whose weights are set by
hand so the ordering of the heat can be checked against them."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib

import pytest
import torch

from _browser import Page
from qkv.interp import AttentionEntry, AttentionRecord, ImagePanel, build_report, write_report
from qkv.interp.image_panel import png_bytes

ROWS = COLS = 3
TOKENS = ["[CLS]"] + [f"r{r}c{c}" for r in range(ROWS) for c in range(COLS)]
N = len(TOKENS)  # 10: the class token, then the 3 x 3 patches row-major
GREY = 0.5


def _record() -> AttentionRecord:
    """One layer, two heads; every row uniform but these (token 1 is patch r0c0):
    head 0: r0c0 -> r2c2 0.6, r1c1 0.3, [CLS] 0.1; [CLS] -> r0c2 1.0.
    head 1: r0c0 -> itself 1.0."""
    w = torch.full((1, 2, N, N), 1.0 / N)
    w[0, 0, 1] = 0.0
    w[0, 0, 1, 9], w[0, 0, 1, 5], w[0, 0, 1, 0] = 0.6, 0.3, 0.1
    w[0, 0, 0] = 0.0
    w[0, 0, 0, 3] = 1.0
    w[0, 1, 1] = 0.0
    w[0, 1, 1, 1] = 1.0
    rec = AttentionRecord()
    rec.add(AttentionEntry("layers.0.self_attn", "encoder_self", 0, w, (0, 1), tuple(range(N)), N))
    return rec


def _panel() -> ImagePanel:
    return ImagePanel.row_major(torch.full((1, 30, 30), GREY), (ROWS, COLS), first=1)


def _data(text: str) -> dict:
    m = re.search(r'<script id="qkv-data" type="application/json">(.*?)</script>', text, re.S)
    assert m is not None
    return json.loads(m.group(1))


def _png_pixels(png: bytes) -> tuple[int, int, int, bytes]:
    """Width, height, colour type and the unfiltered rows of a PNG written with filter 0."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    w, h, depth, ctype = struct.unpack(">IIBB", png[16:26])
    assert depth == 8
    idat = png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    stride = len(raw) // h
    assert all(raw[i * stride] == 0 for i in range(h))  # filter byte 0 on every row
    return w, h, ctype, b"".join(raw[i * stride + 1 : (i + 1) * stride] for i in range(h))


# ---------------------------------------------------------------------------------------
# the document (no browser)
# ---------------------------------------------------------------------------------------
def test_png_bytes_hold_the_pixels() -> None:
    img = torch.rand(3, 5, 7)
    w, h, ctype, pix = _png_pixels(png_bytes(img))
    assert (w, h, ctype) == (7, 5, 2)
    want = (img * 255).round().to(torch.uint8).permute(1, 2, 0).reshape(-1)
    assert torch.equal(torch.frombuffer(bytearray(pix), dtype=torch.uint8), want)
    assert _png_pixels(png_bytes(img[:1]))[2] == 0  # one channel: grey
    with pytest.raises(ValueError, match=r"\(1 or 3, H, W\), got \(2, 5, 7\)"):
        png_bytes(torch.rand(2, 5, 7))


def test_report_carries_the_picture_and_the_grid() -> None:
    text = build_report(_record(), TOKENS, image=_panel())
    img = _data(text)["image"]
    assert (img["rows"], img["cols"], img["width"], img["height"]) == (3, 3, 30, 30)
    assert img["patches"] == list(range(1, 10))
    png = base64.b64decode(img["src"].removeprefix("data:image/png;base64,"))
    assert _png_pixels(png)[3] == bytes([128]) * 900
    assert 'id="imgview"' in text and "img-src data:" in text  # the policy allows the PNG
    plain = build_report(_record(), TOKENS)
    assert "image" not in _data(plain) and 'id="imgview"' not in plain


def test_image_panel_is_checked() -> None:
    with pytest.raises(ValueError, match=r"patches \(8\) must number rows x cols = 3 x 3 = 9"):
        ImagePanel(torch.zeros(1, 30, 30), (3, 3), tuple(range(8)))
    with pytest.raises(ValueError, match="distinct"):
        ImagePanel(torch.zeros(1, 30, 30), (1, 2), (1, 1))
    with pytest.raises(ValueError, match=r"\(1 or 3, H, W\)"):
        ImagePanel(torch.zeros(30, 30), (3, 3), tuple(range(9)))
    far = ImagePanel.row_major(torch.zeros(1, 30, 30), (3, 3), first=2)
    with pytest.raises(ValueError, match="patches reach token 10 but input tokens number 10"):
        build_report(_record(), TOKENS, image=far)
    with pytest.raises(TypeError, match="ImagePanel"):
        build_report(_record(), TOKENS, image=torch.zeros(1, 30, 30))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# the page, in real headless Chromium
# ---------------------------------------------------------------------------------------
CENTRES = "() => { const c = document.getElementById('imgview'), x = c.getContext('2d');" \
    " const out = []; for (let r = 0; r < 3; r++) for (let k = 0; k < 3; k++) {" \
    " const d = x.getImageData((k + 0.5) * c.width / 3, (r + 0.5) * c.height / 3, 1, 1).data;" \
    " out.push([d[0], d[1], d[2]]); } return out; }"  # fmt: skip


def _open(browser, tmp_path) -> Page:
    p = Page(browser, write_report(tmp_path / "img.html", _record(), TOKENS, image=_panel()))
    p.page.wait_for_selector("body[data-image='1']", timeout=20_000)
    return p


def _bright(px: list[list[int]]) -> list[int]:
    return [sum(rgb) for rgb in px]


def _hover(p: Page, r: int, c: int) -> None:
    box = p.page.locator("#imgview").bounding_box()
    assert box is not None
    p.page.mouse.move(
        box["x"] + (c + 0.5) * box["width"] / 3, box["y"] + (r + 0.5) * box["height"] / 3
    )


def test_hovering_a_patch_overlays_its_attention_row(browser, tmp_path) -> None:
    p = _open(browser, tmp_path)
    try:
        pg = p.page
        before = pg.evaluate(CENTRES)
        assert all(abs(v - 128) <= 1 for rgb in before for v in rgb)  # the grey picture alone
        _hover(p, 0, 0)  # patch r0c0 = token 1
        assert pg.get_attribute("#imgview", "data-query") == "1"
        a = _bright(pg.evaluate(CENTRES))
        # head 0: r2c2 (0.6) > r1c1 (0.3) > every other patch (0)
        assert a[8] > a[4] > max(a[i] for i in range(9) if i not in (4, 8))
        assert len({a[i] for i in range(9) if i not in (4, 8)}) == 1
        _hover(p, 1, 1)  # a uniform row: every patch the same heat
        b = _bright(pg.evaluate(CENTRES))
        assert b != a and len(set(b)) == 1
        assert "r1c1" in pg.inner_text("#img-tip")
        # click pins r0c0; the other head then shows it attending to itself
        _hover(p, 0, 0)
        pg.mouse.down()
        pg.mouse.up()
        pg.select_option("#head", "1")
        _hover(p, 2, 2)  # pinned: hovering elsewhere leaves the query alone
        assert pg.get_attribute("#imgview", "data-query") == "1"
        h1 = _bright(pg.evaluate(CENTRES))
        assert h1[0] == max(h1) and h1[0] > max(h1[1:])
        # the arrow keys move the pinned patch (r0c0 -> r0c1 = token 2)
        pg.keyboard.press("ArrowRight")
        assert pg.get_attribute("#imgview", "data-query") == "2"
        pg.keyboard.press("Escape")
        assert pg.get_attribute("#imgview", "data-query") == ""
        assert p.problems == []
    finally:
        p.close()


def test_the_class_token_button_shows_its_row(browser, tmp_path) -> None:
    p = _open(browser, tmp_path)
    try:
        pg = p.page
        buttons = pg.locator("#img-queries button")
        assert buttons.count() == 1 and "[CLS]" in buttons.inner_text()
        buttons.click()
        assert pg.get_attribute("#imgview", "data-query") == "0"
        c = _bright(pg.evaluate(CENTRES))
        assert c[2] == max(c) and c[2] > max(c[i] for i in range(9) if i != 2)  # -> r0c2
        # the mean of both heads: head 1's row of [CLS] is uniform, so r0c2 still leads
        pg.check("#img-mean")
        m = _bright(pg.evaluate(CENTRES))
        assert m != c and m[2] == max(m)
        assert p.problems == []
    finally:
        p.close()
