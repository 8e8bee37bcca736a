"""training.metrics against known values, and training.identity's SFace alignment and embeddings."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from engines.crop import template
from training import metrics
from training.identity import (
    SFACE_SIZE,
    SFACE_TEMPLATE_112,
    IdentityEmbedder,
    cosine,
    crop_to_sface_matrix,
    find_sface_model,
    sface_input,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _smooth_image(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    small = rng.random((6, 6, 3))
    return np.clip(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al.'s MATLAB ssim_index, literally: 'valid' windowed sums with an 11x11 Gaussian."""
    k = cv2.getGaussianKernel(11, 1.5, cv2.CV_64F)
    w = k @ k.T

    def filt(a: np.ndarray) -> np.ndarray:
        h, wd = a.shape
        out = np.empty((h - 10, wd - 10))
        for i in range(h - 10):
            for j in range(wd - 10):
                out[i, j] = (a[i : i + 11, j : j + 11] * w).sum()
        return out

    c1, c2 = 0.01**2, 0.03**2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    return float((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))).mean())


def test_identical_images_give_inf_psnr_zero_errors_unit_ssim(rng: np.random.Generator) -> None:
    img = _smooth_image(rng)
    assert metrics.psnr(img, img) == math.inf
    assert metrics.l1(img, img) == 0.0 and metrics.l2(img, img) == 0.0
    assert metrics.ssim(img, img) == pytest.approx(1.0, abs=1e-12)


def test_constant_offset_gives_analytic_psnr_and_errors(rng: np.random.Generator) -> None:
    img = rng.random((32, 32, 3)) * 0.8
    shifted = img + 0.1
    assert metrics.l1(img, shifted) == pytest.approx(0.1)
    assert metrics.l2(img, shifted) == pytest.approx(0.01)
    assert metrics.psnr(img, shifted) == pytest.approx(20.0)  # 10 log10(1 / 0.1^2)


def test_uint8_and_float_inputs_agree(rng: np.random.Generator) -> None:
    a_u8 = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
    b_u8 = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
    a01, b01 = a_u8 / 255.0, b_u8.astype(np.float32) / 255.0
    assert metrics.psnr(a_u8, b_u8) == pytest.approx(metrics.psnr(a01, b01), rel=1e-6)
    assert metrics.ssim(a_u8, b01) == pytest.approx(metrics.ssim(a01, b01), rel=1e-6)
    # The u8 scale: one grey level everywhere is an MSE of (1/255)^2 -> 48.13 dB.
    assert metrics.psnr(a_u8 // 2, a_u8 // 2 + 1) == pytest.approx(20 * math.log10(255.0))


def test_ssim_matches_the_reference_definition_and_is_symmetric(rng: np.random.Generator) -> None:
    x = _smooth_image(rng, 30)
    y = np.clip(x + rng.normal(0, 0.08, x.shape), 0, 1)
    expected = np.mean([_ssim_reference(x[..., c], y[..., c]) for c in range(3)])
    assert metrics.ssim(x, y) == pytest.approx(expected, abs=1e-10)
    assert metrics.ssim(x, y) == pytest.approx(metrics.ssim(y, x), abs=1e-12)
    assert metrics.ssim(x[..., 0], y[..., 0]) == pytest.approx(
        _ssim_reference(x[..., 0], y[..., 0]), abs=1e-10
    )


def test_more_noise_lowers_ssim(rng: np.random.Generator) -> None:
    img = _smooth_image(rng)
    noise = rng.normal(0, 1, img.shape)
    scores = [metrics.ssim(img, np.clip(img + s * noise, 0, 1)) for s in (0.0, 0.02, 0.1, 0.3)]
    assert scores[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False))
    assert scores[-1] < 0.5


