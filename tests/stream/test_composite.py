from __future__ import annotations

import cv2
import numpy as np
import pytest

from engines.crop import Alignment, estimate_alignment, template
from stream.restore.composite import paste_back, warp_face

S = 64
H, W = 97, 131  # odd on purpose


def face_alignment(cx: float, cy: float, size: float, angle_deg: float = 12.0) -> Alignment:
    lms = template(112) / 112.0 - 0.5
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return estimate_alignment(lms @ rot.T * size + [cx, cy], S)


@pytest.fixture()
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, Alignment]:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    restored = rng.random((3, S, S), dtype=np.float32)
    yy, xx = np.mgrid[:S, :S]
    mask = np.zeros((S, S), np.float32)
    mask[40:58, 14:60] = 1.0  # lower face, reaching the crop's right side
    mask[((xx - 52) ** 2 + (yy - 20) ** 2) < 80] = 0.5
    mask = cv2.GaussianBlur(mask, (5, 5), 1.0)
    alignment = face_alignment(cx=118.0, cy=55.0, size=70.0)  # the face's right part is outside the frame
    return frame, restored, mask, alignment


def full_frame_alpha(mask: np.ndarray, alignment: Alignment) -> np.ndarray:
    """Reference: the mask warped over the WHOLE frame, independently of paste_back's ROI logic."""
    return cv2.warpAffine(
        mask, alignment.matrix, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0
    )


def test_pixels_outside_alpha_support_are_bit_identical(scene) -> None:
    frame, restored, mask, alignment = scene
    before = frame.copy()
    out = paste_back(frame, restored, mask, alignment)
    assert np.array_equal(frame, before), "the input frame must not be modified"
    assert out is not frame and out.shape == frame.shape and out.dtype == np.uint8
    warped = warp_face(frame.shape[:2], restored, mask, alignment)
    roi, alpha = warped.roi, warped.alpha_u8
    support_xy = alignment.to_image(np.argwhere(mask > 0)[:, ::-1])
    assert (support_xy[:, 0] >= W).any(), "part of the mask must fall outside the frame for this test"
    assert roi[1].stop == W
    alpha_full = np.zeros((H, W), np.uint8)
    alpha_full[roi] = alpha
    outside = alpha_full == 0
    assert np.array_equal(out[outside], frame[outside])
    assert not np.array_equal(out[~outside], frame[~outside]), "something must have been pasted"
    # Independent reference: nothing changed outside the full-frame warp of the mask (+1 px of rounding).
    ref = cv2.dilate((full_frame_alpha(mask, alignment) > 0).astype(np.uint8), np.ones((3, 3), np.uint8))
    assert np.array_equal(out[ref == 0], frame[ref == 0])


def test_inside_the_mask_core_the_restored_crop_shows(scene) -> None:
    frame, _, mask, alignment = scene
    red = np.zeros((3, S, S), np.float32)
    red[0] = 1.0  # RGB red
    out = paste_back(frame, red, mask, alignment)
    core = full_frame_alpha(mask, alignment) >= 0.999
    assert core.sum() > 50
    assert np.all(out[core] == [0, 0, 255]), "RGB red must land as BGR (0, 0, 255)"
    # Partial alpha blends: values lie between the frame and the restored colour.
    part = (full_frame_alpha(mask, alignment) > 0.3) & ~core
    assert np.all(out[part][:, 2] >= frame[part][:, 2])


def test_feathered_paste_keeps_outside_identical_and_reaches_further(scene) -> None:
    frame, restored, mask, alignment = scene
    alpha0 = warp_face(frame.shape[:2], restored, mask, alignment).alpha_u8
    feathered = warp_face(frame.shape[:2], restored, mask, alignment, feather_px=3)
    roi, alpha = feathered.roi, feathered.alpha_u8
    out = paste_back(frame, restored, mask, alignment, feather_px=3)
    alpha_full = np.zeros((H, W), np.uint8)
    alpha_full[roi] = alpha
    assert np.array_equal(out[alpha_full == 0], frame[alpha_full == 0])
    assert np.count_nonzero(alpha) > np.count_nonzero(alpha0)


def test_in_place_paste_and_layering(scene) -> None:
    frame, restored, mask, alignment = scene
    expected = paste_back(frame, restored, mask, alignment)
    target = frame.copy()
    returned = paste_back(target, restored, mask, alignment, out=target)
    assert returned is target and np.array_equal(target, expected)


def test_empty_or_off_frame_mask_leaves_frame_identical(scene) -> None:
    frame, restored, mask, alignment = scene
    assert warp_face(frame.shape[:2], restored, np.zeros_like(mask), alignment) is None
    assert np.array_equal(paste_back(frame, restored, np.zeros_like(mask), alignment), frame)
    far = face_alignment(cx=500.0, cy=400.0, size=70.0)
    assert warp_face(frame.shape[:2], restored, mask, far) is None
    assert np.array_equal(paste_back(frame, restored, mask, far), frame)


def test_bad_shapes_are_rejected(scene) -> None:
    frame, restored, mask, alignment = scene
    with pytest.raises(ValueError, match=r"restored crop must be \(3, 64, 64\)"):
        paste_back(frame, restored.transpose(1, 2, 0), mask, alignment)
    with pytest.raises(ValueError, match=r"mask must be \(64, 64\)"):
        paste_back(frame, restored, mask[:32], alignment)
    with pytest.raises(ValueError, match="uint8 BGR"):
        paste_back(frame.astype(np.float32), restored, mask, alignment)


def test_mask_reaching_the_crop_edge_keeps_the_restored_colour(scene) -> None:
    frame, _, _, _ = scene
    alignment = face_alignment(cx=60.0, cy=50.0, size=40.0, angle_deg=20.0)  # the whole crop inside the frame
    red = np.zeros((3, S, S), np.float32)
    red[0] = 1.0
    full = np.ones((S, S), np.float32)
    face = warp_face(frame.shape[:2], red, full, alignment)
    edge = (face.alpha_u8 > 0) & (face.alpha_u8 < 255)
    assert edge.sum() > 20, "the crop's own border must be a partial-alpha rim"
    # No dark fringe: the rim blends the frame towards red, never towards black.
    assert np.all(face.restored_bgr_u8[face.alpha_u8 > 0] == [0, 0, 255])
    out = paste_back(frame, red, full, alignment)
    rim_out, rim_in = out[face.roi][edge].astype(int), frame[face.roi][edge].astype(int)
    assert np.all(rim_out[:, 2] >= rim_in[:, 2] - 1) and np.all(rim_out[:, :2] <= rim_in[:, :2] + 1)
