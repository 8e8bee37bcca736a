"""Face-suited augmentation applied identically to a clean crop, its occluded copy and the mask.

Order: geometry (flip, small rotation/scale/shift about the crop centre) -> colour and illumination
jitter -> blur -> sensor noise -> JPEG re-compression. Every step uses the same parameters (and the same
noise field) for both images, and the geometric warp and the blur are applied to the mask too, so a pixel
whose mask is 0 stays identical in both images through every step but JPEG. JPEG works on 16x16 blocks
(with chroma subsampling), so it can also change unmasked pixels that share a block with the occluder,
as it does in real compressed video; the target keeps the same degradations so that the composite
(restored inside the mask, input outside) matches the target everywhere.

Rotation and scale stay small on purpose: the crops come from the alignment the stream pipeline uses, and
the networks should see the residual jitter of that alignment, not arbitrary poses.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of each augmentation; probabilities in [0, 1]. ``max_blur_sigma`` is in pixels at 256 px."""

    flip_prob: float = 0.5
    max_rotate_deg: float = 8.0
    max_scale: float = 0.08
    max_shift: float = 0.04
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    max_hue_deg: float = 6.0
    gamma: float = 0.25
    blur_prob: float = 0.25
    max_blur_sigma: float = 1.5
    noise_prob: float = 0.2
    max_noise: float = 0.03
    jpeg_prob: float = 0.4
    jpeg_quality: tuple[int, int] = (35, 95)

    def __post_init__(self) -> None:
        for name in ("flip_prob", "blur_prob", "noise_prob", "jpeg_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("max_rotate_deg", "max_scale", "max_shift", "brightness", "contrast", "saturation",
                     "max_hue_deg", "gamma", "max_blur_sigma", "max_noise"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_scale >= 1 or self.gamma >= 1 or self.brightness >= 1 or self.contrast >= 1:
            raise ValueError(
                "max_scale, gamma, brightness and contrast must be < 1 (they are relative changes)"
            )
        lo, hi = self.jpeg_quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError(
                f"jpeg_quality must be (lo, hi) with 1 <= lo <= hi <= 100, got {self.jpeg_quality}"
            )
        object.__setattr__(self, "jpeg_quality", (int(lo), int(hi)))

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all (evaluation)."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _colour(
    rgb01: np.ndarray,
    gain: np.ndarray,
    pivot: float,
    contrast: float,
    saturation: float,
    hue: float,
    gamma: float,
) -> np.ndarray:
    """Per-pixel colour transform; ``pivot`` (the contrast centre) is passed in, not measured, so both
    images of a pair get the same transform."""
    out = rgb01 * gain
    out = (out - pivot) * contrast + pivot
    grey = out @ np.array([0.299, 0.587, 0.114], np.float32)
    out = grey[..., None] + (out - grey[..., None]) * saturation
    if hue != 0.0:
        # Hue rotation about the grey axis u = (1,1,1)/sqrt(3) (Rodrigues), cheaper than a trip through HSV.
        c, s = np.cos(hue), np.sin(hue)
        cross = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / np.sqrt(3)
        rot = c * np.eye(3) + (1 - c) / 3 * np.ones((3, 3)) + s * cross
        out = out @ rot.T.astype(np.float32)
    return np.clip(np.clip(out, 0, 1) ** gamma, 0, 1)


def _jpeg(rgb_u8: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb_u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        raise RuntimeError("OpenCV failed to JPEG round-trip an augmentation sample")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def augment_pair(
    clean_rgb_u8: np.ndarray,
    occluded_rgb_u8: np.ndarray,
    mask_f32: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augments (clean, occluded, mask) identically; returns new (S, S, 3) uint8 RGB x2 and (S, S) float32.

    Deterministic given ``rng``'s state. ``config`` defaults to :class:`AugmentConfig`().
    """
    cfg = config or AugmentConfig()
    s = clean_rgb_u8.shape[0]
    if clean_rgb_u8.shape != (s, s, 3) or occluded_rgb_u8.shape != (s, s, 3) or mask_f32.shape != (s, s):
        raise ValueError(
            f"expected (S, S, 3), (S, S, 3), (S, S); got {clean_rgb_u8.shape}, {occluded_rgb_u8.shape}, {mask_f32.shape}"
        )
    # Draw every parameter up front so the random stream does not depend on which steps fire.
    flip = rng.random() < cfg.flip_prob
    angle = rng.uniform(-cfg.max_rotate_deg, cfg.max_rotate_deg)
    scale = 1.0 + rng.uniform(-cfg.max_scale, cfg.max_scale)
    shift = rng.uniform(-cfg.max_shift, cfg.max_shift, 2) * s
    gain = (1 + rng.uniform(-cfg.brightness, cfg.brightness)) * (
        1 + rng.uniform(-0.05, 0.05, 3) * (cfg.brightness > 0)
    )
    contrast = 1 + rng.uniform(-cfg.contrast, cfg.contrast)
    saturation = 1 + rng.uniform(-cfg.saturation, cfg.saturation)
    hue = np.deg2rad(rng.uniform(-cfg.max_hue_deg, cfg.max_hue_deg))
    gamma = 1 + rng.uniform(-cfg.gamma, cfg.gamma)
    blur = rng.random() < cfg.blur_prob
    sigma = rng.uniform(0.3, max(0.3, cfg.max_blur_sigma)) * s / 256.0
    noisy = rng.random() < cfg.noise_prob
    noise_sigma = rng.uniform(0.0, cfg.max_noise)
    noise_seed = int(rng.integers(2**31))
    jpeg = rng.random() < cfg.jpeg_prob
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))

    images = [clean_rgb_u8, occluded_rgb_u8]
    mask: np.ndarray = mask_f32.astype(np.float32)
    if flip:
        images = [im[:, ::-1] for im in images]
        mask = mask[:, ::-1]
    if angle != 0.0 or scale != 1.0 or np.any(shift != 0.0):
        m = cv2.getRotationMatrix2D(((s - 1) / 2.0, (s - 1) / 2.0), angle, scale)
        m[:, 2] += shift
        images = [
            cv2.warpAffine(
                np.ascontiguousarray(im), m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
            )
            for im in images
        ]
        # The same reflected border as the images: a reflected occluder is an occluder.
        mask = cv2.warpAffine(
            np.ascontiguousarray(mask), m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
    floats: list[np.ndarray] = [np.ascontiguousarray(im).astype(np.float32) / 255.0 for im in images]
    pivot = float(floats[0].mean()) * float(np.mean(gain))  # from the clean image, used for both
    floats = [_colour(f, gain.astype(np.float32), pivot, contrast, saturation, hue, gamma) for f in floats]
    if blur and cfg.max_blur_sigma > 0:
        floats = [cv2.GaussianBlur(f, (0, 0), sigma) for f in floats]
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)  # the occluder's blur spills outside: so does its mask
    if noisy and noise_sigma > 0:
        noise = np.random.default_rng(noise_seed).normal(0.0, noise_sigma, (s, s, 1)).astype(np.float32)
        floats = [f + noise for f in floats]  # luminance noise, identical in both images
    out = [np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8) for f in floats]
    if jpeg:
        out = [_jpeg(im, quality) for im in out]
    return out[0], out[1], np.clip(mask, 0.0, 1.0).astype(np.float32)
