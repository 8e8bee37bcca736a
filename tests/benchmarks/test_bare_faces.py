from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.bare_faces import (
    AlterationSeries,
    evaluate_bare,
    face_region,
    max_channel_diff,
    opened_diff,
)
from benchmarks.clip_io import GroundTruth, VideoWriter, read_frames
from benchmarks.eval_compose import face_matrix
from engines.crop import template


def test_max_channel_diff_takes_the_largest_channel_without_wrap() -> None:
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 1] = (3, 200, 7)
    d = max_channel_diff(a, b)
    assert d.dtype == np.uint8 and d[0, 1] == 200 and d.sum() == 200
    assert max_channel_diff(b, a)[0, 1] == 200


def test_opened_diff_drops_isolated_pixels_and_keeps_regions() -> None:
    a = np.zeros((12, 12, 3), np.uint8)
    b = a.copy()
    b[1, 1] = 90  # one pixel: the kind of excursion an encoder makes on an edge
    b[5:9, 5:9, 2] = 40  # a 4x4 region: what a restoration does
    d = opened_diff(a, b)
    assert d[1, 1] == 0 and (d[5:9, 5:9] == 40).all() and d.sum() == 16 * 40
    # Thresholding commutes with the opening.
    assert np.array_equal(d > 39, cv2.morphologyEx((max_channel_diff(a, b) > 39).astype(np.uint8), cv2.MORPH_OPEN,
                                                   np.ones((3, 3), np.uint8)) > 0)  # fmt: skip


def test_face_region_is_the_crop_square_in_the_frame() -> None:
    # Landmarks of the 256 px template placed at +100, +50: the crop square sits at that offset.
    lm = template(256) * 0.5 + np.array([100.0, 50.0])
    region = face_region(face_matrix(lm), (300, 400))
    ys, xs = np.nonzero(region)
    assert (xs.min(), ys.min()) == (100, 50)
    assert xs.max() == pytest.approx(100 + 127, abs=1) and ys.max() == pytest.approx(50 + 127, abs=1)


def test_alteration_series_one_pixel() -> None:
    s = AlterationSeries()
    face = np.zeros((10, 10), bool)
    face[:5] = True
    diff = np.zeros((10, 10), np.uint8)
    s.add(diff, 2, face)
    diff[1, 1] = 3  # above tolerance 2, inside the face
    s.add(diff, 2, face)
    diff[:] = 0
    diff[9, 9] = 50  # outside the face
    s.add(diff, 2, face)
    out = s.summary()
    assert out["altered_share_worst"] == pytest.approx(0.01) and out["worst_frame"] == 1
    assert out["frames_face_untouched_share"] == pytest.approx(2 / 3)
    assert s.face_share[1] == pytest.approx(1 / 50)


def test_evaluate_bare_on_a_clip_with_one_altered_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = cv_smooth(rng.integers(0, 255, (64, 96, 3)).astype(np.uint8))
    frames = [np.roll(base, i, axis=1) for i in range(6)]
    with VideoWriter(tmp_path / "in.mp4", 96, 64, 30) as w:
        for f in frames:
            w.write(f)
    decoded = read_frames(tmp_path / "in.mp4")
    with VideoWriter(tmp_path / "out.mp4", 96, 64, 30) as w:
        for i, f in enumerate(decoded):
            g = f.copy()
            if i == 3:
                g[10:20, 10:30] = 0  # a black patch over "the face" on one frame
            w.write(g)
    lm = template(256) * 0.25 + np.array([4.0, 0.0])  # a 64 px face square at x 4..68
    truth = GroundTruth(np.zeros((6, 64, 96), bool), np.zeros(6, np.int32), np.stack([face_matrix(lm)] * 6))
    report = evaluate_bare(tmp_path / "in.mp4", tmp_path / "out.mp4", truth, tmp_path, restorations=1)
    p, floor = report["product"], report["passthrough"]
    assert report["tolerance_levels"] >= 0 and report["face_restorations_reported"] == 1
    assert p["worst_frame"] == 3 and p["altered_share_worst"] >= 200 / (64 * 96) * 0.9
    assert p["frames_face_untouched_share"] == pytest.approx(5 / 6)
    # At the measured tolerance the encoder alone alters nothing, by construction.
    assert floor["frames_face_untouched_share"] == 1.0 and floor["altered_share_worst"] == 0.0
    assert report["tolerance_levels"] <= report["encode_noise"]["max_levels"]


def cv_smooth(img: np.ndarray) -> np.ndarray:
    """Low-pass noise: an image H.264 codes with small, realistic errors."""
    return cv2.GaussianBlur(img, (0, 0), 3)
