"""What a pipeline run measured, and a progress display fed from the render thread.

Latency is not fps: a tool can keep up on average while lagging seconds behind the camera. So
besides throughput we keep, per frame, the end-to-end latency (time the sink finished writing
minus ``Frame.captured_at``) and each stage's time, and summarise them as p50/p95/p99.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from stream.types import VideoInfo


def distribution(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """``{"n", "mean", "p50", "p95", "p99", "max"}`` of ``values_ms``; statistics are None when empty.

    None rather than NaN so the dict stays valid JSON for the benchmark reports.
    """
    n = len(values_ms)
    if n == 0:
        return {"n": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(values_ms, dtype=np.float64)
    p50, p95, p99 = (float(v) for v in np.percentile(a, [50, 95, 99]))
    return {"n": n, "mean": float(a.mean()), "p50": p50, "p95": p95, "p99": p99, "max": float(a.max())}


class RecentSamples:
    """The last ``capacity`` float samples in a preallocated ring, plus count, sum and max of all of them.

    A pipeline that runs for days must not keep one Python float per frame (that grew resident memory
    by ~130 bytes a frame); the ring's memory is allocated, and touched, once at construction.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._ring = np.full(capacity, np.nan, np.float64)  # full, not empty: pages touched now
        self.count = 0
        self.total = 0.0
        self.max = -np.inf

    def append(self, value: float) -> None:
        self._ring[self.count % len(self._ring)] = value
        self.count += 1
        self.total += value
        self.max = max(self.max, value)

    def __len__(self) -> int:
        return min(self.count, len(self._ring))

    def values(self) -> list[float]:
        """The retained samples, oldest first."""
        cap = len(self._ring)
        if self.count <= cap:
            return self._ring[: self.count].tolist()
        start = self.count % cap
        return np.concatenate((self._ring[start:], self._ring[:start])).tolist()


@dataclass(frozen=True)
class PipelineStats:
    """Measurements of one :meth:`stream.pipeline.Pipeline.run`.

    ``frames_in``: frames the source yielded. ``frames_out``: frames the sink wrote.
    ``dropped``: frames discarded per queue (named ``"capture->detect"`` etc.; all 0 for a file).
    ``stage_ms``: per-frame milliseconds per stage; besides the processing stages it holds
    ``"capture"`` (time the source took to yield the frame: decode, or waiting on the camera) and
    ``"render"`` (``sink.write``). ``latency_ms``: per written frame, the time ``sink.write``
    returned minus ``Frame.captured_at``. ``wall_s``: from ``run()`` start to all threads joined.
    ``stopped``: the run ended by ``stop()``, Ctrl-C or an error rather than the source's end.
    ``unjoined``: names of threads still running after the join timeout (a stage stuck in a call).
    ``error``: one line describing the first error, or None.
    Per-frame lists hold the last ``Pipeline(keep_samples=...)`` frames (all of a short run); the
    percentiles describe those. ``frames_sampled`` says how many there are.
    """

    live: bool
    frames_in: int
    frames_out: int
    dropped: dict[str, int]
    stage_ms: dict[str, list[float]]
    latency_ms: list[float]
    wall_s: float
    stopped: bool = False
    unjoined: tuple[str, ...] = ()
    error: str | None = None

    def __post_init__(self) -> None:
        if self.frames_in < 0 or self.frames_out < 0:
            raise ValueError(f"frame counts must be >= 0, got in={self.frames_in} out={self.frames_out}")
        if self.wall_s < 0:
            raise ValueError(f"wall_s must be >= 0, got {self.wall_s}")

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def fps(self) -> float:
        """Frames written per second of wall time (0.0 for an empty run)."""
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict: counts, drops, wall time, fps and p50/p95/p99 of latency and each stage."""
        return {
            "live": self.live,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": dict(self.dropped),
            "dropped_total": self.dropped_total,
            "wall_s": self.wall_s,
            "fps": self.fps,
            "stopped": self.stopped,
            "unjoined": list(self.unjoined),
            "error": self.error,
            "frames_sampled": len(self.latency_ms),
            "latency_ms": distribution(self.latency_ms),
            "stage_ms": {name: distribution(v) for name, v in self.stage_ms.items()},
        }


@dataclass(frozen=True)
class ProgressUpdate:
    """Sent to ``on_progress`` from the render thread after each written frame.

    ``latency_ms`` is that frame's end-to-end latency; ``total`` the source's frame count if known.
    """

    frames_in: int
    frames_out: int
    dropped: int
    total: int | None
    elapsed_s: float
    latency_ms: float
    live: bool


@dataclass
class _LiveWindow:
    t0: float
    frames0: int
    latencies_ms: list[float] = field(default_factory=list)


class ProgressReporter:
    """An ``on_progress`` callback: a tqdm bar (frames/total) for files, a one-line display for live.

    The live line (``"  29.8 fps | latency p50 41 ms p95 55 ms | dropped 3 | 1200 frames"``) is
    rewritten about every ``interval_s`` on ``stream`` (stderr by default); its fps and latency
    cover the last interval only, so it shows how the stream is doing now, not on average.
    Use as a context manager, or call :meth:`close`, to end the bar/line cleanly.
    Called from one thread (the pipeline's render thread), so it keeps no lock.
    """

    def __init__(
        self,
        *,
        total: int | None,
        live: bool,
        interval_s: float = 1.0,
        stream: TextIO | None = None,
    ) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.live = live
        self._interval_s = interval_s
        self._stream: TextIO = stream if stream is not None else sys.stderr
        self._bar: tqdm[Any] | None = None
        if not live:
            self._bar = tqdm(total=total, unit="frame", file=self._stream, dynamic_ncols=True)
        self._window = _LiveWindow(t0=time.perf_counter(), frames0=0)
        self._wrote_line = False
        self._last_line = ""

    @classmethod
    def for_info(cls, info: VideoInfo, **kwargs: Any) -> ProgressReporter:
        """The reporter suited to a source: live line for ``info.is_live``, else a bar of ``frame_count``."""
        return cls(total=info.frame_count, live=info.is_live, **kwargs)

    @property
    def last_line(self) -> str:
        """The last live line written (empty before the first one); for tests and logs."""
        return self._last_line

    def __call__(self, update: ProgressUpdate) -> None:
        if self._bar is not None:
            self._bar.update(update.frames_out - self._bar.n)
            return
        w = self._window
        w.latencies_ms.append(update.latency_ms)
        now = time.perf_counter()
        dt = now - w.t0
        if dt < self._interval_s:
            return
        fps = (update.frames_out - w.frames0) / dt if dt > 0 else 0.0
        p50, p95 = np.percentile(np.asarray(w.latencies_ms), [50, 95])
        line = (
            f"{fps:6.1f} fps | latency p50 {p50:.0f} ms p95 {p95:.0f} ms"
            f" | dropped {update.dropped} | {update.frames_out} frames"
        )
        # Pad to the previous length so a shorter line fully overwrites a longer one.
        self._stream.write("\r" + line.ljust(len(self._last_line)))
        self._stream.flush()
        self._last_line = line
        self._wrote_line = True
        self._window = _LiveWindow(t0=now, frames0=update.frames_out)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._wrote_line:
            self._stream.write("\n")
            self._stream.flush()
            self._wrote_line = False

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
