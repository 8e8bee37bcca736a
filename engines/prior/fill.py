"""Smooth hole filling by push-pull (a multiscale normalised convolution), used by the fit and the blend."""

from __future__ import annotations

import cv2
import numpy as np


def push_pull_fill(values: np.ndarray, weight: np.ndarray, *, min_size: int = 2) -> np.ndarray:
    """Fill where ``weight`` is 0 with a smooth interpolation of the weighted ``values``.

    ``values``: (H, W) or (H, W, C) float32; ``weight``: (H, W) float32 in [0, 1]. Returns float32 of the
    shape of ``values``: where weight is 1 the value is kept, elsewhere it blends towards the coarser
    levels' weighted average (a cheap stand-in for a membrane / Poisson interpolation).
    """
    v = np.asarray(values, dtype=np.float32)
    w = np.asarray(weight, dtype=np.float32)
    if w.shape != v.shape[:2]:
        raise ValueError(f"weight must be (H, W) = {v.shape[:2]}, got {w.shape}")
    squeeze = v.ndim == 2
    if squeeze:
        v = v[..., None]
    w = np.clip(w, 0.0, 1.0)
    levels: list[tuple[np.ndarray, np.ndarray]] = []
    cur_v: np.ndarray = v * w[..., None]
    cur_w: np.ndarray = w
    while True:
        levels.append((cur_v, cur_w))
        h, wd = cur_w.shape
        if min(h, wd) <= min_size:
            break
        size = (max(1, wd // 2), max(1, h // 2))
        cur_v = cv2.resize(cur_v, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        cur_w = cv2.resize(cur_w, size, interpolation=cv2.INTER_AREA)
    sum_v, sum_w = levels[-1]
    filled = sum_v / np.maximum(sum_w, 1e-6)[..., None]
    if float(sum_w.max()) <= 0.0:
        filled = np.zeros_like(filled)
    for lv, lw in reversed(levels[:-1]):
        h, wd = lw.shape
        up = cv2.resize(filled, (wd, h), interpolation=cv2.INTER_LINEAR).reshape(h, wd, -1)
        # Normalised value at this level, then mixed with the coarser fill by this level's confidence.
        own = lv / np.maximum(lw, 1e-6)[..., None]
        conf = np.clip(lw * 4.0, 0.0, 1.0)[..., None]  # a pixel with 1/4 of its support known is trusted
        filled = conf * own + (1.0 - conf) * up
    out = w[..., None] * v + (1.0 - w[..., None]) * filled
    return out[..., 0] if squeeze else out
