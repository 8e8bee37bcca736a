"""The canonical face crop: the one alignment every network is trained on and run with.

Training (dataset building, occlusion synthesis) and the stream pipeline both call
:func:`estimate_alignment` and :func:`warp_to_crop`, so a face reaches the networks in exactly the
same geometry in both places. The template is the ArcFace 112x112 five-point template enlarged 1.5x
about its centre (eye-to-mouth distance ~0.24 of the side, forehead and chin inside the crop), scaled
to the crop size of the model profile.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# ArcFace five-point template in a 112x112 crop: left eye, right eye, nose tip, left and right mouth
# corners (image left/right, i.e. the subject's right eye comes first). OpenCV's
# FaceRecognizerSF.alignCrop uses the same points. Read-only: it is shared module state.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_112.flags.writeable = False
# Why 1.5: the ArcFace crop cuts the chin and forehead, and a face-mask reaches below the chin.
_ENLARGE = 1.5


def template(crop_size: int) -> np.ndarray:
    """Five canonical landmarks (5, 2) float64 in pixel coordinates of a ``crop_size`` square crop."""
    if crop_size < 16:
        raise ValueError(f"crop_size must be >= 16 pixels, got {crop_size}")
    centred = (ARCFACE_112 - 56.0) / _ENLARGE + 56.0
    return centred * (crop_size / 112.0)


@dataclass(frozen=True)
class Alignment:
    """A similarity transform from image pixels to crop pixels.

    ``matrix`` is (2, 3) float64 mapping image (x, y) to crop (x, y); ``inverse`` maps back.
    """

    matrix: np.ndarray
    crop_size: int

    def __post_init__(self) -> None:
        if self.matrix.shape != (2, 3):
            raise ValueError(f"alignment matrix must be (2, 3), got {self.matrix.shape}")

    @property
    def inverse(self) -> np.ndarray:
        return cv2.invertAffineTransform(self.matrix)

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def to_crop(self, points_xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) image points into crop coordinates."""
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        return pts @ self.matrix[:, :2].T + self.matrix[:, 2]

    def to_image(self, points_xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) crop points back into image coordinates."""
        inv = self.inverse
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        return pts @ inv[:, :2].T + inv[:, 2]


def estimate_alignment(landmarks_xy: np.ndarray, crop_size: int) -> Alignment:
    """Least-squares similarity transform (Umeyama, no reflection) from 5 landmarks to the template.

    ``landmarks_xy``: (5, 2) image pixel coordinates in template order (left eye, right eye, nose,
    left mouth corner, right mouth corner as seen in the image).
    """
    src = np.asarray(landmarks_xy, dtype=np.float64)
    if src.shape != (5, 2) or not np.all(np.isfinite(src)):
        raise ValueError(f"landmarks must be finite (5, 2) pixel coordinates, got {src.shape}")
    dst = template(crop_size)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var < 1e-6:
        raise ValueError("landmarks are degenerate (all at one point)")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    matrix = np.zeros((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return Alignment(matrix=matrix, crop_size=crop_size)


def warp_to_crop(image: np.ndarray, alignment: Alignment, *, border_value: int = 0) -> np.ndarray:
    """Warp an (H, W, C) or (H, W) image into the (S, S[, C]) canonical crop (bilinear, same dtype).

    Pixels that fall outside the source image are filled with ``border_value``.
    """
    s = alignment.crop_size
    return cv2.warpAffine(
        image,
        alignment.matrix,
        (s, s),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )


def crop_valid_mask(image_hw: tuple[int, int], alignment: Alignment) -> np.ndarray:
    """(S, S) float32 in {0, 1}: which crop pixels come from inside the image (1) or the border (0)."""
    ones = np.ones(image_hw, dtype=np.float32)
    return warp_to_crop(ones, alignment)
