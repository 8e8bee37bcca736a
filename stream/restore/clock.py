"""Per-stage times of one frame: CUDA events on a stream, or host wall-clock."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any


class StageClock:
    """Per-stage times of one frame: CUDA events on ``stream`` (read after the frame's final sync), or
    wall-clock when ``stream`` is None. ``keys``: the stages that may be timed. Reused frame after frame
    by one thread."""

    def __init__(self, keys: Sequence[str], stream: Any | None = None) -> None:
        self.keys = tuple(keys)
        self._stream = stream
        self._events: dict[str, tuple[Any, Any]] = {}
        if stream is not None:
            import torch  # only a CUDA stream brings us here, and torch made it

            self._events = {
                k: (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for k in keys
            }
        self._wall: dict[str, list[float]] = {}

    def reset(self) -> None:
        self._wall = {}

    def start(self, key: str) -> None:
        if key not in self.keys:
            raise ValueError(f"stage must be one of {self.keys}, got {key!r}")
        if self._stream is not None:
            self._events[key][0].record(self._stream)
        self._wall[key] = [time.perf_counter(), math.nan]

    def stop(self, key: str) -> None:
        if self._stream is not None:
            self._events[key][1].record(self._stream)
        self._wall[key][1] = time.perf_counter()

    def read(self) -> dict[str, float]:
        """Milliseconds per started key. On CUDA it waits for each stop event first: a stage stopped
        after the frame's last sync (e.g. when no face needs the generator) may still be in flight,
        and ``elapsed_time`` of an unfinished event raises."""
        if self._stream is not None:
            times = {}
            for k in self._wall:
                start, stop = self._events[k]
                stop.synchronize()
                times[k] = float(start.elapsed_time(stop))
            return times
        return {k: (t1 - t0) * 1e3 for k, (t0, t1) in self._wall.items()}
