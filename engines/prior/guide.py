"""The generator's third input: the face prior drawn into the hole, computed the same way in training and
at run time (a profile with ``prior_input`` was trained on exactly what this returns).

``guide = blend_prior(crop, render_prior(fit), hole)``: the visible pixels as they are, the fitted prior
inside the hole with the seam corrected (no colour step at the hole's edge). Where the face mesh finds no
face in the crop there is no fit, and the hole is filled smoothly from its surroundings (push-pull), so
the generator always gets an image of the same kind.
"""

from __future__ import annotations

import numpy as np

from engines.errors import ShapeError
from engines.prior.fill import push_pull_fill
from engines.prior.fit import PriorFit, PriorFitter, TexturePrior
from engines.prior.render import blend_prior, render_prior


def smooth_fill(crop_rgb01: np.ndarray, hole_f32: np.ndarray) -> np.ndarray:
    """(S, S, 3) float32 rgb01: the crop with the hole filled from its surroundings (no face model)."""
    visible = (hole_f32 < 0.5).astype(np.float32)
    filled = push_pull_fill(crop_rgb01.astype(np.float32), visible)
    r = np.clip(hole_f32, 0.0, 1.0)[..., None]
    return np.clip(r * filled + (1.0 - r) * crop_rgb01, 0.0, 1.0).astype(np.float32)


def guide_image(
    fitter: PriorFitter,
    crop_rgb_u8: np.ndarray,
    hole_f32: np.ndarray,
    landmarks_px: np.ndarray | None,
    *,
    texture_prior: TexturePrior | None = None,
    fit: PriorFit | None = None,
) -> np.ndarray:
    """(S, S, 3) float32 rgb01 guide for one canonical crop.

    ``crop_rgb_u8``: (S, S, 3) uint8 RGB (the occluded crop); ``hole_f32``: (S, S) float32 in [0, 1], 1 =
    to restore; ``landmarks_px``: the face mesh of this crop in crop pixels, or None when it found no face.
    ``fit`` (optional) is a fit already made for this crop (e.g. smoothed over a track) and is used
    instead of fitting again.
    """
    if crop_rgb_u8.ndim != 3 or crop_rgb_u8.shape[2] != 3 or crop_rgb_u8.dtype != np.uint8:
        raise ShapeError(f"crop must be (S, S, 3) uint8 RGB, got {crop_rgb_u8.shape} {crop_rgb_u8.dtype}")
    s = crop_rgb_u8.shape[0]
    if hole_f32.shape != (s, s):
        raise ShapeError(f"hole must be ({s}, {s}) float32 in [0, 1], got {hole_f32.shape}")
    hole = hole_f32.astype(np.float32, copy=False)
    crop_rgb01 = crop_rgb_u8.astype(np.float32) / 255.0
    if fit is None:
        if landmarks_px is None:
            return smooth_fill(crop_rgb01, hole)
        fit = fitter.fit(crop_rgb_u8, hole, landmarks_px, texture_prior=texture_prior)
    return blend_prior(crop_rgb01, render_prior(fitter, fit, s), hole)
