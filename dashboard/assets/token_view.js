// headlab token view: the real tokens as text, one panel per head. Hover a query token to colour
// the keys it attends to by weight, or (mode "key") hover a key to colour the queries that
// attend to it; click pins the token. Data: the JSON in <script id="tv-data"> (see
// dashboard/tokens_view.py). Token text only ever reaches the page through textContent.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("tv-data").textContent);
  const tokens = data.tokens;
  const k = data.k;
  const n = tokens.length;
  const offsets = new Int32Array(n + 1);
  for (let q = 0; q < n; q++) offsets[q + 1] = offsets[q] + Math.min(k, q + 1);

  const grid = document.getElementById("tv-grid");
  const status = document.getElementById("tv-status");
  const sqrtBox = document.getElementById("tv-sqrt");
  const syncBox = document.getElementById("tv-sync");
  let mode = "query";
  let focus = null; // token index shown
  let pinned = false;
  let lit = []; // [panel, span] pairs coloured now

  function shown(text) {
    // Whitespace a reader must see: newlines as ↵ (the line then breaks after the token), tabs
    // as ⇥, an empty token as ∅.
    if (text === "") return "\u2205";
    return text.replace(/\t/g, "\u21e5").replace(/\r?\n/g, "\u21b5");
  }

  function colour(weight) {
    const a = Math.max(0, Math.min(1, sqrtBox.checked ? Math.sqrt(weight) : weight));
    return "rgba(217, 72, 1, " + a.toFixed(3) + ")";
  }

  // Per head: entries by query (flat, offsets) and, for the reverse mode, by key.
  const panels = data.heads.map(function (head) {
    const byKey = Array.from({ length: n }, function () { return []; });
    for (let q = 0; q < n; q++) {
      for (let e = offsets[q]; e < offsets[q + 1]; e++) {
        if (head.weights[e] > 0) byKey[head.keys[e]].push([q, head.weights[e]]);
      }
    }
    byKey.forEach(function (list) { list.sort(function (a, b) { return b[1] - a[1]; }); });
    const panel = document.createElement("section");
    panel.className = "tv-panel";
    const title = document.createElement("h3");
    title.textContent = head.label;
    const info = document.createElement("div");
    info.className = "tv-info";
    info.textContent = "\u00a0";
    const body = document.createElement("div");
    body.className = "tv-text";
    const rail = document.createElement("canvas"); // where the lit tokens are in the whole text
    rail.className = "tv-rail";
    rail.width = 10;
    rail.title = "where the coloured tokens are in the whole prompt (click to go there)";
    const scroller = document.createElement("div");
    scroller.className = "tv-scroll";
    scroller.append(body, rail);
    const spans = new Array(n);
    const fragment = document.createDocumentFragment();
    for (let i = 0; i < n; i++) {
      const span = document.createElement("span");
      span.className = "tv-tok";
      span.dataset.i = String(i);
      span.textContent = shown(tokens[i]);
      spans[i] = span;
      fragment.appendChild(span);
      const breaks = (tokens[i].match(/\n/g) || []).length;
      for (let b = 0; b < breaks; b++) fragment.appendChild(document.createElement("br"));
    }
    body.appendChild(fragment);
    panel.append(title, info, scroller);
    grid.appendChild(panel);
    return { head: head, byKey: byKey, spans: spans, info: info, body: body, rail: rail, marks: [] };
  });

  function quote(i) {
    const text = tokens[i].replace(/\s/g, "\u00b7");
    return "\u201c" + (text.length > 16 ? text.slice(0, 15) + "\u2026" : text) + "\u201d";
  }

  function clear() {
    lit.forEach(function (pair) {
      pair[1].style.background = "";
      pair[1].style.color = "";
      pair[1].title = "";
    });
    lit = [];
    panels.forEach(function (p) {
      if (focus !== null) p.spans[focus].classList.remove("tv-focus");
      p.info.textContent = "\u00a0";
      p.marks = [];
      drawRail(p);
    });
  }

  function drawRail(p) {
    const canvas = p.rail;
    const height = p.body.clientHeight;
    if (canvas.height !== height) canvas.height = height;
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, height);
    const total = Math.max(p.body.scrollHeight, 1);
    context.fillStyle = "rgba(38, 39, 48, 0.10)"; // the part of the text in sight
    context.fillRect(0, (p.body.scrollTop / total) * height, canvas.width,
      Math.max(3, (p.body.clientHeight / total) * height));
    function mark(i, style) {
      const span = p.spans[i];
      const y = ((span.offsetTop + span.offsetHeight / 2) / total) * height;
      context.fillStyle = style;
      context.fillRect(0, Math.max(0, y - 1.5), canvas.width, 3);
    }
    p.marks.forEach(function (pair) {
      const a = Math.max(0.25, sqrtBox.checked ? Math.sqrt(pair[1]) : pair[1]);
      mark(pair[0], "rgba(217, 72, 1, " + Math.min(1, a).toFixed(3) + ")");
    });
    if (focus !== null) mark(focus, "#1f5fbf");
  }

  function light(p, i, weight, label) {
    const span = p.spans[i];
    span.style.background = colour(weight);
    if ((sqrtBox.checked ? Math.sqrt(weight) : weight) > 0.55) span.style.color = "#fff";
    span.title = label + " " + weight.toFixed(3);
    lit.push([p, span]);
    p.marks.push([i, weight]);
  }

  function weightText(weight) {
    return weight >= 0.01 ? weight.toFixed(2) : weight > 0 ? "<0.01" : "0";
  }

  function listed(pairs, count) {
    return pairs.slice(0, count).map(function (pair) {
      return quote(pair[0]) + "@" + pair[0] + " " + weightText(pair[1]);
    }).join(", ");
  }

  function show(i) {
    clear();
    focus = i;
    panels.forEach(function (p) {
      p.spans[i].classList.add("tv-focus");
      const head = p.head;
      if (mode === "query") {
        const pairs = [];
        for (let e = offsets[i]; e < offsets[i + 1]; e++) {
          if (head.weights[e] > 0) pairs.push([head.keys[e], head.weights[e]]); // 0: below 1/510
        }
        pairs.forEach(function (pair) {
          light(p, pair[0], pair[1], "key " + pair[0] + " \u2190 query " + i + ":");
        });
        p.info.textContent = "query " + i + " " + quote(i) + " \u2192 " + listed(pairs, 4);
      } else {
        const pairs = p.byKey[i];
        pairs.forEach(function (pair) {
          light(p, pair[0], pair[1], "query " + pair[0] + " \u2192 key " + i + ":");
        });
        const some = pairs.length === 1 ? " query" : " queries";
        p.info.textContent = "key " + i + " " + quote(i) + " \u2190 in the top " + k + " of "
          + pairs.length + some + (pairs.length ? "; strongest " + listed(pairs, 3) : "");
      }
    });
    panels.forEach(drawRail);
    status.textContent = pinned
      ? "pinned at token " + i + " (click it again to unpin)"
      : "token " + i + " (click to pin)";
  }

  function reset() {
    clear();
    focus = null;
    status.textContent = "hover a token; click to pin";
  }

  panels.forEach(function (p) {
    p.body.addEventListener("mouseover", function (event) {
      const span = event.target.closest(".tv-tok");
      if (span && !pinned) show(Number(span.dataset.i));
    });
    p.body.addEventListener("click", function (event) {
      const span = event.target.closest(".tv-tok");
      if (!span) return;
      const i = Number(span.dataset.i);
      pinned = !(pinned && focus === i);
      show(i);
    });
    p.rail.addEventListener("click", function (event) {
      const fraction = event.offsetY / Math.max(p.rail.clientHeight, 1);
      p.body.scrollTop = fraction * p.body.scrollHeight - p.body.clientHeight / 2;
    });
    p.body.addEventListener("scroll", function () {
      drawRail(p);
      if (!syncBox.checked || p.syncing) return;
      panels.forEach(function (other) {
        if (other !== p && Math.abs(other.body.scrollTop - p.body.scrollTop) > 1) {
          other.syncing = true;
          other.body.scrollTop = p.body.scrollTop;
          requestAnimationFrame(function () { other.syncing = false; });
        }
      });
    });
  });
  grid.addEventListener("mouseleave", function () { if (!pinned) reset(); });
  document.querySelectorAll("input[name=tv-mode]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      mode = radio.value;
      if (focus !== null) show(focus);
    });
  });
  sqrtBox.addEventListener("change", function () { if (focus !== null) show(focus); });
  panels.forEach(drawRail);
  window.addEventListener("resize", function () { panels.forEach(drawRail); });
  document.body.dataset.ready = "1";
}());
