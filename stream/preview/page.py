"""The preview page, inline (one small file, no package data to install). Every control on it is wired:
``paused``, ``overlay`` and ``only_track`` (the face list, rebuilt from ``/stats.json`` as tracks come
and go) go to ``POST /controls`` (see :mod:`stream.preview.controls`)."""

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
  #status, #pick-status { color: #e88; }
  select { background: #222; color: #ddd; }
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
  <label>restore <select id="only_track"><option value="">all faces</option></select>
    (the other faces pass through untouched)</label>
  <span id="pick-status"></span>
</div>
<script>
"use strict";
let lastError = "";  // the answer to a refused POST /controls, shown until the next accepted one
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
    document.getElementById("status").textContent = s.ended ? "the run has ended" : lastError;
    showFaces(s);
  } catch (e) {
    document.getElementById("status").textContent = "no connection to the process";
  }
}
// The face list: "all faces" and one entry per face of the newest frame; a picked face that is no
// longer there stays listed, marked, so the page never silently switches to restoring other faces.
let shownFaces = "";
function showFaces(s) {
  const select = document.getElementById("only_track");
  const ids = s.tracks.map((t) => t.id);
  const picked = s.only_track;
  const missing = picked !== null && !ids.includes(picked);
  const key = JSON.stringify([ids, picked, missing, s.only_track_lost]);
  if (key !== shownFaces) {  // rebuilt only when the list changes, not on every poll
    shownFaces = key;
    const entries = [["", "all faces"], ...ids.map((id) => [String(id), "face #" + id])];
    if (missing) {
      entries.push([String(picked), "face #" + picked + (s.only_track_lost ? " (lost)" : " (not in view)")]);
    }
    select.replaceChildren(...entries.map(([value, text]) => new Option(text, value)));
  }
  select.value = picked === null ? "" : String(picked);
  document.getElementById("pick-status").textContent = s.only_track_lost
    ? "face #" + picked + " is lost (its track ended): no face is restored; pick another face or all faces"
    : (missing ? "face #" + picked + " is not in view: no face is restored" : "");
}
async function post(changes) {
  const r = await fetch("/controls", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(changes)});
  lastError = r.ok ? "" : await r.text();
  return r.ok;
}
for (const id of ["paused", "overlay"]) {
  document.getElementById(id).addEventListener("change", async (ev) => {
    await post({[id]: ev.target.checked});
    poll();
  });
}
document.getElementById("only_track").addEventListener("change", async (ev) => {
  const v = ev.target.value;
  if (!(await post({only_track: v === "" ? null : Number(v)}))) shownFaces = "";  // rebuild from the truth
  poll();
});
poll();
setInterval(poll, 500);
</script>
</body>
</html>
"""
