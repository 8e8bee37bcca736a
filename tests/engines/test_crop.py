from __future__ import annotations

import numpy as np
import pytest

from engines.crop import Alignment, crop_valid_mask, estimate_alignment, template, warp_to_crop


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([rot, [[tx], [ty]]])


@pytest.mark.parametrize("size", [64, 128, 256])
def test_template_geometry_matches_the_documented_crop(size: int) -> None:
    t = template(size)
    eyes_y = t[:2, 1].mean()
    mouth_y = t[3:, 1].mean()
    assert 0.22 < (mouth_y - eyes_y) / size < 0.26  # eye-to-mouth ~0.24 of the side
    assert np.all(t > 0) and np.all(t < size)
    assert t[0, 0] < t[1, 0] and t[3, 0] < t[4, 0]  # left/right as seen in the image


@pytest.mark.parametrize("angle", [-30.0, 0.0, 17.0])
def test_alignment_recovers_a_known_similarity(angle: float) -> None:
    size = 128
    # Place the template into an image with a known transform, then recover its inverse.
    to_image = _similarity(2.5, angle, 300.0, 120.0)
    t = template(size)
    landmarks = t @ to_image[:, :2].T + to_image[:, 2]
    al = estimate_alignment(landmarks, size)
    np.testing.assert_allclose(al.to_crop(landmarks), t, atol=1e-6)
    np.testing.assert_allclose(al.to_image(t), landmarks, atol=1e-6)
    assert al.scale == pytest.approx(1 / 2.5, rel=1e-6)


def test_alignment_rejects_bad_landmarks() -> None:
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        estimate_alignment(np.zeros((4, 2)), 128)
    with pytest.raises(ValueError, match="degenerate"):
        estimate_alignment(np.ones((5, 2)), 128)
    with pytest.raises(ValueError, match="finite"):
        estimate_alignment(np.full((5, 2), np.nan), 128)
    with pytest.raises(ValueError, match="crop_size"):
        template(8)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        Alignment(matrix=np.eye(3), crop_size=64)


def test_warp_to_crop_samples_the_right_pixels() -> None:
    size = 64
    img = np.zeros((200, 300, 3), np.uint8)
    to_image = _similarity(2.0, 0.0, 50.0, 40.0)
    landmarks = template(size) @ to_image[:, :2].T + to_image[:, 2]
    # Mark the nose tip in the image; it must land on the template's nose in the crop.
    nx, ny = np.round(landmarks[2]).astype(int)
    img[ny - 2 : ny + 3, nx - 2 : nx + 3] = 255
    crop = warp_to_crop(img, estimate_alignment(landmarks, size))
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    ys, xs = np.nonzero(crop[..., 0] > 128)
    np.testing.assert_allclose([xs.mean(), ys.mean()], template(size)[2], atol=1.0)


def test_valid_mask_marks_pixels_outside_the_image() -> None:
    size = 64
    # Face near the left border: part of the crop falls outside the image.
    to_image = _similarity(1.0, 0.0, -20.0, 10.0)
    landmarks = template(size) @ to_image[:, :2].T + to_image[:, 2]
    valid = crop_valid_mask((100, 100), estimate_alignment(landmarks, size))
    assert valid[:, :10].max() == 0.0 and valid[:, -10:].min() == 1.0
