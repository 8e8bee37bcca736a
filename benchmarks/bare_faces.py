"""False positives on bare faces: how much of a frame the product alters when nothing covers the face.

    python -m benchmarks.bare_faces --input bare.mp4 --output restored.mp4 --json out.json \\
        [--truth truth.npz] [--models models/small] [--no-run]

Runs the product (``run_stream.py``, :mod:`benchmarks.product_run`) on ``--input`` into ``--output``
(``--no-run``: score an existing output; the restorations count is then unknown), and encodes the input
through the product's own source and sink with no restoration (``passthrough``): run_stream.py has no
"restoration off" switch, so the re-encoding noise is measured from that pass.

Altered pixel: the max over channels of |output - input|, opened with a 3x3 square (a restoration
changes regions; the encoder's largest errors are isolated pixels on edges), above a tolerance. The
tolerance is the largest opened difference the pass-through shows anywhere in the clip, so at it the
encoder alone alters no pixel on any frame (the floor is 0 by construction; reported as
``passthrough``) and the tolerance absorbs only the re-encoding. Reported per clip: share of altered
pixels per frame (mean, worst frame), share of frames where no FACE pixel is altered (face = the 256 px
canonical crop's square in the frame, from ``--truth``), frames whose output decodes bit-identical to
the pass-through (x264 is deterministic: a frame nobody touched encodes the same until an altered frame
changes its references), and the number of face restorations the product reported.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.baselines import baseline_functions, write_through_product_io
from benchmarks.clip_io import ClipError, GroundTruth, iter_frames
from benchmarks.environment import device_info, git, versions
from benchmarks.eval_compose import FACE_CROP
from benchmarks.product_run import ProductRunError, run_product
from benchmarks.report import setup_logging, write_report

logger = logging.getLogger(__name__)

OPENING = np.ones((3, 3), np.uint8)  # regions of at least 3x3 pixels count; isolated pixels do not


def max_channel_diff(a_bgr_u8: np.ndarray, b_bgr_u8: np.ndarray) -> np.ndarray:
    """(H, W) uint8: max over channels of |a - b| for two (H, W, 3) uint8 frames."""
    if a_bgr_u8.shape != b_bgr_u8.shape or a_bgr_u8.dtype != np.uint8 or b_bgr_u8.dtype != np.uint8:
        raise ValueError(f"frames must be equal-shape uint8, got {a_bgr_u8.shape} {a_bgr_u8.dtype}, "
                         f"{b_bgr_u8.shape} {b_bgr_u8.dtype}")  # fmt: skip
    return np.asarray(cv2.absdiff(a_bgr_u8, b_bgr_u8).max(axis=2), dtype=np.uint8)


def opened_diff(a_bgr_u8: np.ndarray, b_bgr_u8: np.ndarray) -> np.ndarray:
    """(H, W) uint8 :func:`max_channel_diff` after a grey-level 3x3 opening. Thresholding commutes with
    the opening, so ``opened_diff > t`` is the binary opening of ``max_channel_diff > t`` for every t."""
    return np.asarray(cv2.morphologyEx(max_channel_diff(a_bgr_u8, b_bgr_u8), cv2.MORPH_OPEN, OPENING))


def face_region(matrix: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: frame pixels inside the square of the 256 px canonical crop (frame -> crop ``matrix``)."""
    inv = cv2.invertAffineTransform(matrix)
    ones = np.full((FACE_CROP, FACE_CROP), 255, np.uint8)
    return cv2.warpAffine(ones, inv, (hw[1], hw[0]), flags=cv2.INTER_NEAREST) > 0


@dataclass
class AlterationSeries:
    """Per frame: share of altered pixels in the frame and in the face, and whether any face pixel is."""

    frame_share: list[float] = field(default_factory=list)
    face_share: list[float] = field(default_factory=list)
    face_touched: list[bool] = field(default_factory=list)

    def add(self, diff_u8: np.ndarray, tol: int, face: np.ndarray) -> None:
        altered = diff_u8 > tol
        self.frame_share.append(float(altered.mean()))
        n_face = int(face.sum())
        self.face_share.append(float(altered[face].mean()) if n_face else math.nan)
        self.face_touched.append(bool(altered[face].any()))

    def summary(self) -> dict[str, Any]:
        share = np.array(self.frame_share)
        return {
            "frames": len(self.frame_share),
            "altered_share_mean": float(share.mean()),
            "altered_share_worst": float(share.max()),
            "worst_frame": int(share.argmax()),
            "face_altered_share_mean": float(np.nanmean(self.face_share)) if self.face_share else None,
            "frames_face_untouched_share": float(1.0 - np.mean(self.face_touched)),
        }


@dataclass(frozen=True)
class EncodeNoise:
    """What the encode-only pass does to a clip: ``tolerance`` (largest opened difference, 0-255 levels),
    and raw per-pixel max-channel differences: ``max_levels``, ``mean_levels``, ``share_above_0``."""

    tolerance: int
    max_levels: int
    mean_levels: float
    share_above_0: float

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance <= self.max_levels <= 255:
            raise ValueError(
                f"need 0 <= tolerance <= max_levels <= 255, got {self.tolerance}, {self.max_levels}"
            )


