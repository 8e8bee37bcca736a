"""Face identities across frames: greedy IoU + landmark matching, coasting through short misses, One-Euro
smoothing of landmarks.

Why a tracker at all: masks are smoothed per face in aligned coordinates (:mod:`stream.restore.smoother`), so a
face must keep its id from frame to frame, and a detector that misses a face for a few frames (motion
blur, a hand over the face) must not make the restored face blink off and on. Why One-Euro: landmark
jitter shakes the alignment and therefore the whole restored crop; a fixed low-pass filter would lag
behind a moving head, One-Euro raises its cutoff with speed (Casiez et al., CHI 2012).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engines.face_detect import FaceDetection


@dataclass(frozen=True)
class TrackerConfig:
    """``fps`` is the nominal frame rate, used to turn frames into seconds for the filter and for
    ``max_missed_s``. Speeds in the One-Euro filter are in face sizes per second (face size =
    sqrt(box area)), so the defaults do not depend on the resolution."""

    fps: float = 30.0
    max_missed_s: float = 0.5
    min_iou: float = 0.1
    max_landmark_dist: float = 0.6  # mean landmark distance / face size above which a pair never matches
    landmark_weight: float = 1.0
    confirm_hits: int = 3  # a track seen fewer times dies at its first miss (one-frame false positives)
    min_cutoff_hz: float = 1.0
    beta: float = 10.0
    d_cutoff_hz: float = 1.0
    velocity_decay: float = 0.7  # per coasted frame; a lost face slows down instead of flying away

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.max_missed_s < 0:
            raise ValueError(f"max_missed_s must be >= 0, got {self.max_missed_s}")
        if not 0.0 <= self.min_iou < 1.0:
            raise ValueError(f"min_iou must be in [0, 1), got {self.min_iou}")
        if not self.max_landmark_dist > 0:
            raise ValueError(f"max_landmark_dist must be > 0, got {self.max_landmark_dist}")
        if self.confirm_hits < 1:
            raise ValueError(f"confirm_hits must be >= 1, got {self.confirm_hits}")
        if not (self.min_cutoff_hz > 0 and self.d_cutoff_hz > 0 and self.beta >= 0):
            raise ValueError(
                f"One-Euro needs min_cutoff_hz > 0, d_cutoff_hz > 0, beta >= 0, got "
                f"{self.min_cutoff_hz}, {self.d_cutoff_hz}, {self.beta}"
            )
        if not 0.0 <= self.velocity_decay <= 1.0:
            raise ValueError(f"velocity_decay must be in [0, 1], got {self.velocity_decay}")

    @property
    def max_missed(self) -> int:
        """Consecutive frames a track may go undetected before it is dropped."""
        return max(0, round(self.max_missed_s * self.fps))


@dataclass(frozen=True)
class Track:
    """A tracked face in image pixels: ``box`` (4,) float32 x, y, w, h; ``landmarks`` (5, 2) float32 in
    template order, smoothed (or predicted while ``missed`` > 0). ``age`` counts frames since the track
    began, ``hits`` the frames in which it was detected, ``missed`` the current run of misses."""

    id: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float
    age: int
    missed: int
    hits: int


def _alpha(cutoff_hz: float, dt_s: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """Causal One-Euro filter on a float vector with ONE cutoff for all of it.

    The cutoff follows the speed of the centroid of the points (pairs of entries) in ``speed_slice``,
    divided by ``scale``. One cutoff keeps all five landmarks equally delayed, so a moving face is not
    distorted the way per-coordinate cutoffs would distort it; the centroid (not the mean of per-point
    speeds) because independent landmark noise averages out there instead of reading as motion.
    """

    def __init__(
        self, x0: np.ndarray, *, min_cutoff_hz: float, beta: float, d_cutoff_hz: float, speed_slice: slice
    ) -> None:
        self.x = np.asarray(x0, dtype=np.float64).copy()
        self.dx = np.zeros_like(self.x)
        self._min_cutoff, self._beta, self._d_cutoff = min_cutoff_hz, beta, d_cutoff_hz
        self._speed_slice = speed_slice

    def __call__(self, x: np.ndarray, dt_s: float, scale: float) -> np.ndarray:
        dx = (x - self.x) / dt_s
        self.dx += _alpha(self._d_cutoff, dt_s) * (dx - self.dx)
        centroid_velocity = self.dx[self._speed_slice].reshape(-1, 2).mean(0)
        speed = float(np.linalg.norm(centroid_velocity)) / max(scale, 1e-6)
        self.x += _alpha(self._min_cutoff + self._beta * speed, dt_s) * (x - self.x)
        return self.x


def _state_vector(box_xywh: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    x, y, w, h = (float(v) for v in box_xywh)
    return np.concatenate([[x, y, x + w, y + h], np.asarray(landmarks, dtype=np.float64).reshape(-1)])


def _iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """(A, 4) x (B, 4) corner boxes -> (A, B) IoU."""
    lt = np.maximum(a_xyxy[:, None, :2], b_xyxy[None, :, :2])
    rb = np.minimum(a_xyxy[:, None, 2:], b_xyxy[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a_xyxy[:, 2:] - a_xyxy[:, :2], 0, None).prod(-1)
    area_b = np.clip(b_xyxy[:, 2:] - b_xyxy[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


class _TrackState:
    def __init__(self, track_id: int, det: FaceDetection, config: TrackerConfig) -> None:
        self.id = track_id
        self.filter = OneEuroFilter(
            _state_vector(det.box, det.landmarks),
            min_cutoff_hz=config.min_cutoff_hz,
            beta=config.beta,
            d_cutoff_hz=config.d_cutoff_hz,
            speed_slice=slice(4, 14),
        )
        self.predicted = self.filter.x.copy()  # what the track shows while it is not detected
        self.velocity = np.zeros_like(self.predicted)  # px/s, decays while coasting
        self.since_update_s = 0.0
        self.score = det.score
        self.age = 1
        self.hits = 1
        self.missed = 0

    @property
    def scale(self) -> float:
        w, h = self.predicted[2] - self.predicted[0], self.predicted[3] - self.predicted[1]
        return math.sqrt(max(w * h, 1.0))

    def coast(self, dt_s: float, decay: float) -> None:
        self.since_update_s += dt_s
        self.predicted = self.predicted + self.velocity * dt_s
        self.velocity = self.velocity * decay

    def correct(self, det: FaceDetection) -> None:
        measured = _state_vector(det.box, det.landmarks)
        w, h = float(det.box[2]), float(det.box[3])
        self.predicted = self.filter(measured, self.since_update_s, math.sqrt(max(w * h, 1.0))).copy()
        self.velocity = self.filter.dx.copy()
        self.since_update_s = 0.0
        self.score = det.score
        self.hits += 1
        self.missed = 0

    def snapshot(self) -> Track:
        p = self.predicted
        box = np.array([p[0], p[1], p[2] - p[0], p[3] - p[1]], dtype=np.float32)
        return Track(
            id=self.id,
            box=box,
            landmarks=p[4:14].reshape(5, 2).astype(np.float32),
            score=self.score,
            age=self.age,
            missed=self.missed,
            hits=self.hits,
        )


class FaceTracker:
    """Keeps face identities across frames. Stateful, not thread-safe: one per video, one thread.

    Call :meth:`update` on frames where the detector ran and :meth:`predict` on frames where it did
    not (``detect_every`` > 1). Ids start at 1 and are never reused.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: list[_TrackState] = []
        self._next_id = 1

    def reset(self) -> None:
        """Forget all tracks (a new video); ids keep increasing so they stay unique."""
        self._tracks = []

    @property
    def alive_ids(self) -> frozenset[int]:
        return frozenset(t.id for t in self._tracks)

    def predict(self, dt_s: float | None = None) -> list[Track]:
        """Advance all tracks by constant velocity without a detection (not counted as a miss)."""
        dt = self._dt(dt_s)
        for t in self._tracks:
            t.coast(dt, 1.0)
            t.age += 1
        return self.tracks()

    def update(self, detections: Sequence[FaceDetection], dt_s: float | None = None) -> list[Track]:
        """Match ``detections`` of this frame to tracks; returns all live tracks (detected or coasting)."""
        cfg = self.config
        dt = self._dt(dt_s)
        for t in self._tracks:
            # Predict with the undamped velocity for matching; damping applies only to misses below.
            t.coast(dt, 1.0)
            t.age += 1
        matched_tracks: set[int] = set()
        matched_dets: set[int] = set()
        for ti, di in self._assign(detections):
            self._tracks[ti].correct(detections[di])
            matched_tracks.add(ti)
            matched_dets.add(di)
        survivors: list[_TrackState] = []
        for ti, t in enumerate(self._tracks):
            if ti not in matched_tracks:
                t.missed += 1
                t.velocity *= cfg.velocity_decay
                if t.hits < cfg.confirm_hits or t.missed > cfg.max_missed:
                    continue
            survivors.append(t)
        for di, det in enumerate(detections):
            if di not in matched_dets:
                survivors.append(_TrackState(self._next_id, det, cfg))
                self._next_id += 1
        self._tracks = survivors
        return self.tracks()

    def tracks(self) -> list[Track]:
        return [t.snapshot() for t in sorted(self._tracks, key=lambda t: t.id)]

    def _dt(self, dt_s: float | None) -> float:
        if dt_s is None:
            return 1.0 / self.config.fps
        if not dt_s > 0:
            raise ValueError(f"dt_s must be > 0 seconds, got {dt_s}")
        return float(dt_s)

    def _assign(self, detections: Sequence[FaceDetection]) -> list[tuple[int, int]]:
        """Greedy lowest-cost assignment; a handful of faces makes it as good as Hungarian in practice."""
        if not self._tracks or not detections:
            return []
        cfg = self.config
        pred = np.stack([t.predicted for t in self._tracks])  # (T, 14)
        det_boxes = np.array(
            [[d.box[0], d.box[1], d.box[0] + d.box[2], d.box[1] + d.box[3]] for d in detections]
        )
        det_lms = np.stack([np.asarray(d.landmarks, dtype=np.float64) for d in detections])  # (D, 5, 2)
        iou = _iou_matrix(pred[:, :4], det_boxes)
        trk_lms = pred[:, 4:14].reshape(-1, 1, 5, 2)
        scales = np.array([t.scale for t in self._tracks])[:, None]
        lm_dist = np.linalg.norm(trk_lms - det_lms[None], axis=-1).mean(-1) / scales  # (T, D)
        cost = (1.0 - iou) + cfg.landmark_weight * lm_dist
        valid = (iou >= cfg.min_iou) & (lm_dist <= cfg.max_landmark_dist)
        pairs: list[tuple[int, int]] = []
        used_t: set[int] = set()
        used_d: set[int] = set()
        for flat in np.argsort(cost, axis=None):
            ti, di = divmod(int(flat), cost.shape[1])
            if not valid[ti, di] or ti in used_t or di in used_d:
                continue
            pairs.append((ti, di))
            used_t.add(ti)
            used_d.add(di)
        return pairs
