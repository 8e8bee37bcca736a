"""Input and output in one picture, for the README, bug reports and demos (``--compare``).

``side-by-side``: the input on the left, the restored frame on the right; the output is twice as wide.
``split``: one frame of the input's size, its left half from the input and its right half restored (a
face in the middle shows both halves of itself). Each half carries a small label.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import cv2
import numpy as np

from stream.types import Frame, VideoInfo

SIDE_BY_SIDE: Final = "side-by-side"
SPLIT: Final = "split"
COMPARE_MODES: Final = (SIDE_BY_SIDE, SPLIT)
_LABELS: Final = ("input", "restored")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`COMPARE_MODES`, else ValueError naming them."""
    if mode not in COMPARE_MODES:
        raise ValueError(f"compare mode must be one of {', '.join(COMPARE_MODES)}, got {mode!r}")
    return mode


def compare_info(info: VideoInfo, mode: str) -> VideoInfo:
    """What a sink receives with ``mode``: twice the width for side-by-side, the same size for split."""
    if check_mode(mode) == SIDE_BY_SIDE:
        return dataclasses.replace(info, width=2 * info.width)
    return info


def _label(bgr_u8: np.ndarray, text: str, x: int) -> None:
    # Scaled to the frame so the label stays readable on 1080p and does not cover a 160 px clip.
    h = bgr_u8.shape[0]
    scale = max(0.35, h / 720)
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(2, round(4 * scale))
    cv2.rectangle(bgr_u8, (x, 0), (x + tw + 2 * pad, th + base + 2 * pad), (0, 0, 0), thickness=-1)
    cv2.putText(
        bgr_u8,
        text,
        (x + pad, th + pad),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        thick,
        cv2.LINE_AA,
    )


def compose_bgr_u8(
    input_bgr_u8: np.ndarray, output_bgr_u8: np.ndarray, mode: str, *, labels: bool = True
) -> np.ndarray:
    """One (H, W', 3) uint8 BGR picture of ``input_bgr_u8`` and ``output_bgr_u8`` (both (H, W, 3) uint8
    BGR, same size); W' = 2W for side-by-side, W for split. The inputs are not modified."""
    if input_bgr_u8.shape != output_bgr_u8.shape or input_bgr_u8.dtype != np.uint8 or input_bgr_u8.ndim != 3:
        raise ValueError(
            f"input and output must be the same (H, W, 3) uint8 BGR, got {input_bgr_u8.shape} "
            f"{input_bgr_u8.dtype} and {output_bgr_u8.shape} {output_bgr_u8.dtype}"
        )
    w = input_bgr_u8.shape[1]
    if check_mode(mode) == SIDE_BY_SIDE:
        out = np.concatenate([input_bgr_u8, output_bgr_u8], axis=1)
        starts = (0, w)
    else:
        half = w // 2
        out = output_bgr_u8.copy()
        out[:, :half] = input_bgr_u8[:, :half]
        # A one-pixel divider, so the seam is the split, not an artefact of the restoration.
        out[:, max(0, half - 1) : half + 1] = (0, 255, 255)
        starts = (0, half + 1)
    if labels:
        for text, x in zip(_LABELS, starts, strict=True):
            _label(out, text, x)
    return out


def compose_frame(frame: Frame, input_bgr_u8: np.ndarray, mode: str) -> Frame:
    """``frame`` (restored) with its picture replaced by the composition with ``input_bgr_u8``.

    A frame that carries ``reference_bgr_u8`` (the decoded input, for the file sink's fidelity check)
    gets the same composition of the reference with itself: the comparison stays pixel for pixel
    against what the sink wrote.
    """
    ref = frame.reference_bgr_u8
    return dataclasses.replace(
        frame,
        bgr_u8=compose_bgr_u8(input_bgr_u8, frame.bgr_u8, mode),
        reference_bgr_u8=None if ref is None else compose_bgr_u8(ref, ref, mode),
    )
