"""Baselines beside the product, written through the product's own source and sink.

Every method is read by the product's file source and written by the product's file sink (H.264, the
sink's default settings), so every row of a report pays the same decode/encode cost the product pays:

- ``masked_input``: the input unchanged (the encode-only pass; also the re-encoding noise floor),
- ``telea`` / ``navier_stokes``: ``cv2.inpaint`` (radius 3) of each frame GIVEN THE TRUE MASK (grown by
  ``dilate_px`` so the occluder's antialiased rim is inpainted too), composited only inside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

import cv2
import numpy as np

from benchmarks.clip_io import ClipError, GroundTruth
from stream.media.sinks import FileSink
from stream.media.sources import open_source

INPAINT_RADIUS = 3
TRUE_MASK_DILATE_PX = 2
BASELINES = ("masked_input", "telea", "navier_stokes")

FrameFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def grow(mask: np.ndarray, px: int) -> np.ndarray:
    """(H, W) bool mask grown by ``px`` pixels with an elliptic kernel (a copy when ``px`` is 0)."""
    if px < 0:
        raise ValueError(f"px must be >= 0, got {px}")
    if px == 0:
        return mask.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def inpaint_bgr_u8(frame_bgr_u8: np.ndarray, mask: np.ndarray, method: int) -> np.ndarray:
    """``cv2.inpaint`` of an (H, W, 3) uint8 BGR frame inside an (H, W) bool mask; outside it the frame
    is returned bit-identical (cv2.inpaint alone already leaves it, this makes it explicit)."""
    if not mask.any():
        return frame_bgr_u8
    out = cv2.inpaint(frame_bgr_u8, mask.astype(np.uint8) * 255, INPAINT_RADIUS, method)
    return np.where(mask[..., None], out, frame_bgr_u8)


def baseline_functions(dilate_px: int = TRUE_MASK_DILATE_PX) -> dict[str, FrameFn]:
    """name -> f(frame_bgr_u8, true_mask) for every entry of :data:`BASELINES`."""
    return {
        "masked_input": lambda frame, mask: frame,
        "telea": lambda frame, mask: inpaint_bgr_u8(frame, grow(mask, dilate_px), cv2.INPAINT_TELEA),
        "navier_stokes": lambda frame, mask: inpaint_bgr_u8(frame, grow(mask, dilate_px), cv2.INPAINT_NS),
    }


def write_through_product_io(
    input_path: Path, outputs: Mapping[str, Path], functions: Mapping[str, FrameFn], truth: GroundTruth | None
) -> dict[str, int]:
    """Read ``input_path`` with the product's source, apply each function per frame (with the frame's true
    mask; all-False without ``truth``), write each result with the product's file sink. Returns frames
    written per output; ClipError when the truth does not match the clip's frame count or size."""
    sinks: dict[str, FileSink] = {}
    written = 0
    with open_source(str(input_path)) as source:
        try:
            for name in functions:
                sinks[name] = FileSink(outputs[name], source.info)
            for frame in source:
                if truth is not None:
                    if frame.index >= truth.frames:
                        raise ClipError(f"{input_path} has more frames than its truth ({truth.frames})")
                    mask = truth.masks[frame.index]
                    if mask.shape != frame.bgr_u8.shape[:2]:
                        raise ClipError(f"truth masks are {mask.shape}, frames {frame.bgr_u8.shape[:2]}")
                else:
                    mask = np.zeros(frame.bgr_u8.shape[:2], bool)
                for name, fn in functions.items():
                    sinks[name].write(dataclasses.replace(frame, bgr_u8=fn(frame.bgr_u8, mask)))
                written += 1
        finally:
            for sink in sinks.values():
                sink.close()
    if truth is not None and written != truth.frames:
        raise ClipError(f"{input_path} has {written} frames, its truth {truth.frames}")
    return {name: written for name in functions}