def measure_encode_noise(input_path: Path, passthrough: Path) -> EncodeNoise:
    """Compare the input with its encode-only pass frame by frame."""
    hist = np.zeros(256, np.int64)
    tol = 0
    for a, b in zip(iter_frames(input_path), iter_frames(passthrough), strict=True):
        hist += np.bincount(max_channel_diff(a, b).ravel(), minlength=256)
        tol = max(tol, int(opened_diff(a, b).max()))
    total = int(hist.sum())
    if total == 0:
        raise ClipError(f"no frames in {input_path}")
    return EncodeNoise(tol, int(np.nonzero(hist)[0].max()), float((hist * np.arange(256)).sum() / total),
                       float(hist[1:].sum() / total))  # fmt: skip


def score_alterations(
    input_path: Path, output: Path, passthrough: Path, truth: GroundTruth | None, tol: int
) -> dict[str, Any]:
    """Alteration summaries of the product output and of the pass-through, at tolerance ``tol``."""
    product, floor = AlterationSeries(), AlterationSeries()
    identical = []
    n = 0
    for n, (a, out, ref) in enumerate(zip(iter_frames(input_path), iter_frames(output), iter_frames(passthrough),
                                          strict=True)):  # fmt: skip
        if truth is not None and n >= truth.frames:
            raise ClipError(f"{input_path} has more frames than its truth ({truth.frames})")
        face = (
            face_region(truth.face_matrices[n], a.shape[:2])
            if truth is not None
            else np.ones(a.shape[:2], bool)
        )
        product.add(opened_diff(out, a), tol, face)
        floor.add(opened_diff(ref, a), tol, face)
        identical.append(bool(np.array_equal(out, ref)))
    result = {"product": product.summary(), "passthrough": floor.summary()}
    result["product"]["frames_identical_to_passthrough_share"] = float(np.mean(identical))
    result["series"] = {"product_altered_share": product.frame_share, "face_touched": product.face_touched}
    if truth is not None and n + 1 != truth.frames:
        raise ClipError(f"{input_path} has {n + 1} frames, its truth {truth.frames}")
    return result


def evaluate_bare(
    input_path: Path, output: Path, truth: GroundTruth | None, workdir: Path, restorations: int | None
) -> dict[str, Any]:
    """Encode-only pass, tolerance from its noise, then the alteration scores (JSON-ready dict)."""
    passthrough = workdir / "passthrough.mp4"
    write_through_product_io(
        input_path,
        {"masked_input": passthrough},
        {"masked_input": baseline_functions()["masked_input"]},
        truth,
    )
    noise = measure_encode_noise(input_path, passthrough)
    scores = score_alterations(input_path, output, passthrough, truth, noise.tolerance)
    if truth is None:
        logger.warning("no --truth: the face region is the whole frame")
    return {
        "tolerance_levels": noise.tolerance,
        "tolerance_rule": "largest 3x3-opened max-channel |passthrough - input| anywhere in the clip",
        "altered_rule": "3x3-opened max-channel |output - input| > tolerance",
        "encode_noise": {
            "max_levels": noise.max_levels,
            "mean_levels": noise.mean_levels,
            "share_above_0": noise.share_above_0,
        },
        "face_region": "256 px canonical crop square" if truth is not None else "whole frame",
        "face_restorations_reported": restorations,
        **scores,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bare_faces", description=__doc__.split("\n")[0])
    p.add_argument("--input", type=Path, required=True, help="a clip of unoccluded faces")
    p.add_argument(
        "--output", type=Path, required=True, help="the product's output (written unless --no-run)"
    )
    p.add_argument("--json", type=Path, required=True, dest="json_path")
    p.add_argument(
        "--truth", type=Path, default=None, help="truth.npz (face positions) from benchmarks.eval_clips"
    )
    p.add_argument("--models", type=Path, default=None, help="models for run_stream.py (default: its own)")
    p.add_argument("--no-run", action="store_true", help="score an existing --output; do not run the product")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        truth = GroundTruth.load(args.truth) if args.truth is not None else None
        with tempfile.TemporaryDirectory(prefix="bare_faces_") as tmp:
            restorations, run_info = None, None
            if not args.no_run:
                run = run_product(args.input, args.output, Path(tmp) / "stats.json", models=args.models)
                restorations = run.restorations
                run_info = {
                    "wall_s": run.wall_s,
                    "command": list(run.command),
                    "restorations_from": run.restorations_from,
                }
            else:
                logger.info("--no-run: the number of face restorations is not known")
            report = evaluate_bare(args.input, args.output, truth, Path(tmp), restorations)
    except (ClipError, ProductRunError, ValueError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    report.update(input=str(args.input), output=str(args.output), run=run_info, device=device_info("cpu"),
                  versions=versions(), git_revision=git("rev-parse", "HEAD"))  # fmt: skip
    write_report(report, args.json_path)
    p = report["product"]
    logger.info(
        "tolerance %d levels | altered mean %.4f %% worst %.4f %% | frames with no face pixel altered %.1f %% | "
        "%s face restorations", report["tolerance_levels"], 100 * p["altered_share_mean"],
        100 * p["altered_share_worst"], 100 * p["frames_face_untouched_share"], restorations,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
