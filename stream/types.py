"""Small typed records that travel between pipeline stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """What a source delivers. ``fps`` is nominal (measured for cameras); ``time_base`` is the pts unit."""

    width: int
    height: int
    fps: float
    time_base: Fraction
    frame_count: int | None = None  # None for live sources or unknown length
    has_audio: bool = False
    is_live: bool = False

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"video size must be positive, got {self.width}x{self.height}")
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")


@dataclass
class Frame:
    """One decoded frame. ``bgr_u8`` is (H, W, 3) uint8 BGR; ``pts`` in units of ``time_base``.

    ``captured_at`` is ``time.perf_counter()`` when the source produced it, for latency measurement.
    ``timings`` collects per-stage milliseconds as the frame moves through the pipeline.
    ``reference_bgr_u8``: on sampled frames only, the frame as decoded, before restoration; a file sink
    compares it with its own encoded output to measure what the codec changed outside the faces.
    """

    index: int
    pts: int | None
    time_base: Fraction
    bgr_u8: np.ndarray
    captured_at: float
    timings: dict[str, float] = field(default_factory=dict)
    reference_bgr_u8: np.ndarray | None = None

    def __post_init__(self) -> None:
        a = self.bgr_u8
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8 BGR, got {a.shape} {a.dtype}")

    @property
    def time_s(self) -> float | None:
        return None if self.pts is None else float(self.pts * self.time_base)
