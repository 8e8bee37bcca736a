"""The face front-end of the stream: detect -> track -> align, all faces of a frame in one batch.

Alignment uses the tracked (One-Euro smoothed, or predicted while the detector misses) landmarks, so the
crops the networks see are steady and a face survives a short detection dropout.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from engines.crop import Alignment, estimate_alignment
from engines.face_detect import FaceDetection
from stream.faces.cuts import SceneCutConfig, SceneCutDetector
from stream.faces.tracker import FaceTracker, Track, TrackerConfig

logger = logging.getLogger(__name__)


class FaceDetector(Protocol):
    """What the front-end needs of a detector (:class:`engines.face_detect.YuNetDetector` is one)."""

    def detect(self, bgr_u8: np.ndarray) -> list[FaceDetection]: ...


@dataclass(frozen=True)
class LocatedFaces:
    """The faces of one frame after detect -> track -> select -> align, before any crop is made.

    ``alignments``/``track_ids``: one per face to process, largest first; ``boxes``: (N, 4) float32 x, y,
    w, h in frame pixels. ``alive_ids``: every live track (including faces skipped this frame), so per-track state of ended
    tracks can be dropped; ``skipped``: faces tracked but not processed (beyond ``max_faces``, smaller
    than ``min_face_px``); ``detected``: whether the detector ran on this frame (see ``detect_every``).
    ``detect_ms``: face detector + tracker; ``align_ms``: selection + alignment (host wall-clock).
    """

    alignments: tuple[Alignment, ...]
    track_ids: tuple[int, ...]
    boxes: np.ndarray
    alive_ids: frozenset[int]
    skipped: int
    detected: bool
    detect_ms: float
    align_ms: float

    def __post_init__(self) -> None:
        n = len(self.track_ids)
        if len(self.alignments) != n or self.boxes.shape != (n, 4):
            raise ValueError(
                f"need {n} alignments and ({n}, 4) boxes, got {len(self.alignments)} and {self.boxes.shape}"
            )

    def __len__(self) -> int:
        return len(self.track_ids)


def crop_within_frame(frame_hw: tuple[int, int], alignment: Alignment) -> bool:
    """Whether the whole crop, plus the one pixel bilinear sampling reads around it, maps inside the frame."""
    h, w = frame_hw
    s = alignment.crop_size
    corners = alignment.to_image(np.array([[-1, -1], [s, -1], [-1, s], [s, s]], dtype=np.float64))
    return bool(corners.min() >= 0 and corners[:, 0].max() <= w - 1 and corners[:, 1].max() <= h - 1)


def inside_mask_from_alpha(crop_alpha_u8: np.ndarray) -> np.ndarray:
    """(S, S) float32 {0, 1} from the alpha channel of a crop warped from a frame whose alpha is 255:
    1 where the crop pixel was interpolated from frame pixels only, eroded by one pixel so that bilinear
    sampling on the way back never mixes in the border fill either."""
    inside = (crop_alpha_u8 == 255).view(np.uint8)
    inside = cv2.erode(inside, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return inside.astype(np.float32)


class FaceFrontEnd:
    """Detects (every ``detect_every`` frames; the tracker predicts in between), tracks and aligns faces.

    Stateful, not thread-safe: one per video, called from one thread.
    """

    def __init__(
        self,
        detector: FaceDetector,
        crop_size: int,
        max_faces: int = 4,
        detect_every: int = 1,
        *,
        min_face_px: int = 0,
        tracker_config: TrackerConfig | None = None,
        cut_config: SceneCutConfig | None = None,
    ) -> None:
        if crop_size < 16:
            raise ValueError(f"crop_size must be >= 16 pixels, got {crop_size}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        if min_face_px < 0:
            raise ValueError(f"min_face_px must be >= 0, got {min_face_px}")
        self.detector = detector
        self.crop_size = crop_size
        self.max_faces = max_faces
        self.detect_every = detect_every
        self.min_face_px = min_face_px
        self.tracker = FaceTracker(tracker_config)
        self.cuts = SceneCutDetector(cut_config)
        self.frames_seen = 0
        self.frames_without_faces = 0

    def reset(self) -> None:
        """Start a new video: no tracks, detection on the next frame."""
        self.tracker.reset()
        self.cuts.reset()
        self.frames_seen = 0
        self.frames_without_faces = 0

    def locate(self, frame_bgr_u8: np.ndarray) -> LocatedFaces:
        """Detect (or predict), track, select and align the faces of ``frame_bgr_u8`` (H, W, 3) uint8 BGR;
        no crop is made (the op sets of :mod:`stream.restore.ops` make them)."""
        if frame_bgr_u8.ndim != 3 or frame_bgr_u8.shape[2] != 3 or frame_bgr_u8.dtype != np.uint8:
            raise ValueError(
                f"frame must be (H, W, 3) uint8 BGR, got {frame_bgr_u8.shape} {frame_bgr_u8.dtype}"
            )
        t0 = time.perf_counter()
        detected = self.frames_seen % self.detect_every == 0
        self.frames_seen += 1
        if self.cuts.update(frame_bgr_u8):
            # A new shot: no face of the last one is here (see stream.faces.cuts); detect now.
            if self.tracker.alive_ids:
                logger.debug("scene cut on frame %d: %d track(s) ended", self.frames_seen - 1,
                             len(self.tracker.alive_ids))  # fmt: skip
            self.tracker.reset()
            detected = True
        if detected:
            tracks = self.tracker.update(self.detector.detect(frame_bgr_u8))
        else:
            tracks = self.tracker.predict()
        t1 = time.perf_counter()
        hw = (int(frame_bgr_u8.shape[0]), int(frame_bgr_u8.shape[1]))
        chosen, skipped = self._select(tracks, hw)
        alignments = tuple(estimate_alignment(t.landmarks, self.crop_size) for t in chosen)
        if not chosen:
            if self.frames_without_faces == 0:
                logger.debug("no face to process on frame %d (logged once per run)", self.frames_seen - 1)
            self.frames_without_faces += 1
        t2 = time.perf_counter()
        return LocatedFaces(
            alignments=alignments,
            track_ids=tuple(t.id for t in chosen),
            boxes=np.array([t.box for t in chosen], dtype=np.float32).reshape(-1, 4),
            alive_ids=self.tracker.alive_ids,
            skipped=skipped,
            detected=detected,
            detect_ms=(t1 - t0) * 1e3,
            align_ms=(t2 - t1) * 1e3,
        )

    def _select(self, tracks: list[Track], frame_hw: tuple[int, int]) -> tuple[list[Track], int]:
        """Largest faces first, at most ``max_faces``; too small or degenerate ones count as skipped.

        A coasting track predicted entirely out of the frame is not a visible face: neither processed
        nor counted.
        """
        h, w = frame_hw
        visible: list[Track] = []
        skipped = 0
        for t in tracks:
            x, y, bw, bh = (float(v) for v in t.box)
            if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
                continue
            lms = t.landmarks.astype(np.float64)
            if (
                min(bw, bh) < self.min_face_px
                or not np.all(np.isfinite(lms))
                or np.ptp(lms, axis=0).max() < 1.0
            ):
                skipped += 1
                continue
            visible.append(t)
        visible.sort(key=lambda t: -float(t.box[2] * t.box[3]))
        skipped += max(0, len(visible) - self.max_faces)
        return visible[: self.max_faces], skipped
