"""Image restoration metrics on single images: PSNR, SSIM, L1, L2, PSNR inside a mask, mask IoU.

Every function takes (H, W, C) or (H, W) images, either ``uint8`` (0..255, divided by 255) or floating
point already in [0, 1] (``rgb01``); the two arguments may differ in dtype but not in shape. Values
are computed in float64 on [0, 1] data:

- ``l1``: mean |a - b| (a fraction, not %), in [0, 1]; 0 = identical.
- ``l2``: mean (a - b)^2 (a fraction, not %), in [0, 1]; 0 = identical.
- ``psnr``: 10 log10(1 / l2) in dB with data range 1.0, in [0, inf]; ``inf`` for identical images.
- ``psnr_masked``: PSNR over the pixels with mask >= 0.5; ``nan`` for an empty mask.
- ``ssim``: Gaussian-window SSIM (Wang et al. 2004), in [-1, 1]; 1 = identical.
- ``mask_iou``: |A and B| / |A or B| of masks binarized at 0.5, in [0, 1]; 1.0 when both are empty.

The paper reports L1/L2 as percentages; these functions return fractions (multiply by 100 for %).
Identical images give ``float('inf')`` PSNR on purpose (no silent cap); callers that average PSNR
over a data set decide how to cap it (see ``benchmarks.quality``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

MASK_THRESHOLD = 0.5
# Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, data range L = 1.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def as_rgb01(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """(H, W[, C]) uint8 or float in [0, 1] -> float64 in [0, 1] (a copy; uint8 is divided by 255)."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty (H, W) or (H, W, C) array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    lo, hi = float(np.min(out)), float(np.max(out))
    # Why a tolerance: fp16/fp32 network outputs land a hair outside [0, 1] after a sigmoid or blend.
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(f"{name} as float must be rgb01 in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return np.clip(out, 0.0, 1.0)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_rgb01(a, name="a"), as_rgb01(b, name="b")
    if x.shape != y.shape:
        raise ValueError(f"images must have the same shape, got {x.shape} and {y.shape}")
    return x, y


def binarize(mask: np.ndarray, *, name: str = "mask") -> np.ndarray:
    """(H, W) or (H, W, 1) bool, uint8 or float mask -> (H, W) bool, True where value >= 0.5 (of 1 or 255)."""
    arr = np.asarray(mask)
    m = arr.astype(np.float64) if arr.dtype == np.bool_ else as_rgb01(arr, name=name)
    if m.ndim == 3:
        if m.shape[2] != 1:
            raise ValueError(f"{name} must be (H, W) or (H, W, 1), got {m.shape}")
        m = m[..., 0]
    return m >= MASK_THRESHOLD


def l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute error on [0, 1] data, in [0, 1]."""
    x, y = _pair(a, b)
    return float(np.mean(np.abs(x - y)))


def l2(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error on [0, 1] data, in [0, 1]."""
    x, y = _pair(a, b)
    return float(np.mean((x - y) ** 2))


def _psnr_from_mse(mse: float) -> float:
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB with data range 1.0 over all pixels and channels; ``inf`` when a == b."""
    return _psnr_from_mse(l2(a, b))


def psnr_masked(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB over the pixels where ``mask`` >= 0.5 (all channels); ``nan`` if the mask is empty.

    ``mask``: (H, W) or (H, W, 1), uint8 or float, same H, W as the images.
    """
    x, y = _pair(a, b)
    m = binarize(mask)
    if m.shape != x.shape[:2]:
        raise ValueError(f"mask must be {x.shape[:2]} like the images, got {m.shape}")
    if not m.any():
        return math.nan
    return _psnr_from_mse(float(np.mean((x[m] - y[m]) ** 2)))


def _gaussian_filter(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.sepFilter2D(img, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REFLECT_101)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, range 1.0.

    Averaged over the 'valid' region (pixels whose window lies inside the image, as in the reference
    MATLAB code and scikit-image's ``gaussian_weights=True``), then over channels. Images must be at
    least 11 pixels on each side.
    """
    x, y = _pair(a, b)
    if min(x.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {x.shape[:2]}")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    kernel = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA, cv2.CV_64F)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    pad = SSIM_WINDOW // 2
    scores = []
    for ch in range(x.shape[2]):
        xc, yc = np.ascontiguousarray(x[..., ch]), np.ascontiguousarray(y[..., ch])
        mu_x, mu_y = _gaussian_filter(xc, kernel), _gaussian_filter(yc, kernel)
        var_x = _gaussian_filter(xc * xc, kernel) - mu_x**2
        var_y = _gaussian_filter(yc * yc, kernel) - mu_y**2
        cov = _gaussian_filter(xc * yc, kernel) - mu_x * mu_y
        num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
        den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        ssim_map = num / den
        scores.append(float(ssim_map[pad:-pad, pad:-pad].mean()))
    return float(np.mean(scores))


def mask_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """IoU of two (H, W[, 1]) masks binarized at 0.5; 1.0 when both are empty (perfect agreement)."""
    p, t = binarize(pred, name="pred"), binarize(target, name="target")
    if p.shape != t.shape:
        raise ValueError(f"masks must have the same shape, got {p.shape} and {t.shape}")
    union = int(np.count_nonzero(p | t))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(p & t)) / union
