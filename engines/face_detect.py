"""Face detection with five landmarks: YuNet (OpenCV Zoo, Apache-2.0) through ``cv2.FaceDetectorYN``.

Why YuNet: its model ships inside this repository (models/yunet, 120 kB int8), runs offline through
OpenCV without extra runtimes, gives the five landmarks the canonical alignment needs, and finds faces
that wear face-masks. The detector runs on a downscaled copy of the frame (``max_side``) because its
cost grows with pixels while faces in webcam video are large.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.assets import models_dir
from engines.errors import ModelLoadError

DEFAULT_YUNET = models_dir() / "yunet" / "face_detection_yunet_2023mar_int8bq.onnx"


@dataclass(frozen=True)
class FaceDetection:
    """One face in image pixel coordinates.

    ``box``: (4,) float32 x, y, w, h. ``landmarks``: (5, 2) float32 in template order (left eye, right
    eye, nose, left mouth corner, right mouth corner, as seen in the image). ``score`` in [0, 1].
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    def __post_init__(self) -> None:
        if self.box.shape != (4,) or self.landmarks.shape != (5, 2):
            raise ValueError(
                f"box must be (4,) and landmarks (5, 2), got {self.box.shape} and {self.landmarks.shape}"
            )


@dataclass(frozen=True)
class FaceDetectorConfig:
    model_path: Path = DEFAULT_YUNET
    score_threshold: float = 0.6
    nms_threshold: float = 0.3
    max_side: int = 320
    max_faces: int = 8

    def __post_init__(self) -> None:
        if not 0.0 < self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {self.score_threshold}")
        if self.max_side < 64:
            raise ValueError(f"max_side must be >= 64, got {self.max_side}")
        if self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {self.max_faces}")


class YuNetDetector:
    """Detects faces in ``bgr_u8`` (H, W, 3) uint8 frames; not thread-safe (one per thread)."""

    def __init__(self, config: FaceDetectorConfig | None = None) -> None:
        self.config = config or FaceDetectorConfig()
        path = Path(self.config.model_path)
        if not path.is_file():
            raise ModelLoadError(f"face detector model not found: {path}")
        # OpenCV 5 warns on every create that the new DNN engine ignores the target; silence only that.
        previous = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(path), "", (320, 320), self.config.score_threshold, self.config.nms_threshold, 5000
            )
        except cv2.error as exc:  # corrupt or wrong file
            raise ModelLoadError(f"cannot load face detector {path}: {exc}") from exc
        finally:
            cv2.utils.logging.setLogLevel(previous)
        self._input_size: tuple[int, int] | None = None

    def detect(self, bgr_u8: np.ndarray) -> list[FaceDetection]:
        """Faces sorted by area (largest first), at most ``config.max_faces``."""
        if bgr_u8.ndim != 3 or bgr_u8.shape[2] != 3 or bgr_u8.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8 BGR, got {bgr_u8.shape} {bgr_u8.dtype}")
        h, w = bgr_u8.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        small = bgr_u8
        if scale < 1.0:
            small = cv2.resize(
                bgr_u8, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        size = (small.shape[1], small.shape[0])
        if size != self._input_size:
            self._net.setInputSize(size)
            self._input_size = size
        _, raw = self._net.detect(small)
        if raw is None or len(raw) == 0:
            return []
        faces: list[FaceDetection] = []
        for row in np.asarray(raw, dtype=np.float32):
            box = row[0:4] / scale
            lms = row[4:14].reshape(5, 2) / scale
            faces.append(
                FaceDetection(
                    box=box.astype(np.float32), landmarks=lms.astype(np.float32), score=float(row[14])
                )
            )
        faces.sort(key=lambda f: -float(f.box[2] * f.box[3]))
        return faces[: self.config.max_faces]