def test_ssim_matches_scikit_image_when_installed(rng: np.random.Generator) -> None:
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image not installed (not a dependency)")
    x = _smooth_image(rng)
    y = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1)
    expected = skm.structural_similarity(
        x, y, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert metrics.ssim(x, y) == pytest.approx(expected, abs=1e-6)


def test_psnr_masked_uses_only_pixels_inside_the_mask() -> None:
    a = np.zeros((16, 16, 3))
    b = a.copy()
    b[:, 8:] = 0.5  # errors only in the right half
    b[:, :8] = 0.1  # ... and a smaller one in the left half
    right = np.zeros((16, 16), dtype=np.uint8)
    right[:, 8:] = 255
    assert metrics.psnr_masked(a, b, right) == pytest.approx(10 * math.log10(1 / 0.25))
    assert metrics.psnr_masked(a, b, right == 0) == pytest.approx(20.0)
    assert math.isnan(metrics.psnr_masked(a, b, np.zeros((16, 16), dtype=np.float32)))
    with pytest.raises(ValueError, match="mask must be"):
        metrics.psnr_masked(a, b, np.ones((8, 8), dtype=bool))


def test_mask_iou_known_overlap() -> None:
    p = np.zeros((10, 10), dtype=bool)
    t = np.zeros((10, 10), dtype=np.float32)
    p[0:4, 0:5] = True  # 20 px
    t[2:6, 0:5] = 1.0  # 20 px, 10 px shared
    assert metrics.mask_iou(p, t) == pytest.approx(10 / 30)
    assert metrics.mask_iou(p, p) == 1.0
    assert metrics.mask_iou(np.zeros((4, 4)), np.zeros((4, 4), dtype=np.uint8)) == 1.0
    assert metrics.mask_iou(p, ~p) == 0.0


def test_bad_inputs_raise_with_expected_and_got() -> None:
    with pytest.raises(ValueError, match=r"rgb01 in \[0, 1\], got range"):
        metrics.psnr(np.full((16, 16), 2.0), np.zeros((16, 16)))
    with pytest.raises(ValueError, match="same shape"):
        metrics.l1(np.zeros((16, 16, 3)), np.zeros((16, 15, 3)))
    with pytest.raises(ValueError, match="uint8 or float"):
        metrics.l2(np.zeros((4, 4), dtype=np.int32), np.zeros((4, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(np.zeros((8, 8)), np.zeros((8, 8)))


# --- identity (SFace) ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 256])
def test_crop_template_maps_onto_the_sface_template(size: int) -> None:
    m = crop_to_sface_matrix(size)
    mapped = template(size) @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, SFACE_TEMPLATE_112, atol=1e-6)


def _synthetic_face(size: int, seed: int) -> np.ndarray:
    """A face-like canonical crop: skin disc, dark eyes and mouth at the template landmarks."""
    r = np.random.default_rng(seed)
    img = np.full((size, size, 3), r.uniform(0.1, 0.3, 3), dtype=np.float32)
    c = size // 2
    cv2.ellipse(
        img, (c, c), (int(size * 0.3), int(size * 0.4)), 0, 0, 360, r.uniform(0.5, 0.9, 3).tolist(), -1
    )
    pts = template(size)
    for x, y in pts[:2]:
        cv2.circle(img, (int(x), int(y)), max(2, size // 30), r.uniform(0, 0.3, 3).tolist(), -1)
    cv2.line(img, tuple(pts[3].astype(int)), tuple(pts[4].astype(int)), (0.4, 0.1, 0.1), max(1, size // 40))
    return img


def test_sface_input_matches_opencv_align_crop() -> None:
    crop = (_synthetic_face(128, 1) * 255).astype(np.uint8)
    recognizer = cv2.FaceRecognizerSF.create(str(find_sface_model()), "")
    row = np.array([[0, 0, 128, 128, *template(128).ravel(), 0.99]], dtype=np.float32)
    expected = recognizer.alignCrop(np.ascontiguousarray(crop[..., ::-1]), row)
    got = sface_input(crop)
    assert got.shape == (SFACE_SIZE, SFACE_SIZE, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # rounding only


def test_embeddings_are_unit_norm_and_separate_different_images() -> None:
    embedder = IdentityEmbedder()
    a, b = _synthetic_face(96, 1), _synthetic_face(96, 2)
    emb = embedder.embed([a, (a * 255).astype(np.uint8), b])
    assert emb.shape == (3, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert cosine(emb[0], emb[1]) > 0.99  # same picture, u8 vs rgb01
    assert cosine(emb[0], emb[2]) < cosine(emb[0], emb[1])
    # A batch gives what single calls give.
    np.testing.assert_allclose(embedder.embed([b])[0], emb[2], atol=1e-5)


def test_identity_is_none_with_a_warning_when_the_sface_file_is_missing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import training.identity as identity

    monkeypatch.setattr(identity, "find_sface_model", lambda: None)
    with caplog.at_level("WARNING", logger="training.identity"):
        assert identity.IdentityEmbedder.create_or_none() is None
    assert len(caplog.records) == 1 and identity.SFACE_FILE in caplog.records[0].getMessage()
