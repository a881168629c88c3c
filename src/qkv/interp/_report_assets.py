"""The stylesheet and script inlined into every HTML report (see :mod:`qkv.interp.report`).

The script reads the report's data from a ``<script type="application/json">`` element and
builds every view with DOM and canvas APIs; token text only ever reaches the page through
``textContent`` (or canvas ``fillText``), never as markup.
"""

from __future__ import annotations

from qkv.interp._report_image_assets import IMAGE_CSS, IMAGE_JS

_CSS = r"""
:root { --fg: #1d2330; --muted: #667085; --line: #d0d5dd; --accent: #2f6fdf; --bg: #fff; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  background: var(--bg); margin: 0; padding: 16px 24px 48px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
p.note { color: var(--muted); margin: 4px 0 12px; max-width: 70em; }
#controls { position: sticky; top: 0; background: var(--bg); z-index: 2; padding: 8px 0;
  display: flex; flex-wrap: wrap; gap: 14px; align-items: center; border-bottom: 1px solid var(--line); }
#controls label { display: flex; gap: 6px; align-items: center; }
select, input { font: inherit; }
input[type=number] { width: 5em; }
#headview-wrap { max-height: 72vh; overflow: auto; border: 1px solid var(--line); border-radius: 6px;
  display: inline-block; min-width: 480px; }
#headview text { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; cursor: default;
  fill: var(--fg); }
#headview text.hdr { fill: var(--muted); font-weight: bold; }
#headview text.on { fill: var(--accent); font-weight: bold; }
#headview .edges line { stroke: var(--accent); }
#headview.focus .edges line { stroke-opacity: 0.06; }
#headview .hl line { stroke: #e0454f; }
#modelview { display: grid; gap: 4px; align-items: center; }
#modelview .lab { color: var(--muted); font-size: 12px; text-align: center; }
#modelview canvas { width: 72px; height: 72px; border: 2px solid transparent; cursor: pointer;
  image-rendering: pixelated; }
#modelview canvas.sel { border-color: var(--accent); }
#heat-wrap { position: relative; display: inline-block; }
#heatmap { border: 1px solid var(--line); image-rendering: pixelated; }
#tip { min-height: 1.4em; color: var(--muted); font-family: ui-monospace, monospace;
  white-space: pre; overflow: hidden; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #eef0f3; text-align: right; }
th { cursor: pointer; position: sticky; top: 0; background: #f6f7f9; }
td.t, th.t { text-align: left; }
tr.sel td { background: #e8f0fe; }
tbody tr { cursor: pointer; }
#stats-wrap { max-height: 60vh; overflow: auto; display: inline-block;
  border: 1px solid var(--line); border-radius: 6px; }
"""

_JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("qkv-data").textContent);
  function $(id) { return document.getElementById(id); }
  var SVGNS = "http://www.w3.org/2000/svg";
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function bytes(s) {
    var bin = atob(s), a = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) a[i] = bin.charCodeAt(i);
    return a;
  }
  var STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function color(t) {
    t = Math.max(0, Math.min(1, t)) * (STOPS.length - 1);
    var i = Math.min(STOPS.length - 2, Math.floor(t)), f = t - i, a = STOPS[i], b = STOPS[i + 1];
    return [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
  }
  function w8(x) { var u = x / 255; return u * u; }  // bytes hold round(255 sqrt(w))
  function short(t) { t = String(t); return t.length > 32 ? t.slice(0, 31) + "\u2026" : t; }

  // ---- weights: decoded lazily, one head at a time ------------------------------------
  var cache = new Map();
  function mat(v, l, h) {
    var key = v + "/" + l + "/" + h;
    if (cache.has(key)) return cache.get(key);
    var view = D.views[v], layer = view.layers[l], nq = layer.qpos.length, nk = view.nk;
    var enc = layer.data[h], m;
    if (layer.encoding === "dense") {
      var d = bytes(enc);
      m = {
        nq: nq, nk: nk,
        get: function (r, c) { return w8(d[r * nk + c]); },
        row: function (r) {
          var out = [];
          for (var c = 0; c < nk; c++) { var x = d[r * nk + c]; if (x) out.push([c, w8(x)]); }
          return out.sort(function (a, b) { return b[1] - a[1]; });
        },
        col: function (c) {
          var out = [];
          for (var r = 0; r < nq; r++) { var x = d[r * nk + c]; if (x) out.push([r, w8(x)]); }
          return out.sort(function (a, b) { return b[1] - a[1]; });
        },
        each: function (fn) {
          for (var r = 0; r < nq; r++) for (var c = 0; c < nk; c++) {
            var x = d[r * nk + c]; if (x) fn(r, c, w8(x));
          }
        }
      };
    } else {
      var K = layer.k, idx = new Uint16Array(bytes(enc.idx).buffer), val = bytes(enc.val);
      m = {
        nq: nq, nk: nk,
        get: function (r, c) {
          for (var j = 0; j < K; j++) if (idx[r * K + j] === c && val[r * K + j]) return w8(val[r * K + j]);
          return 0;
        },
        row: function (r) {
          var out = [];
          for (var j = 0; j < K; j++) { var x = val[r * K + j]; if (x) out.push([idx[r * K + j], w8(x)]); }
          return out;  // stored strongest first
        },
        col: function (c) {
          var out = [];
          for (var r = 0; r < nq; r++) for (var j = 0; j < K; j++) {
            if (idx[r * K + j] === c && val[r * K + j]) out.push([r, w8(val[r * K + j])]);
          }
          return out.sort(function (a, b) { return b[1] - a[1]; });
        },
        each: function (fn) {
          for (var r = 0; r < nq; r++) for (var j = 0; j < K; j++) {
            var x = val[r * K + j]; if (x) fn(r, idx[r * K + j], w8(x));
          }
        }
      };
    }
    cache.set(key, m);
    return m;
  }

  // ---- state and controls -------------------------------------------------------------
  var S = { v: 0, l: 0, h: 0, k: D.edges_per_query, minw: D.min_weight };
  function view() { return D.views[S.v]; }
  function layer() { return view().layers[S.l]; }
  function qtoks() { var t = D.tokens[view().q], L = layer(); return L.qpos.map(function (p) { return t[p]; }); }
  function ktoks() { return D.tokens[view().k]; }

  function fill(sel, items, value) {
    sel.replaceChildren();
    items.forEach(function (it, i) {
      var o = el("option", it); o.value = String(i); sel.appendChild(o);
    });
    sel.value = String(value);
  }
  function syncControls() {
    fill($("kind"), D.views.map(function (v) { return v.label; }), S.v);
    fill($("layer"), view().layers.map(function (L) { return "layer " + L.index + "  (" + L.name + ")"; }), S.l);
    fill($("head"), layer().heads.map(function (h) { return "head " + h; }), S.h);
    $("topk").value = String(S.k);
    $("minw").value = String(S.minw);
  }
  function select(v, l, h) {
    S.v = v; S.l = Math.min(l, D.views[v].layers.length - 1);
    S.h = Math.min(h, D.views[v].layers[S.l].heads.length - 1);
    syncControls(); renderAll();
  }

  // ---- head view ----------------------------------------------------------------------
  var ROW = 16, TOP = 36, XL = 250, XR = 400, W = 660;
  function renderHeadView() {
    var root = $("headview"), m = mat(S.v, S.l, S.h), qt = qtoks(), kt = ktoks();
    root.replaceChildren();
    root.classList.remove("focus");
    var n = Math.max(qt.length, kt.length), H = n * ROW + TOP + 8;
    root.setAttribute("width", W); root.setAttribute("height", H);
    root.setAttribute("viewBox", "0 0 " + W + " " + H);
    var edges = svg("g", { "class": "edges" }), hl = svg("g", { "class": "hl" });
    var lt = svg("g", { "class": "ltok" }), rt = svg("g", { "class": "rtok" });
    function y(i) { return TOP + i * ROW; }
    var drawn = 0;
    for (var r = 0; r < m.nq; r++) {
      var row = m.row(r);
      for (var j = 0; j < row.length && j < S.k; j++) {
        var c = row[j][0], w = row[j][1];
        if (w < S.minw && j > 0) break;  // every query keeps its strongest edge
        edges.appendChild(svg("line", {
          x1: XL + 6, y1: y(r) - 4, x2: XR - 6, y2: y(c) - 4,
          "stroke-opacity": Math.min(1, 0.15 + w).toFixed(3), "stroke-width": (0.5 + 2.5 * w).toFixed(2),
          "data-r": r, "data-c": c
        }));
        drawn++;
      }
    }
    root.dataset.edges = String(drawn);
    qt.forEach(function (t, i) {
      var e = svg("text", { x: XL, y: y(i), "text-anchor": "end", "data-side": "q", "data-i": i });
      e.textContent = short(t);
      var tt = svg("title", {}); tt.textContent = String(t); e.appendChild(tt);
      lt.appendChild(e);
    });
    kt.forEach(function (t, i) {
      var e = svg("text", { x: XR, y: y(i), "data-side": "k", "data-i": i });
      e.textContent = short(t);
      var tt = svg("title", {}); tt.textContent = String(t); e.appendChild(tt);
      rt.appendChild(e);
    });
    var hq = svg("text", { x: XL, y: 14, "text-anchor": "end", "class": "hdr" }); hq.textContent = "queries";
    var hk = svg("text", { x: XR, y: 14, "class": "hdr" }); hk.textContent = "keys";
    root.append(edges, hl, lt, rt, hq, hk);
  }
  function focusToken(side, i) {
    var root = $("headview"), hl = root.querySelector(".hl"), m = mat(S.v, S.l, S.h);
    if (!hl) return;
    hl.replaceChildren();
    root.querySelectorAll("text.on").forEach(function (t) { t.classList.remove("on"); });
    if (side === null) { root.classList.remove("focus"); return; }
    root.classList.add("focus");
    var list = side === "q" ? m.row(i) : m.col(i), shown = 0;
    for (var j = 0; j < list.length && shown < 200; j++) {
      var other = list[j][0], w = list[j][1];
      if (w < 0.01 && shown >= 1) break;
      var r = side === "q" ? i : other, c = side === "q" ? other : i;
      hl.appendChild(svg("line", {
        x1: XL + 6, y1: TOP + r * ROW - 4, x2: XR - 6, y2: TOP + c * ROW - 4,
        "stroke-opacity": Math.min(1, 0.2 + w).toFixed(3), "stroke-width": (0.8 + 3 * w).toFixed(2)
      }));
      var tok = root.querySelector((side === "q" ? ".rtok" : ".ltok") + " text[data-i='" + other + "']");
      if (tok) tok.classList.add("on");
      shown++;
    }
    var me = root.querySelector((side === "q" ? ".ltok" : ".rtok") + " text[data-i='" + i + "']");
    if (me) me.classList.add("on");
    $("tip").textContent = (side === "q" ? "query " : "key ") + i + ": " + shown + " connections shown";
  }

  // ---- model view ---------------------------------------------------------------------
  function thumb(canvas, m) {
    // max-pool the head into at most T x T cells, then scale up to T x T pixels
    var T = 72, w = Math.min(T, m.nk), h = Math.min(T, m.nq), acc = new Float32Array(w * h), mx = 0;
    m.each(function (r, c, x) {
      var p = Math.floor(r * h / m.nq) * w + Math.floor(c * w / m.nk);
      if (x > acc[p]) acc[p] = x;
      if (x > mx) mx = x;
    });
    var off = document.createElement("canvas"); off.width = w; off.height = h;
    var octx = off.getContext("2d"), img = octx.createImageData(w, h);
    for (var p = 0; p < acc.length; p++) {
      var rgb = color(mx > 0 ? acc[p] / mx : 0);
      img.data[4 * p] = rgb[0]; img.data[4 * p + 1] = rgb[1]; img.data[4 * p + 2] = rgb[2]; img.data[4 * p + 3] = 255;
    }
    octx.putImageData(img, 0, 0);
    canvas.width = T; canvas.height = T;
    var ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, T, T);
  }
  var thumbsFor = -1;
  function renderModelView() {
    var grid = $("modelview"), v = view();
    var nh = Math.max.apply(null, v.layers.map(function (L) { return L.heads.length; }));
    if (thumbsFor !== S.v) {
      grid.replaceChildren();
      grid.style.gridTemplateColumns = "70px repeat(" + nh + ", 76px)";
      grid.appendChild(el("div", "", "lab"));
      for (var h = 0; h < nh; h++) grid.appendChild(el("div", "head " + (v.layers[0].heads[h] !== undefined ? v.layers[0].heads[h] : h), "lab"));
      v.layers.forEach(function (L, l) {
        grid.appendChild(el("div", "layer " + L.index, "lab"));
        for (var h2 = 0; h2 < nh; h2++) {
          if (h2 >= L.heads.length) { grid.appendChild(el("div")); continue; }
          var c = el("canvas");
          c.dataset.l = String(l); c.dataset.h = String(h2);
          c.title = L.name + " head " + L.heads[h2];
          thumb(c, mat(S.v, l, h2));
          c.addEventListener("click", function (ev) {
            select(S.v, Number(ev.currentTarget.dataset.l), Number(ev.currentTarget.dataset.h));
          });
          grid.appendChild(c);
        }
      });
      thumbsFor = S.v;
    }
    grid.querySelectorAll("canvas").forEach(function (c) {
      c.classList.toggle("sel", Number(c.dataset.l) === S.l && Number(c.dataset.h) === S.h);
    });
  }

  // ---- heatmap ------------------------------------------------------------------------
  var heat = null;
  function renderHeatmap() {
    var m = mat(S.v, S.l, S.h), qt = qtoks(), kt = ktoks(), canvas = $("heatmap");
    var n = Math.max(m.nq, m.nk), cell = Math.max(1, Math.min(36, Math.floor(560 / n)));
    var labels = n <= 64, ctx = canvas.getContext("2d"), margin = 0;
    if (labels) {
      ctx.font = "11px monospace";
      qt.concat(kt).forEach(function (t) { margin = Math.max(margin, ctx.measureText(short(t)).width); });
      margin = Math.ceil(Math.min(260, margin + 10));
    }
    canvas.width = margin + m.nk * cell; canvas.height = margin + m.nq * cell;
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    var off = document.createElement("canvas"); off.width = m.nk; off.height = m.nq;
    var octx = off.getContext("2d"), img = octx.createImageData(m.nk, m.nq), mx = 0;
    m.each(function (r, c, w) { if (w > mx) mx = w; });
    for (var p = 0; p < m.nq * m.nk; p++) {
      var z = color(0); img.data[4 * p] = z[0]; img.data[4 * p + 1] = z[1]; img.data[4 * p + 2] = z[2]; img.data[4 * p + 3] = 255;
    }
    m.each(function (r, c, w) {
      var p2 = r * m.nk + c, rgb = color(mx > 0 ? w / mx : 0);
      img.data[4 * p2] = rgb[0]; img.data[4 * p2 + 1] = rgb[1]; img.data[4 * p2 + 2] = rgb[2];
    });
    octx.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, margin, margin, m.nk * cell, m.nq * cell);
    if (labels) {
      ctx.fillStyle = "#1d2330"; ctx.font = "11px monospace"; ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      qt.forEach(function (t, i) { ctx.fillText(short(t), margin - 4, margin + (i + 0.5) * cell); });
      kt.forEach(function (t, i) {
        ctx.save(); ctx.translate(margin + (i + 0.5) * cell, margin - 4); ctx.rotate(-Math.PI / 2);
        ctx.textAlign = "left"; ctx.fillText(short(t), 0, 0); ctx.restore();
      });
    }
    heat = { margin: margin, cell: cell, m: m, qt: qt, kt: kt };
  }
  function heatTip(ev) {
    if (!heat) return;
    var rect = ev.currentTarget.getBoundingClientRect(), sx = ev.currentTarget.width / rect.width;
    var x = (ev.clientX - rect.left) * sx - heat.margin, y = (ev.clientY - rect.top) * sx - heat.margin;
    var r = Math.floor(y / heat.cell), c = Math.floor(x / heat.cell);
    if (r < 0 || c < 0 || r >= heat.m.nq || c >= heat.m.nk) { $("tip").textContent = ""; return; }
    $("tip").textContent = "query " + r + " " + JSON.stringify(String(heat.qt[r])) + "  \u2192  key " + c +
      " " + JSON.stringify(String(heat.kt[c])) + ":  " + heat.m.get(r, c).toFixed(3);
  }

  // ---- statistics table ---------------------------------------------------------------
  var COLS = [["kind", "kind", "t"], ["layer_index", "layer", "i"], ["head", "head", "i"], ["label", "pattern", "t"],
    ["entropy", "entropy", ""], ["norm_entropy", "norm. entropy", ""], ["distance", "mean distance", ""],
    ["first_token", "first token", ""], ["special", "special", ""], ["diagonal", "diagonal", ""],
    ["previous", "previous", ""], ["next", "next", ""]];
  var sortKey = null, sortDir = 1;
  function fmt(x) {
    if (x === null || x === undefined) return "\u2013";
    if (typeof x !== "number") return String(x);
    return isFinite(x) ? x.toFixed(3) : "\u2013";
  }
  function renderStats() {
    var head = $("stats").querySelector("thead"), body = $("stats").querySelector("tbody");
    if (!head.firstChild) {
      var tr = el("tr");
      COLS.forEach(function (col) {
        var th = el("th", col[1], col[2]);
        th.addEventListener("click", function () {
          sortDir = sortKey === col[0] ? -sortDir : 1; sortKey = col[0]; renderStats();
        });
        tr.appendChild(th);
      });
      head.appendChild(tr);
    }
    var rows = D.stats.slice();
    if (sortKey) rows.sort(function (a, b) {
      var x = a[sortKey], y = b[sortKey];
      if (x === y) return 0; if (x === null) return 1; if (y === null) return -1;
      return (x < y ? -1 : 1) * sortDir;
    });
    body.replaceChildren();
    var L = layer(), cur = L.name, curHead = L.heads[S.h];
    rows.forEach(function (s) {
      var tr = el("tr");
      if (s.layer === cur && s.head === curHead) tr.className = "sel";
      COLS.forEach(function (col) {
        tr.appendChild(el("td", col[2] === "i" ? String(s[col[0]]) : fmt(s[col[0]]), col[2]));
      });
      tr.addEventListener("click", function () {
        for (var v = 0; v < D.views.length; v++) {
          var ls = D.views[v].layers;
          for (var l = 0; l < ls.length; l++) if (ls[l].name === s.layer && ls[l].heads.indexOf(s.head) >= 0) {
            select(v, l, ls[l].heads.indexOf(s.head)); return;
          }
        }
      });
      body.appendChild(tr);
    });
  }

  //@image-panel

  function renderAll() {
    renderHeadView(); renderModelView(); renderHeatmap(); renderStats(); renderImage();
    $("status").textContent = view().label + ", layer " + layer().index + ", head " + layer().heads[S.h] +
      ": " + $("headview").dataset.edges + " edges drawn";
  }

  // ---- wiring -------------------------------------------------------------------------
  $("title").textContent = D.title;
  document.title = D.title;
  $("kind").addEventListener("change", function (e) { select(Number(e.target.value), 0, 0); });
  $("layer").addEventListener("change", function (e) { select(S.v, Number(e.target.value), S.h); });
  $("head").addEventListener("change", function (e) { select(S.v, S.l, Number(e.target.value)); });
  $("topk").addEventListener("change", function (e) { S.k = Math.max(1, Number(e.target.value) || 1); renderHeadView(); });
  $("minw").addEventListener("change", function (e) { S.minw = Math.max(0, Number(e.target.value) || 0); renderHeadView(); });
  $("headview").addEventListener("mouseover", function (e) {
    var t = e.target.closest ? e.target.closest("text[data-side]") : null;
    if (t) focusToken(t.getAttribute("data-side"), Number(t.getAttribute("data-i")));
  });
  $("headview").addEventListener("mouseleave", function () { focusToken(null, 0); });
  $("heatmap").addEventListener("mousemove", heatTip);
  initImage();
  syncControls();
  renderAll();
  document.body.dataset.ready = "1";
})();
"""

CSS = _CSS + IMAGE_CSS
JS = _JS.replace("  //@image-panel\n", IMAGE_JS)
