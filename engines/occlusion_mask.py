"""Occlusion mask from a visible-face segmentation and a whole-face region (paper 003, Eq. 1).

``occlusion = region x (1 - visible)``, binarised and cleaned: the region is eroded a little first
(the segmenter and the face mesh disagree by a pixel or two along the face outline, and that sliver is
not an occluder), then components smaller than ``min_area`` of the region are dropped, so a bare face
yields an empty mask and stays untouched. Pure numpy + OpenCV, (S, S) arrays of one canonical crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class OcclusionMaskConfig:
    """``threshold``: visible-face probability below which a region pixel counts as occluded.
    ``erode``: region erosion as a fraction of the crop side. ``min_area``: smallest kept occluded
    component as a fraction of the region's area. ``grow``: dilation of the result (fraction of the side),
    to cover the antialiased rim of an occluder. The defaults (about 1 px each at 128 px) measured best
    on the held-out low-resolution people (benchmarks/masks.py): no bare-face pixel flagged, and +0.04
    face-mask IoU over a 1.5 px erosion without growth."""

    threshold: float = 0.5
    erode: float = 0.006
    min_area: float = 0.01
    grow: float = 0.008

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        for name in ("erode", "min_area", "grow"):
            value = getattr(self, name)
            if not 0.0 <= value < 0.5:
                raise ValueError(f"{name} must be in [0, 0.5), got {value}")


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def occlusion_mask(
    visible_prob: np.ndarray, region: np.ndarray, config: OcclusionMaskConfig | None = None
) -> np.ndarray:
    """(S, S) uint8 {0, 1} occlusion mask of one crop.

    ``visible_prob``: (S, S) float32 in [0, 1], the segmenter's visible-face probability (the ``face``
    output of the exported segmenter, channel 0). ``region``: (S, S) whole-face region, nonzero inside
    (the face-mesh oval of the same crop).
    """
    cfg = config or OcclusionMaskConfig()
    vis = np.asarray(visible_prob)
    reg = np.asarray(region)
    if vis.ndim != 2 or vis.shape[0] != vis.shape[1] or reg.shape != vis.shape:
        raise ValueError(f"visible_prob and region must both be (S, S), got {vis.shape} and {reg.shape}")
    s = vis.shape[0]
    inside = (reg > 0.5).astype(np.uint8)
    radius = int(round(cfg.erode * s))
    if radius > 0:
        inside = np.asarray(cv2.erode(inside, _disc(radius)), np.uint8)
    occ = (inside > 0) & (vis < cfg.threshold)
    out = occ.astype(np.uint8)
    area = float(inside.sum())
    if cfg.min_area > 0 and out.any() and area > 0:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(out, connectivity=8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < cfg.min_area * area) + 1
        if len(small):
            out[np.isin(labels, small)] = 0
    grow = int(round(cfg.grow * s))
    if grow > 0 and out.any():
        out = np.asarray(cv2.dilate(out, _disc(grow)), np.uint8)
    return out


def segment_occlusions(
    engine: Any, image_rgb01: np.ndarray, config: OcclusionMaskConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run a segmenter engine (role "segmenter") on a batch of canonical crops and apply Eq. 1.

    ``image_rgb01``: (N, 3, S, S) float32 RGB in [0, 1] (host numpy). Returns (occlusion (N, S, S) uint8
    {0, 1}, visible-face share of the region (N,) float32). The region is the network's own learned
    whole-face output; pass a face-mesh region to :func:`occlusion_mask` directly to use that instead.
    """
    if engine.info.role != "segmenter":
        raise ValueError(f"engine must be a segmenter, got role {engine.info.role!r}")
    out = engine.run({"image": image_rgb01})
    face, region = np.asarray(out["face"])[:, 0], np.asarray(out["region"])[:, 0]
    masks = np.stack([occlusion_mask(f, r, config) for f, r in zip(face, region, strict=True)])
    inside = (region > 0.5).reshape(len(region), -1)
    visible = ((face > 0.5).reshape(len(face), -1) & inside).sum(1) / np.maximum(inside.sum(1), 1)
    return masks.astype(np.uint8), visible.astype(np.float32)
