"""Identity memory: a person's own texture, kept from frames where the lower face is bare, or from a
reference photo, and used instead of the statistical texture while an occluder covers it.

The texture is stored in the model's texture frame with the colour terms of the frames it came from,
so it can be recoloured to the current frame's lighting (the current fit's gain/offset), and its PCA
coefficients double as a person-specific :class:`~engines.prior.fit.TexturePrior` for the fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.prior.fit import PriorFit, PriorFitter, TexturePrior

SUBNASALE = 2  # mediapipe mesh point under the nose: below it is "the lower face"


@dataclass(frozen=True)
class MemoryConfig:
    """``min_lower_visible``: share of the lower-face texture pixels that must be visible for a frame to be
    remembered; ``rate``: weight of a new bare frame in the running texture; ``strength``: pull of the
    remembered coefficients in the fit (see :class:`TexturePrior`); ``texture_weight``: how much of the
    rendered texture is the remembered one (1) rather than the fit's statistical one (0). Measured with
    another photo of the person as the reference (``benchmarks/results/prior_quality.json``): 1 raises
    the identity cosine by ~0.05 and costs ~3.3 dB inside the mask (the photo's pose and expression
    differ); 0.5 is in between (+0.025, -1.3 dB; 12 faces at 128 px)."""

    min_lower_visible: float = 0.9
    rate: float = 0.2
    strength: float = 4.0
    texture_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.min_lower_visible <= 1.0:
            raise ValueError(f"min_lower_visible must be in (0, 1], got {self.min_lower_visible}")
        if not 0.0 < self.rate <= 1.0:
            raise ValueError(f"rate must be in (0, 1], got {self.rate}")
        if self.strength < 0:
            raise ValueError(f"strength must be >= 0, got {self.strength}")
        if not 0.0 <= self.texture_weight <= 1.0:
            raise ValueError(f"texture_weight must be in [0, 1], got {self.texture_weight}")


class IdentityMemory:
    """One per tracked face (or per webcam user with a reference); not thread-safe."""

    def __init__(self, fitter: PriorFitter, config: MemoryConfig | None = None) -> None:
        self.fitter = fitter
        self.config = config or MemoryConfig()
        m = fitter.model
        nose_v = float(m.shape_mean[SUBNASALE, 1])
        self._lower = fitter.frame_uv[:, 1] > nose_v
        p = m.tex_mean.shape[0]
        self._texture = np.zeros(
            (p, 3), dtype=np.float32
        )  # colour-neutral: this frame's colour terms removed
        self._weight = np.zeros(p, dtype=np.float32)
        self._coeffs: np.ndarray | None = None
        self.frames = 0

    @property
    def has_texture(self) -> bool:
        return self._coeffs is not None

    def observe(self, crop_rgb_u8: np.ndarray, occlusion_f32: np.ndarray, fit: PriorFit) -> bool:
        """Remember this frame's texture if its lower face is bare; returns whether it was remembered.

        ``crop_rgb_u8`` (S, S, 3) uint8 RGB and ``occlusion_f32`` (S, S) float32 (1 = occluded) as given
        to :meth:`PriorFitter.fit`, ``fit`` its result for this frame.
        """
        tex, visible = self.fitter.sample(crop_rgb_u8, occlusion_f32, fit.vertices_uv)
        if float(np.mean(visible[self._lower] > 0.5)) < self.config.min_lower_visible:
            return False
        self._add(tex, visible, fit)
        return True

    def load_reference(self, crop_rgb_u8: np.ndarray, landmarks_px: np.ndarray) -> PriorFit:
        """Fit an unoccluded reference crop (e.g. ``--reference photo.jpg`` aligned to the canonical crop)
        and remember it with full weight; returns its fit."""
        s = crop_rgb_u8.shape[0]
        clear = np.zeros((s, s), dtype=np.float32)
        fit = self.fitter.fit(crop_rgb_u8, clear, landmarks_px)
        tex, visible = self.fitter.sample(crop_rgb_u8, clear, fit.vertices_uv)
        self._weight[:] = 0.0
        self._add(tex, visible, fit, rate=1.0)
        return fit

    def _add(self, tex: np.ndarray, visible: np.ndarray, fit: PriorFit, rate: float | None = None) -> None:
        neutral = tex - self._colour_terms(fit)
        r = self.config.rate if rate is None else rate
        # A pixel's first sighting is taken whole; later ones blend in at the running rate.
        w_new = np.where(self._weight > 0, r, 1.0).astype(np.float32) * visible
        self._texture = (1.0 - w_new[:, None]) * self._texture + w_new[:, None] * neutral
        self._weight = np.maximum(self._weight, visible)
        c = fit.texture_coeffs
        self._coeffs = c.copy() if self._coeffs is None or rate == 1.0 else ((1 - r) * self._coeffs + r * c)
        self.frames += 1

    def _colour_terms(self, fit: PriorFit) -> np.ndarray:
        mean = self.fitter.model.tex_mean
        return (mean * fit.colour[:3] + fit.colour[3:]).astype(np.float32)

    def texture_prior(self) -> TexturePrior | None:
        """The remembered coefficients as the fit's prior mean, or None before any bare frame."""
        if self._coeffs is None:
            return None
        return TexturePrior(self._coeffs.astype(np.float32), self.config.strength)

    def texture_for(self, fit: PriorFit) -> np.ndarray | None:
        """(P, 3) float32 rgb01: the remembered texture in this frame's colour, the fit's own texture where
        nothing was remembered; None before any bare frame. Pass it to ``render_prior(texture_rgb01=...)``."""
        if self._coeffs is None:
            return None
        own = self.fitter.texture(fit)
        remembered = self._texture + self._colour_terms(fit)
        w = self.config.texture_weight * self._weight[:, None]
        return np.clip(w * remembered + (1.0 - w) * own, 0.0, 1.0).astype(np.float32)

    def reset(self) -> None:
        self._texture[:] = 0.0
        self._weight[:] = 0.0
        self._coeffs = None
        self.frames = 0
