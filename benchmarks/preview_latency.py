"""What ``--preview`` costs: the latency it adds and the frame rate with and without it, on the real
pipeline (the demo clip, the default models, this machine's device).

Usage::

    python -m benchmarks.preview_latency --json benchmarks/results/preview_latency.json [--seconds 8]

Two measurements, each with one MJPEG client reading ``/stream.mjpg`` as fast as the server sends it
(what a browser or VLC does):

* **live** (the demo clip looped as a 24 fps camera, :class:`LoopingLiveSource`): per served frame, the
  time from the frame leaving the restore stage (:meth:`stream.preview.hub.PreviewHub.publish`) to its
  JPEG written to the client's socket, p50/p95/p99; and the pipeline's own latency with and without the
  preview.
* **file** (the demo clip decoded as fast as the pipeline goes, NullSink): fps and this process's CPU
  time per frame, without the preview and with it, alternated ``--repeats`` times. On a shared, loaded
  machine the fps swings with the other load; CPU time per frame is the steadier cost measure (the
  report records the load average).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.environment import device_info, git, versions
from benchmarks.report import setup_logging, write_report
from stream.app import DEMO_CLIP, StreamConfig, open_run
from stream.media.sinks import NullSink
from stream.media.sources import FileSource
from stream.pipeline import Pipeline
from stream.stats import PipelineStats, distribution
from stream.types import Frame, VideoInfo
from stream.view import OpenViews, ViewConfig, open_views


class LoopingLiveSource:
    """Frames of a clip, repeated, delivered at ``fps`` like a camera (live: queues drop the oldest).

    ``frames_bgr_u8``: (H, W, 3) uint8 BGR pictures. ``close()`` may come from any thread."""

    def __init__(self, frames_bgr_u8: list[np.ndarray], fps: float) -> None:
        if not frames_bgr_u8 or not fps > 0:
            raise ValueError(f"need at least one frame and fps > 0, got {len(frames_bgr_u8)} frames, {fps}")
        h, w = frames_bgr_u8[0].shape[:2]
        self.frames, self.fps = frames_bgr_u8, fps
        self.info = VideoInfo(width=w, height=h, fps=fps, time_base=Fraction(1, 90_000), is_live=True)
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        t0 = time.perf_counter()
        i = 0
        while not self._closed.is_set():
            due = t0 + i / self.fps
            if self._closed.wait(max(0.0, due - time.perf_counter())):
                return
            img = self.frames[i % len(self.frames)]
            yield Frame(i, round(i * 90_000 / self.fps), self.info.time_base, img, time.perf_counter())
            i += 1

    def close(self) -> None:
        self._closed.set()


def demo_frames(count: int) -> list[np.ndarray]:
    """The first ``count`` frames of the bundled demo clip, (H, W, 3) uint8 BGR."""
    out = []
    with FileSource(DEMO_CLIP) as src:
        for frame in src:
            out.append(frame.bgr_u8)
            if len(out) == count:
                break
    return out


@contextmanager
def running(
    view: ViewConfig, source: Any | None = None, *, max_faces: int = 1
) -> Iterator[tuple[OpenViews, Pipeline, threading.Thread, dict[str, PipelineStats]]]:
    """The real restore stages (demo-clip engines) with ``view`` on ``source`` (default: the demo file),
    into a NullSink, running in a thread; stopped and joined on exit. Yields (views, pipeline, thread,
    result) where ``result["stats"]`` is set once the run is over."""
    with open_run(StreamConfig(input=str(DEMO_CLIP), max_faces=max_faces, progress=False)) as opened:
        src = opened.source if source is None else source
        views = open_views(view, opened.stages, src.info, counts=opened.counter, controls=opened.controls)
        pipeline = Pipeline(src, views.stages, NullSink(), queue_size=4, on_progress=views.on_progress(None))
        result: dict[str, PipelineStats] = {}
        thread = threading.Thread(target=lambda: result.update(stats=pipeline.run()), daemon=True)
        thread.start()
        try:
            yield views, pipeline, thread, result
        finally:
            pipeline.stop()
            thread.join(30)
            views.close()
            if source is not None:
                source.close()


def _client(host: str, port: int, stop: threading.Event) -> threading.Thread:
    from urllib.request import urlopen

    def read() -> None:
        with urlopen(f"http://{host}:{port}/stream.mjpg", timeout=10) as resp:
            while not stop.is_set() and resp.read(65536):
                pass

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def measure_live(seconds: float, frames: list[np.ndarray], fps: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for preview in (False, True):
        stop = threading.Event()
        view = ViewConfig(preview="127.0.0.1:0" if preview else None)
        with running(view, LoopingLiveSource(frames, fps)) as (views, pipeline, thread, result):
            if views.server is not None:
                _client(views.server.host, views.server.port, stop)
            cpu0 = time.process_time()
            time.sleep(seconds)
            cpu_s = time.process_time() - cpu0
            served = [] if views.server is None else views.server.hub.served_ms()
            pipeline.stop()
            thread.join(30)
            stop.set()
        stats = result["stats"]
        lat = stats.latency_ms[len(stats.latency_ms) // 4 :]  # after the warm-up quarter
        key = "with_preview" if preview else "without_preview"
        out[key] = {
            "fps": stats.fps,
            "cpu_ms_per_frame": 1000.0 * cpu_s / max(1, stats.frames_out),
            "pipeline_latency_ms": distribution(lat),
            "dropped": stats.dropped_total,
        }
        if preview:
            out[key]["preview_added_ms"] = distribution(served[len(served) // 4 :])
    return out


def measure_file(repeats: int) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"without_preview": [], "with_preview": []}
    cpu: dict[str, list[float]] = {"without_preview": [], "with_preview": []}
    for _ in range(repeats):
        for preview in (False, True):
            stop = threading.Event()
            view = ViewConfig(preview="127.0.0.1:0" if preview else None)
            with running(view) as (views, _pipeline, thread, result):
                if views.server is not None:
                    _client(views.server.host, views.server.port, stop)
                cpu0 = time.process_time()
                thread.join(300)
                cpu_s = time.process_time() - cpu0
                stop.set()
            key = "with_preview" if preview else "without_preview"
            runs[key].append(result["stats"].fps)
            cpu[key].append(1000.0 * cpu_s / max(1, result["stats"].frames_out))
    med = {k: float(np.median(v)) for k, v in runs.items()}
    return {
        "fps_runs": runs,
        "fps_median": med,
        "fps_cost_percent": 100.0 * (1 - med["with_preview"] / med["without_preview"]),
        "cpu_ms_per_frame_runs": cpu,
        "cpu_ms_per_frame_median": {k: float(np.median(v)) for k, v in cpu.items()},
    }


def measure_jpeg(frames: list[np.ndarray], runs: int = 200) -> dict[str, Any]:
    """The preview's own work per frame and stream watched: one JPEG encode (quality 80, as served)."""
    import cv2

    ms = []
    for i in range(runs):
        t0 = time.perf_counter()
        cv2.imencode(".jpg", frames[i % len(frames)], [cv2.IMWRITE_JPEG_QUALITY, 80])
        ms.append((time.perf_counter() - t0) * 1000.0)
    return {"quality": 80, "encode_ms": distribution(ms)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each live run")
    ap.add_argument("--fps", type=float, default=24.0, help="the looped demo's camera rate")
    ap.add_argument("--repeats", type=int, default=3, help="file runs per setting, alternated")
    args = ap.parse_args(argv)
    setup_logging()
    frames = demo_frames(96)
    load_before = os.getloadavg()
    report: dict[str, Any] = {
        "benchmark": "preview_latency",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git("rev-parse", "--short", "HEAD"),
        "device": device_info("cpu"),
        "versions": versions(),
        "input": f"{DEMO_CLIP.name} {frames[0].shape[1]}x{frames[0].shape[0]}",
        "client": "one MJPEG client on loopback reading /stream.mjpg",
        "jpeg": measure_jpeg(frames),
        "live": {
            "fps_asked": args.fps,
            "seconds": args.seconds,
            **measure_live(args.seconds, frames, args.fps),
        },
        "file": {"repeats": args.repeats, **measure_file(args.repeats)},
    }
    report["load_average_1m"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    write_report(report, args.json)
    print(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
