"""Temporal quality of a restored clip: PSNR inside the true mask over time, and flicker.

    python -m benchmarks.temporal --clip restored.mp4 --clean clean.mp4 --masks truth.npz \\
        --masked input.mp4 --json out.json [--plot out.png]

Per frame: PSNR (dB, data range 1.0, all channels) inside the true mask, restored vs clean. Flicker: the
mean absolute frame-to-frame change inside the mask (0-255 levels, all channels, pixels inside the mask
in both frames, only between frames of the same segment, i.e. never across a cut between stills), and
its ratio to the clean clip's flicker over the same pixels (null where the clean clip does not move:
a held still has clean flicker 0). OpenCV Telea and Navier-Stokes GIVEN THE TRUE MASK and the masked
input itself are computed in the same process from ``--masked`` and written through the product's own
sink first (:mod:`benchmarks.baselines`), so every row pays the product's encoding.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.baselines import BASELINES, baseline_functions, write_through_product_io
from benchmarks.clip_io import ClipError, GroundTruth, iter_frames
from benchmarks.environment import device_info, git, versions
from benchmarks.report import json_safe, setup_logging, write_report

logger = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0  # benchmarks.quality's cap: a pixel-identical frame cannot make a mean infinite
STILL_FLICKER_LEVELS = 1e-3  # clean flicker below this (0-255 levels) means the clean clip is still


def psnr_in_mask(a_bgr_u8: np.ndarray, b_bgr_u8: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB (range 1.0) over ``mask`` pixels of two (H, W, 3) uint8 frames; nan for an empty mask,
    capped at :data:`PSNR_CAP_DB` for identical pixels."""
    if a_bgr_u8.shape != b_bgr_u8.shape or mask.shape != a_bgr_u8.shape[:2]:
        raise ValueError(f"frames {a_bgr_u8.shape}, {b_bgr_u8.shape} and mask {mask.shape} must agree")
    if not mask.any():
        return math.nan
    d = (a_bgr_u8[mask].astype(np.float64) - b_bgr_u8[mask].astype(np.float64)) / 255.0
    mse = float(np.mean(d * d))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10.0 * math.log10(1.0 / mse))


def frame_change(prev_bgr_u8: np.ndarray, cur_bgr_u8: np.ndarray, region: np.ndarray) -> float:
    """Mean |cur - prev| over ``region`` pixels and all channels, in 0-255 levels; nan for an empty region."""
    if not region.any():
        return math.nan
    return float(np.mean(np.abs(cur_bgr_u8[region].astype(np.int16) - prev_bgr_u8[region].astype(np.int16))))


@dataclass
class SeriesAccumulator:
    """Per-frame PSNR in the mask and per-pair flicker of one method, fed frame by frame.

    ``add(output, clean, mask, segment)``: (H, W, 3) uint8 frames, (H, W) bool mask, the frame's segment.
    """

    psnr_mask: list[float] = field(default_factory=list)
    flicker: list[float] = field(default_factory=list)
    _prev: tuple[np.ndarray, np.ndarray, int] | None = None

    def add(self, output: np.ndarray, clean: np.ndarray | None, mask: np.ndarray, segment: int) -> None:
        if clean is not None:
            self.psnr_mask.append(psnr_in_mask(output, clean, mask))
        if self._prev is not None and self._prev[2] == segment:
            self.flicker.append(frame_change(self._prev[0], output, self._prev[1] & mask))
        elif self._prev is not None:
            self.flicker.append(math.nan)  # a cut between segments: not flicker
        self._prev = (output, mask, segment)


