"""Paste a restored face crop back into the frame, touching only pixels inside the warped mask.

Only the region of interest (the bounding box of the mask's support mapped into the frame) is warped
and blended, so the cost follows the occluded area, not the frame size; only the crop window under the
mask is converted to bytes. Restored colour and alpha travel as one BGRA uint8 image through ONE warp
(OpenCV's 4-channel byte warp is vectorised; its 3-channel one and replicate borders are several times
slower), and the blend runs on bytes. Pixels whose warped alpha is 0 keep their input bytes exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from engines.crop import Alignment
from stream.restore.smoother import gaussian_feather


@dataclass(frozen=True)
class WarpedFace:
    """A restored face warped into frame pixels, restricted to its region of interest.

    ``roi``: (rows, cols) slices of the frame; ``alpha_u8``: (h, w) uint8, 255 = fully restored, 0 =
    untouched (every frame pixel outside ``roi`` is 0 too); ``restored_bgr_u8``: (h, w, 3) uint8 BGR.
    """

    roi: tuple[slice, slice]
    alpha_u8: np.ndarray
    restored_bgr_u8: np.ndarray


def paste_roi(
    frame_hw: tuple[int, int], extent: np.ndarray, alignment: Alignment, feather_px: int
) -> tuple[int, int, int, int] | None:
    """The frame ROI (x0, y0, x1, y1) :func:`warp_face` touches for a mask whose support spans rows
    ``extent[0]..extent[1]`` and columns ``extent[2]..extent[3]`` of the crop; None off the frame."""
    return _window_roi(frame_hw, _mask_window(extent, alignment.crop_size), alignment, feather_px)


def _mask_window(extent: np.ndarray, crop_size: int) -> tuple[int, int, int, int]:
    """(cx0, cy0, cx1, cy1): the mask's support plus the one pixel bilinear sampling reads beyond it."""
    r0, r1, c0, c1 = (int(v) for v in extent)
    return max(0, c0 - 1), max(0, r0 - 1), min(crop_size, c1 + 2), min(crop_size, r1 + 2)


def _window_roi(
    frame_hw: tuple[int, int], window: tuple[int, int, int, int], alignment: Alignment, feather_px: int
) -> tuple[int, int, int, int] | None:
    """The crop window mapped into the frame, widened by the bilinear pixel and the feather, clipped."""
    cx0, cy0, cx1, cy1 = window
    img = alignment.to_image(np.array([[cx0, cy0], [cx1, cy0], [cx0, cy1], [cx1, cy1]], dtype=np.float64))
    margin = 1 + feather_px
    h, w = frame_hw
    x0 = max(0, math.floor(img[:, 0].min()) - margin)
    y0 = max(0, math.floor(img[:, 1].min()) - margin)
    x1 = min(w, math.ceil(img[:, 0].max()) + margin + 1)
    y1 = min(h, math.ceil(img[:, 1].max()) + margin + 1)
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


