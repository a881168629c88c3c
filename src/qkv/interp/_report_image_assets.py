"""The image panel's stylesheet and script, spliced into the report's (see
:mod:`qkv.interp._report_assets`): one script, one hash in the page's policy.

The script runs inside the report's closure and reuses its data, decoder (``mat``),
selection (``S``) and colour map; the picture is the PNG data URL of ``D.image.src``.
Token text reaches the page only through ``textContent``.
"""

from __future__ import annotations

IMAGE_CSS = r"""
#img-panel { display: flex; flex-direction: column; gap: 6px; align-items: flex-start; }
#img-queries { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
#img-queries button.on { background: var(--accent); color: #fff; }
#imgview { border: 1px solid var(--line); image-rendering: pixelated; cursor: crosshair; }
#imgview:focus { outline: 2px solid var(--accent); }
"""

IMAGE_JS = r"""
  // ---- image panel: hover a patch to see where it attends -----------------------------
  var IMG = D.image && $("imgview") ? D.image : null, pic = null;
  var P = { side: null, q: -1, pinned: false, hover: -1, at: "" };
  function isPatchQuery() { return view().q === "input"; }
  function imgRow() {
    // the selected head's (or the heads' mean) weights from query token P.q over the patches
    var v = view(), L = layer();
    if (v.k !== "input") return { w: null, why: "the keys of this attention are not image patches" };
    if (P.q < 0 || P.side !== v.q) return { w: null, why: "" };
    var r = L.qpos.indexOf(P.q);
    if (r < 0) return { w: null, why: "query " + P.q + " was not recorded" };
    var heads = $("img-mean").checked ? L.heads.map(function (_, i) { return i; }) : [S.h];
    var byKey = new Float64Array(v.nk);
    heads.forEach(function (h) {
      mat(S.v, S.l, h).row(r).forEach(function (kw) { byKey[kw[0]] += kw[1] / heads.length; });
    });
    return { w: IMG.patches.map(function (k) { return byKey[k]; }), why: "" };
  }
  function cellName(i) { return "r" + Math.floor(i / IMG.cols) + "c" + (i % IMG.cols); }
  function drawImg() {
    var c = $("imgview"), ctx = c.getContext("2d"), cw = c.width / IMG.cols, ch = c.height / IMG.rows;
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, c.width, c.height);
    if (pic) ctx.drawImage(pic, 0, 0, c.width, c.height);
    var res = imgRow(), i;
    if (res.w) {
      var mx = 0;
      for (i = 0; i < res.w.length; i++) if (res.w[i] > mx) mx = res.w[i];
      for (i = 0; i < res.w.length; i++) {
        var rgb = color(mx > 0 ? res.w[i] / mx : 0);
        ctx.fillStyle = "rgba(" + Math.round(rgb[0]) + "," + Math.round(rgb[1]) + "," + Math.round(rgb[2]) + ",0.6)";
        ctx.fillRect((i % IMG.cols) * cw, Math.floor(i / IMG.cols) * ch, cw, ch);
      }
    }
    ctx.strokeStyle = "rgba(255,255,255,0.25)"; ctx.lineWidth = 1;
    for (i = 1; i < IMG.cols; i++) { ctx.beginPath(); ctx.moveTo(i * cw, 0); ctx.lineTo(i * cw, c.height); ctx.stroke(); }
    for (i = 1; i < IMG.rows; i++) { ctx.beginPath(); ctx.moveTo(0, i * ch); ctx.lineTo(c.width, i * ch); ctx.stroke(); }
    var me = P.side === "input" ? IMG.patches.indexOf(P.q) : -1;
    if (me >= 0 && res.w) {
      ctx.strokeStyle = "#e0454f"; ctx.lineWidth = 2;
      ctx.strokeRect((me % IMG.cols) * cw + 1, Math.floor(me / IMG.cols) * ch + 1, cw - 2, ch - 2);
    }
    c.dataset.query = res.w ? String(P.q) : "";
    var qt = res.w ? D.tokens[P.side][P.q] : null, tip = res.why;
    if (res.w) tip = "query " + P.q + " " + JSON.stringify(String(qt)) + (P.pinned ? " (pinned)" : "");
    if (res.w && P.hover >= 0) {
      tip += "  \u2192  patch " + cellName(P.hover) + ": " + res.w[P.hover].toFixed(3);
    }
    $("img-tip").textContent = tip;
    $("img-queries").querySelectorAll("button").forEach(function (b) {
      b.classList.toggle("on", P.side === "input" && Number(b.dataset.q) === P.q);
    });
  }
  function setQuery(q, pinned) { P.side = view().q; P.q = q; P.pinned = pinned; drawImg(); }
  function renderImage() {
    if (!IMG) return;
    var v = view(), L = layer(), box = $("img-queries"), toks = D.tokens[v.q];
    if (P.side !== v.q) {  // a new kind of query: patches, or the target's (object) queries
      P.side = v.q; P.pinned = v.q !== "input"; P.q = v.q === "input" ? -1 : L.qpos[0];
    }
    box.replaceChildren();
    if (v.k === "input" && v.q === "input") {
      L.qpos.forEach(function (q) {
        if (IMG.patches.indexOf(q) >= 0) return;
        var b = el("button", "query " + short(toks[q]));  // a class token: not on the picture
        b.type = "button"; b.dataset.q = String(q);
        b.addEventListener("click", function () { setQuery(q, true); });
        box.appendChild(b);
      });
    } else if (v.k === "input") {
      var lab = el("label", "query "), sel = el("select");
      sel.id = "img-query";
      L.qpos.forEach(function (q) {
        var o = el("option", short(toks[q])); o.value = String(q); sel.appendChild(o);
      });
      sel.value = String(P.q);
      sel.addEventListener("change", function (e) { setQuery(Number(e.target.value), true); });
      lab.appendChild(sel); box.appendChild(lab);
    }
    drawImg();
  }
  function imgCell(ev) {
    var c = ev.currentTarget, rect = c.getBoundingClientRect();
    var x = (ev.clientX - rect.left) / rect.width, y = (ev.clientY - rect.top) / rect.height;
    if (x < 0 || y < 0 || x >= 1 || y >= 1) return -1;
    return Math.floor(y * IMG.rows) * IMG.cols + Math.floor(x * IMG.cols);
  }
  function initImage() {
    if (!IMG) return;
    var c = $("imgview"), side = Math.max(IMG.width, IMG.height);
    var scale = side >= 320 ? 320 / side : Math.floor(320 / side);
    c.width = Math.round(IMG.width * scale); c.height = Math.round(IMG.height * scale);
    if (String(IMG.src).indexOf("data:image/png;base64,") === 0) {
      var im = new Image();
      im.addEventListener("load", function () { pic = im; drawImg(); document.body.dataset.image = "1"; });
      im.src = IMG.src;
    }
    c.addEventListener("mousemove", function (ev) {
      var i = imgCell(ev);
      P.hover = i;
      if (i >= 0 && isPatchQuery() && !P.pinned) { setQuery(IMG.patches[i], false); return; }
      drawImg();
    });
    c.addEventListener("mouseleave", function () {
      P.hover = -1;
      if (isPatchQuery() && !P.pinned) P.q = -1;
      drawImg();
    });
    c.addEventListener("click", function (ev) {
      var i = imgCell(ev);
      c.focus();
      if (i < 0 || !isPatchQuery()) return;
      if (P.pinned && P.q === IMG.patches[i]) setQuery(IMG.patches[i], false);
      else setQuery(IMG.patches[i], true);
    });
    c.addEventListener("keydown", function (ev) {
      if (!isPatchQuery()) return;
      if (ev.key === "Escape") { P.pinned = false; P.q = -1; drawImg(); return; }
      var d = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] }[ev.key];
      if (!d) return;
      ev.preventDefault();
      var i = Math.max(0, IMG.patches.indexOf(P.q)), r = Math.floor(i / IMG.cols), k = i % IMG.cols;
      r = Math.max(0, Math.min(IMG.rows - 1, r + d[0])); k = Math.max(0, Math.min(IMG.cols - 1, k + d[1]));
      setQuery(IMG.patches[r * IMG.cols + k], true);
    });
    $("img-mean").addEventListener("change", drawImg);
  }
"""

__all__ = ["IMAGE_CSS", "IMAGE_JS"]
