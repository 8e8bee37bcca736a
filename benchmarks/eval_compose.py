"""Frame composition for the evaluation clips: a face photo framed like a webcam, camera motion, occluders.

All frames are (H, W, 3) uint8 BGR; landmarks are (5, 2) float64 frame pixels in the template order of
:mod:`engines.crop`. Occluders are rendered by the training package's own synthesis in a 512 px
canonical crop of the face (so they sit on the face as worn ones do) and pasted back with the inverse
warp; the paste returns the occluder's alpha in frame coordinates, which is the ground-truth mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from engines.crop import estimate_alignment, warp_to_crop
from engines.face_detect import FaceDetection, FaceDetectorConfig, YuNetDetector
from training.data.facemask import render_facemask
from training.data.occluders import render_freeform, render_hand, render_scarf, render_sunglasses
from training.data.synth_common import FaceGeometry, Occlusion

RENDER_CROP = 512  # occluders are drawn at high resolution, then warped down onto the face
FACE_CROP = 256  # the canonical crop the face metrics use (issue 11: "at 256 px")
MASK_THRESHOLD = 0.5  # alpha >= 0.5 is the binary annotation (training.data.synth_common.Occlusion)

Renderer = Callable[[np.ndarray, np.random.Generator, FaceGeometry], Occlusion]
# Occluder kinds of the evaluation clips. "facemask_photo" (real mask photographs) is the held-out style:
# the training configs never use it; the others are the training synthesis' own kinds, new draws.
OCCLUDERS: dict[str, Renderer] = {
    "facemask_photo": lambda face, rng, geom: render_facemask(face, rng, "photo", geometry=geom),
    "scarf": render_scarf,
    "sunglasses": render_sunglasses,
    "hand": render_hand,
    "freeform": render_freeform,
}


@dataclass(frozen=True)
class Framing:
    """Where a face lands in the output frame: ``size`` (width, height), face box width in pixels and the
    face box centre as fractions of the frame (a webcam face: large, a little above the middle)."""

    size: tuple[int, int] = (640, 480)
    face_width_px: float = 200.0
    centre: tuple[float, float] = (0.5, 0.46)

    def __post_init__(self) -> None:
        w, h = self.size
        if w <= 0 or h <= 0 or w % 2 or h % 2:
            raise ValueError(f"size must be positive even (width, height), got {self.size}")
        if not 16 <= self.face_width_px <= w:
            raise ValueError(f"face_width_px must be in [16, {w}], got {self.face_width_px}")
        if not all(0.0 < c < 1.0 for c in self.centre):
            raise ValueError(f"centre must be fractions in (0, 1), got {self.centre}")


def window_matrix(
    image_hw: tuple[int, int],
    point_xy: tuple[float, float],
    scale: float,
    size: tuple[int, int],
    at: tuple[float, float],
) -> np.ndarray:
    """(2, 3) float64 map (scale ``scale``, then shift) from source pixels to a ``size`` (width, height)
    frame that puts source ``point_xy`` at fraction ``at`` of the frame.

    The window is shifted to stay inside the source where the source is large enough, so a border fill
    is only needed when the photo is smaller than the window.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    offsets = []
    for centre, frac, out, src in ((point_xy[0], at[0], size[0], image_hw[1]),
                                    (point_xy[1], at[1], size[1], image_hw[0])):  # fmt: skip
        span = out / scale  # window extent in source pixels
        start = centre - frac * span
        start = min(max(start, 0.0), src - span) if src >= span else (src - span) / 2
        offsets.append(-start * scale)
    return np.array([[scale, 0.0, offsets[0]], [0.0, scale, offsets[1]]], dtype=np.float64)


def framing_matrix(image_hw: tuple[int, int], box_xywh: np.ndarray, framing: Framing) -> np.ndarray:
    """Source pixels -> output frame, scaled so the face box is ``framing.face_width_px`` wide."""
    x, y, w, h = (float(v) for v in box_xywh)
    if w <= 0 or h <= 0:
        raise ValueError(f"face box must have a positive size, got {box_xywh}")
    scale = framing.face_width_px / w
    return window_matrix(image_hw, (x + w / 2, y + h / 2), scale, framing.size, framing.centre)