def warp_face(
    frame_hw: tuple[int, int],
    restored_crop_rgb01: np.ndarray,
    mask_crop_f32: np.ndarray,
    alignment: Alignment,
    feather_px: int = 0,
) -> WarpedFace | None:
    """Warp ``restored_crop_rgb01`` (3, S, S) float RGB [0, 1] and its alpha ``mask_crop_f32`` (S, S)
    float [0, 1] back into a frame of size ``frame_hw`` through ``alignment``; alpha is then feathered
    by ``feather_px`` frame pixels (Gaussian). ``None`` when the mask is empty or lands off the frame."""
    s = alignment.crop_size
    crop = np.asarray(restored_crop_rgb01)
    if crop.shape != (3, s, s) or not np.issubdtype(crop.dtype, np.floating):
        raise ValueError(
            f"restored crop must be (3, {s}, {s}) float RGB in [0, 1], got {crop.shape} {crop.dtype}"
        )
    mask = np.asarray(mask_crop_f32)
    if mask.shape != (s, s) or not np.issubdtype(mask.dtype, np.floating):
        raise ValueError(f"mask must be ({s}, {s}) float32 for this alignment, got {mask.shape} {mask.dtype}")
    if feather_px < 0:
        raise ValueError(f"feather_px must be >= 0, got {feather_px}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    crop_window = _mask_window(np.array([rows[0], rows[-1], cols[0], cols[-1]]), s)
    roi = _window_roi(frame_hw, crop_window, alignment, feather_px)
    if roi is None:
        return None
    cx0, cy0, cx1, cy1 = crop_window
    x0, y0, x1, y1 = roi
    window = np.maximum(crop[:, cy0:cy1, cx0:cx1], 0.0).astype(np.float32, copy=False)
    bgra = cv2.convertScaleAbs(
        cv2.merge((window[2], window[1], window[0], mask[cy0:cy1, cx0:cx1].astype(np.float32, copy=False))),
        alpha=255.0,
    )
    # A replicated 1-pixel frame keeps colours right where the mask touches the crop's own edge, with
    # alpha 0 there (beyond the crop the mask is 0); it lets the warp use the fast constant border.
    bgra = cv2.copyMakeBorder(bgra, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    bgra[0, :, 3] = bgra[-1, :, 3] = 0
    bgra[:, 0, 3] = bgra[:, -1, 3] = 0
    # ROI pixel (u, v) is image pixel (u + x0, v + y0) -> crop pixel -> padded-window pixel.
    matrix = alignment.matrix.copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64) - (cx0 - 1, cy0 - 1)
    warped = cv2.warpAffine(
        bgra,
        matrix,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    alpha = cv2.extractChannel(warped, 3)
    if feather_px > 0:
        k, sigma = gaussian_feather(feather_px)
        alpha = cv2.GaussianBlur(alpha, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
    if not alpha.any():
        return None
    return WarpedFace(
        roi=(slice(y0, y1), slice(x0, x1)),
        alpha_u8=alpha,
        restored_bgr_u8=cv2.cvtColor(warped, cv2.COLOR_BGRA2BGR),
    )


def paste_back(
    frame_bgr_u8: np.ndarray,
    restored_crop_rgb01: np.ndarray,
    mask_crop_f32: np.ndarray,
    alignment: Alignment,
    feather_px: int = 0,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Blend ``restored_crop_rgb01`` (3, S, S) float RGB in [0, 1] into ``frame_bgr_u8`` (H, W, 3)
    uint8 BGR with alpha = ``mask_crop_f32`` (S, S) in [0, 1] warped back through ``alignment``.

    Writes into ``out`` (which may be ``frame_bgr_u8`` itself; pass the same ``out`` to paste several
    faces) or into a copy of the frame, blending over what ``out`` already holds; returns the written
    frame. Pixels whose warped alpha (:func:`warp_face`) is 0 keep their bytes.
    """
    if frame_bgr_u8.ndim != 3 or frame_bgr_u8.shape[2] != 3 or frame_bgr_u8.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8 BGR, got {frame_bgr_u8.shape} {frame_bgr_u8.dtype}")
    if out is None:
        out = frame_bgr_u8.copy()
    elif out.shape != frame_bgr_u8.shape or out.dtype != np.uint8:
        raise ValueError(f"out must match the frame {frame_bgr_u8.shape} uint8, got {out.shape} {out.dtype}")
    face = warp_face(frame_bgr_u8.shape[:2], restored_crop_rgb01, mask_crop_f32, alignment, feather_px)
    if face is None:
        return out
    a = face.alpha_u8
    a3 = cv2.merge((a, a, a))
    # Blend over ``out``: faces pasted earlier into the same frame stay underneath where regions overlap.
    # Each product is rounded on its own: a == 0 gives 0 + base*255/255 == base exactly (tests check it
    # bit for bit), a == 255 gives the restored pixel; in between the error is at most 1 level.
    base = np.ascontiguousarray(out[face.roi])
    out[face.roi] = cv2.add(
        cv2.multiply(face.restored_bgr_u8, a3, scale=1.0 / 255.0),
        cv2.multiply(base, cv2.bitwise_not(a3), scale=1.0 / 255.0),
    )
    return out