def summarize(values: Iterable[float], *, higher_is_better: bool) -> dict[str, float | int | None]:
    """mean, p10 (p90 when lower is better), worst and count of the finite values (None when none)."""
    v = np.array([x for x in values if math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "p10" if higher_is_better else "p90": None, "worst": None, "count": 0}
    if higher_is_better:
        return {
            "mean": float(v.mean()),
            "p10": float(np.percentile(v, 10)),
            "worst": float(v.min()),
            "count": int(v.size),
        }
    return {
        "mean": float(v.mean()),
        "p90": float(np.percentile(v, 90)),
        "worst": float(v.max()),
        "count": int(v.size),
    }


def flicker_ratio(method: Sequence[float], clean: Sequence[float]) -> float | None:
    """mean flicker of a method / mean flicker of the clean clip over the same frame pairs (finite in
    both); None when the clean clip is still there (a ratio to ~0 means nothing)."""
    pairs = [(m, c) for m, c in zip(method, clean, strict=True) if math.isfinite(m) and math.isfinite(c)]
    if not pairs:
        return None
    c_mean = float(np.mean([c for _, c in pairs]))
    if c_mean < STILL_FLICKER_LEVELS:
        return None
    return float(np.mean([m for m, _ in pairs])) / c_mean


def evaluate_series(outputs: Mapping[str, Path], clean: Path, truth: GroundTruth) -> dict[str, Any]:
    """Decode every output and the clean clip in lockstep and score them against the truth.

    Returns ``{"methods": {name: {"psnr_mask": summary, "flicker": summary, "flicker_ratio"}},
    "clean_flicker": summary, "series": {name: {"psnr_mask": [...], "flicker": [...]}}}``.
    """
    acc = {name: SeriesAccumulator() for name in outputs}
    clean_acc = SeriesAccumulator()
    streams = [iter_frames(p) for p in outputs.values()]
    n = 0
    for n, (clean_frame, *frames) in enumerate(zip(iter_frames(clean), *streams, strict=True)):
        if n >= truth.frames:
            raise ClipError(f"{clean} has more frames than its truth ({truth.frames})")
        mask, seg = truth.masks[n], int(truth.segments[n])
        clean_acc.add(clean_frame, None, mask, seg)
        for name, frame in zip(outputs, frames, strict=True):
            acc[name].add(frame, clean_frame, mask, seg)
    if n + 1 != truth.frames:
        raise ClipError(f"clips have {n + 1} frames, the truth {truth.frames}")
    report: dict[str, Any] = {
        "methods": {},
        "clean_flicker": summarize(clean_acc.flicker, higher_is_better=False),
    }
    for name, a in acc.items():
        report["methods"][name] = {
            "psnr_mask": summarize(a.psnr_mask, higher_is_better=True),
            "flicker": summarize(a.flicker, higher_is_better=False),
            "flicker_ratio": flicker_ratio(a.flicker, clean_acc.flicker),
        }
    report["series"] = {n_: {"psnr_mask": a.psnr_mask, "flicker": a.flicker} for n_, a in acc.items()}
    report["series"]["clean"] = {"flicker": clean_acc.flicker}
    return report


def plot_series(report: Mapping[str, Any], path: Path, title: str) -> None:
    """PSNR inside the mask over time, one line per method (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    for name, s in report["series"].items():
        if "psnr_mask" in s:
            ax.plot([v if math.isfinite(v) else np.nan for v in s["psnr_mask"]], label=name, lw=1)
        bx.plot(range(1, len(s["flicker"]) + 1), [v if math.isfinite(v) else np.nan for v in s["flicker"]],
                label=name, lw=1, ls="--" if name == "clean" else "-")  # fmt: skip
    ax.set_ylabel("PSNR in true mask (dB)")
    bx.set_ylabel("flicker in mask (levels)")
    bx.set_xlabel("frame")
    ax.legend(fontsize=7, ncol=4)
    bx.legend(fontsize=7, ncol=5)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.temporal", description=__doc__.split("\n")[0])
    p.add_argument("--clip", type=Path, required=True, help="the restored clip (the product's output)")
    p.add_argument("--clean", type=Path, required=True, help="the clean ground-truth clip")
    p.add_argument("--masks", type=Path, required=True, help="truth.npz of the clip (benchmarks.eval_clips)")
    p.add_argument("--masked", type=Path, required=True, help="the masked input the product was given")
    p.add_argument("--json", type=Path, required=True, dest="json_path")
    p.add_argument(
        "--plot", type=Path, default=None, help="PSNR-in-mask over time PNG (default: beside the JSON)"
    )
    p.add_argument(
        "--dilate", type=int, default=2, help="px the true mask grows by for Telea/NS (default: %(default)s)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        truth = GroundTruth.load(args.masks)
        with tempfile.TemporaryDirectory(prefix="temporal_") as tmp:
            outs = {name: Path(tmp) / f"{name}.mp4" for name in BASELINES}
            write_through_product_io(args.masked, outs, baseline_functions(args.dilate), truth)
            report = evaluate_series({"product": args.clip, **outs}, args.clean, truth)
    except (ClipError, ValueError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    report.update(
        clip=str(args.clip), clean=str(args.clean), masks=str(args.masks), masked=str(args.masked),
        true_mask_dilate_px=args.dilate, device=device_info("cpu"), versions=versions(),
        git_revision=git("rev-parse", "HEAD"),
    )  # fmt: skip
    plot = args.plot or args.json_path.with_suffix(".png")
    plot_series(report, plot, f"{args.clip.name} vs {args.clean.name}")
    write_report(json_safe(report), args.json_path)
    for name, m in report["methods"].items():
        logger.info(
            "%-14s psnr_mask %s | flicker %s | ratio %s",
            name,
            m["psnr_mask"],
            m["flicker"],
            m["flicker_ratio"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
