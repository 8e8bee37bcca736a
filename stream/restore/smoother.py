"""Temporal smoothing of occlusion masks, per tracked face, in aligned crop coordinates, past frames only.

Mask flicker is the top visual complaint of live face tools. The per-frame occlusion probability is
noisy; thresholding it directly makes the restored region boil at its edges. Per pixel this module runs
a motion-adaptive EMA (One-Euro-like: the weight of the new frame grows with a low-passed change, so
noise is averaged away while a real occluder moving in is followed within a frame or two), then
hysteresis (a pixel turns on above ``on_threshold`` and off only below ``off_threshold``), a small
opening against specks, a dilation (the occluder's rim must be restored too) and a feathered edge for
compositing. Working in crop coordinates means a moving head does not look like a changing mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import cv2
import numpy as np


@dataclass(frozen=True)
class SmootherConfig:
    """Pixel sizes are crop pixels (the network's crop, e.g. 256)."""

    spatial_px: int = 1  # box-blur radius applied to each frame's probability before the temporal filter
    alpha_min: float = 0.2  # EMA weight of the new frame where the mask is stable
    alpha_max: float = 0.9  # ... where it changes consistently (an occluder moving)
    change_low: float = 0.1  # |low-passed change| below which a pixel counts as stable
    change_high: float = 0.4  # ... above which it gets alpha_max
    change_alpha: float = 0.5  # low-pass weight of the change signal: zero-mean noise cancels out
    on_threshold: float = 0.6
    off_threshold: float = 0.4
    open_px: int = 1
    dilate_px: int = 3
    feather_px: int = 6

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha_min <= self.alpha_max <= 1.0:
            raise ValueError(f"need 0 < alpha_min <= alpha_max <= 1, got {self.alpha_min}, {self.alpha_max}")
        if not 0.0 <= self.change_low < self.change_high:
            raise ValueError(f"need 0 <= change_low < change_high, got {self.change_low}, {self.change_high}")
        if not 0.0 < self.change_alpha <= 1.0:
            raise ValueError(f"change_alpha must be in (0, 1], got {self.change_alpha}")
        if not 0.0 < self.off_threshold <= self.on_threshold < 1.0:
            raise ValueError(
                f"need 0 < off_threshold <= on_threshold < 1, got {self.off_threshold}, {self.on_threshold}"
            )
        for name in ("spatial_px", "open_px", "dilate_px", "feather_px"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 pixels, got {getattr(self, name)}")


def disk(radius: int) -> np.ndarray | None:
    """OpenCV's elliptic structuring element of ``radius`` pixels, (2r+1, 2r+1) uint8; None for 0."""
    if radius <= 0:
        return None
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def gaussian_feather(feather_px: int) -> tuple[int, float]:
    """(ksize, sigma) of the Gaussian blur that feathers a mask edge over ``feather_px`` (>= 1) pixels."""
    if feather_px < 1:
        raise ValueError(f"feather_px must be >= 1 to feather, got {feather_px}")
    return 2 * feather_px + 1, feather_px / 2.0


StateT = TypeVar("StateT")


class PerTrackState(Generic[StateT]):
    """State kept per track id, dropped when its track ends: the bookkeeping of the mask smoothers."""

    def __init__(self) -> None:
        self._states: dict[int, StateT] = {}

    @property
    def track_ids(self) -> frozenset[int]:
        return frozenset(self._states)

    def forget(self, track_id: int) -> None:
        """Drop the state of a track that ended (unknown ids are ignored)."""
        self._states.pop(track_id, None)

    def retain(self, track_ids: Iterable[int]) -> None:
        """Drop the state of every track not in ``track_ids``."""
        keep = set(track_ids)
        for tid in [t for t in self._states if t not in keep]:
            del self._states[tid]

    def reset(self) -> None:
        self._states.clear()


class _MaskState:
    __slots__ = ("ema", "change", "on")

    def __init__(self, prob: np.ndarray) -> None:
        self.ema = prob.copy()
        self.change = np.zeros_like(prob)
        self.on = np.zeros(prob.shape, dtype=bool)


class MaskSmoother(PerTrackState[_MaskState]):
    """Per-track causal mask smoothing. Stateful, not thread-safe: one per video, one thread."""

    def __init__(self, config: SmootherConfig | None = None) -> None:
        super().__init__()
        self.config = config or SmootherConfig()
        self._open_kernel = disk(self.config.open_px)
        self._dilate_kernel = disk(self.config.dilate_px)

    def update(self, track_id: int, prob_f32: np.ndarray) -> np.ndarray:
        """Feed this frame's occlusion probability (S, S) float32 in [0, 1] of one track; returns the
        smoothed, feathered mask (S, S) float32 in [0, 1]: 1 on the (dilated) occluded region, falling
        to 0 within ``feather_px`` outside it, exactly 0 elsewhere."""
        prob = np.asarray(prob_f32)
        if prob.ndim != 2 or prob.shape[0] != prob.shape[1] or not np.issubdtype(prob.dtype, np.floating):
            raise ValueError(
                f"mask probability must be (S, S) float in [0, 1], got {prob.shape} {prob.dtype}"
            )
        prob = prob.astype(np.float32, copy=False)
        cfg = self.config
        if cfg.spatial_px > 0:
            # Per-pixel network noise is largely independent between neighbours; a tiny box blur cuts it
            # ~3x before the temporal filter, so that filter can stay fast for real changes.
            k = 2 * cfg.spatial_px + 1
            prob = cv2.blur(prob, (k, k), borderType=cv2.BORDER_REPLICATE)
        state = self._states.get(track_id)
        if state is None or state.ema.shape != prob.shape:
            state = self._states[track_id] = _MaskState(prob)
        else:
            # In place on (S, S) float32 buffers: this runs per face per frame.
            delta = prob - state.ema
            step = delta - state.change
            step *= cfg.change_alpha
            state.change += step
            alpha = np.abs(state.change, out=step)
            alpha -= cfg.change_low
            alpha *= (cfg.alpha_max - cfg.alpha_min) / (cfg.change_high - cfg.change_low)
            np.clip(alpha, 0.0, cfg.alpha_max - cfg.alpha_min, out=alpha)
            alpha += cfg.alpha_min
            alpha *= delta
            state.ema += alpha
        # Hysteresis: on above on_threshold, off below off_threshold, otherwise keep the last decision.
        keep = state.ema >= cfg.off_threshold
        keep &= state.on
        on = state.ema > cfg.on_threshold
        on |= keep
        state.on = on
        return self._shape(on)

    def _shape(self, on: np.ndarray) -> np.ndarray:
        cfg = self.config
        if not on.any():
            return np.zeros(on.shape, dtype=np.float32)
        # uint8 0/255 from here on: OpenCV's morphology and blur are several times faster on bytes.
        core: np.ndarray = on.view(np.uint8) * np.uint8(255)
        if self._open_kernel is not None:
            core = cv2.morphologyEx(core, cv2.MORPH_OPEN, self._open_kernel)
        if self._dilate_kernel is not None:
            core = cv2.dilate(core, self._dilate_kernel)
        if cfg.feather_px > 0:
            f = cfg.feather_px
            rows = np.flatnonzero(core.any(axis=1))
            if rows.size == 0:  # the opening removed everything
                return np.zeros(on.shape, dtype=np.float32)
            cols = np.flatnonzero(core.any(axis=0))
            # Blur only the window around the core (the blur is the costliest step and the mask usually
            # covers a fraction of the crop). The blurred core is ~128 on its own edge and ~0 at ``f``
            # outside: doubling it (saturating at 255) ramps from 1 at the edge to 0 ``f`` pixels out;
            # max() keeps convex corners of the core at 1; values rounding to 0 keep the support compact.
            h, w = core.shape
            win = (
                slice(max(0, rows[0] - f), min(h, rows[-1] + f + 1)),
                slice(max(0, cols[0] - f), min(w, cols[-1] + f + 1)),
            )
            sub = core[win]
            k, sigma = gaussian_feather(f)
            blurred = cv2.GaussianBlur(sub, (k, k), sigma, borderType=cv2.BORDER_CONSTANT)
            core[win] = cv2.max(cv2.add(blurred, blurred), sub)
        return np.divide(core, np.float32(255.0), dtype=np.float32)
