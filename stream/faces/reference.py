"""A reference photo of the user's bare face (``--reference``), aligned to the canonical crop the way the
stream aligns faces, for the face prior's identity memory."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engines.crop import estimate_alignment, warp_to_crop
from engines.face_detect import FaceDetectorConfig, YuNetDetector


def reference_crop(path: Path, crop_size: int) -> np.ndarray:
    """(S, S, 3) uint8 RGB canonical crop of the largest face in the image at ``path``.

    Raises FileNotFoundError for a missing file and ValueError for an unreadable image or one without a
    face (one-line messages naming the file).
    """
    if not path.is_file():
        raise FileNotFoundError(f"reference photo not found: {path}")
    bgr_u8 = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr_u8 is None:
        raise ValueError(f"reference photo is not a readable image: {path}")
    # A still photo: detect at a high resolution, as the training sets are built.
    faces = YuNetDetector(FaceDetectorConfig(max_side=1024)).detect(bgr_u8)
    if not faces:
        raise ValueError(f"no face found in the reference photo {path}")
    face = max(faces, key=lambda f: float(f.box[2] * f.box[3]))
    crop_bgr = warp_to_crop(bgr_u8, estimate_alignment(face.landmarks, crop_size))
    return np.ascontiguousarray(crop_bgr[..., ::-1])
