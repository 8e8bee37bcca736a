from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.clip_io import GroundTruth, VideoWriter
from benchmarks.temporal import (
    PSNR_CAP_DB,
    SeriesAccumulator,
    evaluate_series,
    flicker_ratio,
    frame_change,
    psnr_in_mask,
    summarize,
)


def test_psnr_in_mask_counts_only_mask_pixels() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 51  # 0.2 of the range in every channel of one pixel
    b[3, 3] = 255  # outside the mask: must not count
    mask = np.zeros((4, 4), bool)
    mask[0, :2] = True  # two pixels, one off by 0.2 -> mse 0.02
    assert psnr_in_mask(b, a, mask) == pytest.approx(10 * math.log10(1 / 0.02))
    assert psnr_in_mask(a, a, mask) == PSNR_CAP_DB
    assert math.isnan(psnr_in_mask(a, b, np.zeros((4, 4), bool)))


def test_frame_change_of_static_and_one_pixel() -> None:
    f = np.full((3, 3, 3), 100, np.uint8)
    region = np.ones((3, 3), bool)
    assert frame_change(f, f, region) == 0.0
    g = f.copy()
    g[1, 1] = (109, 100, 100)  # one channel of one of 9 pixels moves by 9 levels
    assert frame_change(f, g, region) == pytest.approx(9 / 27)
    assert frame_change(g, f, region) == pytest.approx(9 / 27)  # symmetric, no uint8 wrap-around


def test_accumulator_skips_cuts_and_uses_pixels_in_both_masks() -> None:
    acc = SeriesAccumulator()
    a = np.zeros((2, 2, 3), np.uint8)
    b = np.full((2, 2, 3), 10, np.uint8)
    m1 = np.array([[True, True], [False, False]])
    m2 = np.array([[True, False], [False, False]])
    acc.add(a, a, m1, 0)
    acc.add(b, a, m2, 0)  # flicker over m1 & m2 (one pixel): 10 levels
    acc.add(a, a, m1, 1)  # a new segment: a cut, not flicker
    assert acc.flicker[0] == 10.0 and math.isnan(acc.flicker[1])
    assert len(acc.psnr_mask) == 3 and acc.psnr_mask[0] == PSNR_CAP_DB


def test_summarize_and_ratio() -> None:
    s = summarize([10.0, 20.0, math.nan, 30.0], higher_is_better=True)
    assert s["mean"] == 20.0 and s["worst"] == 10.0 and s["count"] == 3
    f = summarize([1.0, 5.0], higher_is_better=False)
    assert f["worst"] == 5.0 and "p90" in f
    assert summarize([math.nan], higher_is_better=True)["mean"] is None
    assert flicker_ratio([2.0, 4.0], [1.0, 2.0]) == pytest.approx(2.0)
    assert flicker_ratio([2.0, 4.0], [0.0, 0.0]) is None  # a still clean clip: no ratio


def _write(path: Path, frames: list[np.ndarray]) -> None:
    with VideoWriter(path, frames[0].shape[1], frames[0].shape[0], 30) as w:
        for f in frames:
            w.write(f)


def test_evaluate_series_on_encoded_clips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    clean = [np.full((32, 48, 3), 120, np.uint8) for _ in range(4)]
    masks = np.zeros((4, 32, 48), bool)
    masks[:, 8:24, 16:32] = True
    shimmer = []
    for i, c in enumerate(clean):
        f = c.copy()
        f[8:24, 16:32] = 120 + 20 * (i % 2)  # alternates: flicker 20 levels in the mask
        shimmer.append(f)
    noise = [np.clip(c.astype(int) + rng.integers(-3, 4, c.shape), 0, 255).astype(np.uint8) for c in clean]
    for name, frames in (("clean", clean), ("same", clean), ("shimmer", shimmer), ("noise", noise)):
        _write(tmp_path / f"{name}.mp4", frames)
    truth = GroundTruth(masks, np.zeros(4, np.int32), np.zeros((4, 2, 3)))
    report = evaluate_series(
        {n: tmp_path / f"{n}.mp4" for n in ("same", "shimmer")}, tmp_path / "clean.mp4", truth
    )
    same, shim = report["methods"]["same"], report["methods"]["shimmer"]
    assert same["psnr_mask"]["mean"] == PSNR_CAP_DB and same["flicker"]["mean"] == 0.0
    assert shim["flicker"]["mean"] == pytest.approx(20.0, abs=1.0)
    assert shim["psnr_mask"]["worst"] < 30.0
    assert report["clean_flicker"]["mean"] == 0.0 and shim["flicker_ratio"] is None
    with pytest.raises(ValueError, match="frames"):
        evaluate_series({"same": tmp_path / "same.mp4"}, tmp_path / "clean.mp4", GroundTruth(
            masks[:3], np.zeros(3, np.int32), np.zeros((3, 2, 3))))  # fmt: skip
