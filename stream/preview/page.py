"""The preview page, inline (one small file, no package data to install). Every control on it is wired:
``paused`` and ``overlay`` go to ``POST /controls`` (see :mod:`stream.preview.controls`)."""

from __future__ import annotations

from typing import Final

PAGE_HTML: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>deocclude preview</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 12px; background: #111; color: #ddd; }
  h1 { font-size: 16px; margin: 0 0 8px; }
  .videos { display: flex; gap: 8px; flex-wrap: wrap; }
  figure { margin: 0; }
  figcaption { color: #aaa; margin: 2px 0; }
  img { max-width: 48vw; background: #222; display: block; }
  #stats { margin: 8px 0; font-variant-numeric: tabular-nums; }
  #stats span { margin-right: 14px; }
  #stats b { color: #fff; }
  label { margin-right: 16px; }
  #status { color: #e88; }
  a { color: #8cf; }
</style>
</head>
<body>
<h1>deocclude live preview</h1>
<div class="videos">
  <figure><figcaption>input (<a href="/input.mjpg">/input.mjpg</a>)</figcaption>
    <img id="input" src="/input.mjpg" alt="input video"></figure>
  <figure><figcaption>restored (<a href="/stream.mjpg">/stream.mjpg</a>)</figcaption>
    <img id="restored" src="/stream.mjpg" alt="restored video"></figure>
</div>
<div id="stats">
  <span>fps <b id="fps">-</b></span>
  <span>latency p50 <b id="latency">-</b> ms</span>
  <span>faces restored <b id="faces">-</b></span>
  <span>dropped <b id="dropped">-</b></span>
  <span>frames <b id="frames">-</b></span>
  <span>preview adds <b id="preview-ms">-</b> ms</span>
  <span id="status"></span>
</div>
<div>
  <label><input type="checkbox" id="paused"> pause restoration (send the input as is)</label>
  <label><input type="checkbox" id="overlay"> show the mask overlay (pixels the restoration replaced)</label>
</div>
<script>
"use strict";
const num = (v, digits) => (v === null || v === undefined) ? "-" : Number(v).toFixed(digits);
async function poll() {
  try {
    const s = await (await fetch("/stats.json", {cache: "no-store"})).json();
    document.getElementById("fps").textContent = num(s.fps, 1);
    document.getElementById("latency").textContent = num(s.latency_ms_p50, 0);
    document.getElementById("faces").textContent = s.faces ?? "-";
    document.getElementById("dropped").textContent = s.dropped;
    document.getElementById("frames").textContent = s.frames;
    document.getElementById("preview-ms").textContent = num(s.preview_ms_p50, 1);
    document.getElementById("paused").checked = s.paused;
    document.getElementById("overlay").checked = s.overlay;
    document.getElementById("status").textContent = s.ended ? "the run has ended" : "";
  } catch (e) {
    document.getElementById("status").textContent = "no connection to the process";
  }
}
for (const id of ["paused", "overlay"]) {
  document.getElementById(id).addEventListener("change", async (ev) => {
    await fetch("/controls", {method: "POST", headers: {"Content-Type": "application/json"},
                              body: JSON.stringify({[id]: ev.target.checked})});
    poll();
  });
}
poll();
setInterval(poll, 500);
</script>
</body>
</html>
"""