def cover_matrix(
    image_hw: tuple[int, int], point_xy: tuple[float, float], size: tuple[int, int]
) -> np.ndarray:
    """Source pixels -> output frame: the smallest scale that fills the frame (a crop, never a border),
    centred on ``point_xy`` as far as the source allows (a 16:9 video cut to 4:3 around the face)."""
    scale = max(size[0] / image_hw[1], size[1] / image_hw[0])
    return window_matrix(image_hw, point_xy, scale, size, (0.5, 0.5))


def compose(image_bgr_u8: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp a source photo into a (height, width) frame; outside the photo: replicated edge pixels."""
    return cv2.warpAffine(
        image_bgr_u8, matrix, size, flags=cv2.INTER_CUBIC if matrix[0, 0] > 1 else cv2.INTER_AREA,
        borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip


def camera_motion(t: int, period: int, size: tuple[int, int], phase: float = 0.0) -> np.ndarray:
    """(2, 3) float64 small hand-held camera motion at frame ``t``: up to +-6/+-4 px shift, +-1.5 deg
    roll and +-3 % zoom about the frame centre, smooth sinusoids of ``period`` frames."""
    a = 2 * math.pi * t / max(period, 1) + phase
    dx, dy = 6.0 * math.sin(a), 4.0 * math.sin(1.3 * a + 1.0)
    angle, zoom = 1.5 * math.sin(0.7 * a + 2.0), 1.0 + 0.03 * math.sin(0.9 * a + 0.5)
    m = np.asarray(cv2.getRotationMatrix2D((size[0] / 2, size[1] / 2), angle, zoom), dtype=np.float64)
    m[:, 2] += np.array([dx, dy])
    return m


def then(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The affine map ``second . first`` (apply ``first``, then ``second``), both (2, 3)."""
    a = np.vstack([first, [0.0, 0.0, 1.0]])
    b = np.vstack([second, [0.0, 0.0, 1.0]])
    return (b @ a)[:2]


def map_points(matrix: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]


class FaceFinder:
    """YuNet at up to 1024 px (offline: precise landmarks); picks the face nearest a point."""

    def __init__(self) -> None:
        self._detector = YuNetDetector(FaceDetectorConfig(max_side=1024))

    def nearest(self, bgr_u8: np.ndarray, point_xy: tuple[float, float]) -> FaceDetection | None:
        faces = self._detector.detect(bgr_u8)
        if not faces:
            return None

        def distance(f: FaceDetection) -> float:
            cx, cy = f.box[0] + f.box[2] / 2, f.box[1] + f.box[3] / 2
            return float(math.hypot(cx - point_xy[0], cy - point_xy[1]))

        return min(faces, key=distance)


def face_matrix(landmarks_xy: np.ndarray) -> np.ndarray:
    """(2, 3) float64 frame -> 256 px canonical crop of the face with these landmarks."""
    return estimate_alignment(landmarks_xy, FACE_CROP).matrix


def occlude(
    frame_bgr_u8: np.ndarray, landmarks_xy: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paint occluder ``kind`` on the face: (masked (H, W, 3) uint8 BGR, alpha (H, W) float32 in [0, 1]).

    Pixels with alpha 0 are bit-identical to the input. Deterministic given ``rng``'s state.
    """
    if kind not in OCCLUDERS:
        raise ValueError(f"occluder kind must be one of {tuple(OCCLUDERS)}, got {kind!r}")
    h, w = frame_bgr_u8.shape[:2]
    al = estimate_alignment(landmarks_xy, RENDER_CROP)
    crop_rgb = np.ascontiguousarray(warp_to_crop(frame_bgr_u8, al)[..., ::-1])
    geom = FaceGeometry(RENDER_CROP, landmarks=al.to_crop(landmarks_xy))
    occ = OCCLUDERS[kind](crop_rgb, rng, geom)
    inv = al.inverse
    occ_bgr = cv2.warpAffine(
        np.ascontiguousarray(occ.image_rgb_u8[..., ::-1]), inv, (w, h), flags=cv2.INTER_AREA
    )
    alpha = cv2.warpAffine(occ.mask_f32, inv, (w, h), flags=cv2.INTER_LINEAR)
    alpha = np.clip(alpha, 0.0, 1.0).astype(np.float32)
    a3 = alpha[..., None]
    blended = frame_bgr_u8.astype(np.float32) * (1.0 - a3) + occ_bgr.astype(np.float32) * a3
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[alpha == 0] = frame_bgr_u8[alpha == 0]  # exactly the input where nothing was painted
    return out, alpha
