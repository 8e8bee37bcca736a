"""Fitting the face prior to the visible part of one face (CPU, numpy; a few ms per face).

Shape: ridge regression of the shape PCA on the mesh landmarks, each weighted by how visible it is
(mediapipe's eyes, brows and nose bridge are accurate under a mask; its lips and chin under a mask are
a guess, so they count little). Texture: the crop is warped into the texture frame and the texture
PCA plus a per-channel gain and offset is fitted by ridge least squares to the visible pixels only,
then reweighted (Cauchy IRLS) so occluder pixels that the mask missed lose their pull.
Everything is a MAP estimate under the PCA's Gaussian prior: the ridge weight of a component is
``noise_std**2 / std_k**2``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from engines.errors import ShapeError
from engines.prior.frame import NUM_MESH, NUM_VERTICES, extend_vertices
from engines.prior.model import PriorModel

log = logging.getLogger(__name__)

NUM_COLOUR = 6  # per-channel gain (3) on the mean texture, then per-channel offset (3)
OCCLUDED_THRESHOLD = 0.05  # occlusion-mask values above this count as occluded for the fit


@dataclass(frozen=True)
class FitConfig:
    """How the prior is fitted.

    ``landmark_noise``: landmark error std in normalised crop units; ``occluded_landmark_weight``: the
    weight of a landmark under the occluder (1 = as trusted as a visible one). ``texture_noise``: rgb01
    error std of a visible texture value; ``gain_std`` / ``offset_std``: prior std of the colour terms.
    ``irls_passes``: robust reweighting rounds after the first solve; ``mask_grow``: the occluder mask is
    grown by this share of the crop side before the fit (its edge is seldom exact).
    ``min_visible``: below this share of visible texture pixels the texture stays the (colour-fitted) mean.
    """

    landmark_noise: float = 0.04
    occluded_landmark_weight: float = 0.0
    texture_noise: float = 0.3
    gain_std: float = 0.2
    offset_std: float = 0.1
    irls_passes: int = 1
    cauchy_scale: float = 2.5
    mask_grow: float = 0.0
    min_visible: float = 0.05

    def __post_init__(self) -> None:
        for name in ("landmark_noise", "texture_noise", "gain_std", "offset_std", "cauchy_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.occluded_landmark_weight <= 1.0:
            raise ValueError(
                f"occluded_landmark_weight must be in [0, 1], got {self.occluded_landmark_weight}"
            )
        if not 0 <= self.irls_passes <= 5:
            raise ValueError(f"irls_passes must be in [0, 5], got {self.irls_passes}")
        if not 0.0 <= self.mask_grow < 0.2:
            raise ValueError(f"mask_grow must be in [0, 0.2), got {self.mask_grow}")
        if not 0.0 <= self.min_visible < 1.0:
            raise ValueError(f"min_visible must be in [0, 1), got {self.min_visible}")


@dataclass(frozen=True)
class TexturePrior:
    """A person-specific prior on the texture coefficients (identity memory, a reference photo).

    ``coeffs`` (Kt,) float32 replace the PCA's zero mean; ``strength`` >= 0 scales the pull towards them
    (1 = the population prior's strength; larger trusts the reference more than the visible pixels).
    """

    coeffs: np.ndarray
    strength: float = 4.0

    def __post_init__(self) -> None:
        if self.coeffs.ndim != 1 or self.coeffs.dtype != np.float32:
            raise ValueError(f"coeffs must be (Kt,) float32, got {self.coeffs.shape} {self.coeffs.dtype}")
        if self.strength < 0:
            raise ValueError(f"strength must be >= 0, got {self.strength}")


@dataclass(frozen=True)
class PriorFit:
    """The prior fitted to one face.

    ``shape_coeffs`` (Ks,), ``texture_coeffs`` (Kt,), ``colour`` (6,) (gain r, g, b; offset r, g, b), all
    float32; ``vertices_uv`` (504, 2) float32 in normalised crop units; ``visible_fraction``: share of the
    model's texture pixels that were visible.
    """

    shape_coeffs: np.ndarray
    texture_coeffs: np.ndarray
    colour: np.ndarray
    vertices_uv: np.ndarray
    visible_fraction: float
    extras: dict[str, float] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.vertices_uv.shape != (NUM_VERTICES, 2):
            raise ValueError(f"vertices_uv must be ({NUM_VERTICES}, 2), got {self.vertices_uv.shape}")
        if self.colour.shape != (NUM_COLOUR,):
            raise ValueError(f"colour must be ({NUM_COLOUR},), got {self.colour.shape}")
        if self.shape_coeffs.ndim != 1 or self.texture_coeffs.ndim != 1:
            raise ValueError("shape_coeffs and texture_coeffs must be 1-D")


def _check_crop(crop_rgb_u8: np.ndarray, occlusion_f32: np.ndarray) -> int:
    if crop_rgb_u8.ndim != 3 or crop_rgb_u8.shape[2] != 3 or crop_rgb_u8.dtype != np.uint8:
        raise ShapeError(f"crop must be (S, S, 3) uint8 RGB, got {crop_rgb_u8.shape} {crop_rgb_u8.dtype}")
    s = crop_rgb_u8.shape[0]
    if crop_rgb_u8.shape[1] != s:
        raise ShapeError(f"crop must be square, got {crop_rgb_u8.shape[:2]}")
    if occlusion_f32.shape != (s, s) or occlusion_f32.dtype != np.float32:
        raise ShapeError(
            f"occlusion mask must be ({s}, {s}) float32 in [0, 1], got {occlusion_f32.shape} {occlusion_f32.dtype}"
        )
    return s


class PriorFitter:
    """Fits a :class:`PriorModel` to faces. Holds read-only precomputations (and the set of fallbacks it has
    logged): share it across threads."""

    def __init__(self, model: PriorModel, config: FitConfig | None = None) -> None:
        self.model = model
        self.config = config or FitConfig()
        self._noted: set[str] = set()
        c = self.config
        basis = model.tex_basis_flat  # (3P, Kt)
        mean = model.tex_mean.reshape(-1).astype(np.float32)
        p = model.tex_mean.shape[0]
        channel = np.tile(np.arange(3), p)
        gain_cols = np.zeros((3 * p, 3), dtype=np.float32)
        gain_cols[np.arange(3 * p), channel] = mean
        offset_cols = np.zeros((3 * p, 3), dtype=np.float32)
        offset_cols[np.arange(3 * p), channel] = 1.0
        self._design = np.ascontiguousarray(np.concatenate([basis, gain_cols, offset_cols], axis=1))
        self._tex_mean = mean
        prior_std = np.concatenate(
            [model.tex_std, np.full(3, c.gain_std, np.float32), np.full(3, c.offset_std, np.float32)]
        )
        self._tex_ridge = (c.texture_noise / prior_std) ** 2  # MAP weight of each coefficient
        self._shape_ridge = (c.landmark_noise / model.shape_std.astype(np.float64)) ** 2
        t = model.tex_size
        # Frame pixel centres in normalised units, for the inverse warp's displacement field.
        self._frame_uv = np.stack(
            [(model.raster.pixels % t + 0.5) / t, (model.raster.pixels // t + 0.5) / t], axis=1
        ).astype(np.float32)

    # ----------------------------------------------------------------------------------------- shape
    def fit_shape(
        self, landmarks_px: np.ndarray, crop_size: int, occlusion_f32: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """((Ks,) float32 coefficients, (504, 2) float32 vertices) from (468+, 2|3) crop-pixel landmarks.

        ``occlusion_f32`` (S, S) in [0, 1] (1 = occluded) down-weights the landmarks it covers; where a
        landmark is visible the vertex is the landmark itself, where it is hidden the vertex is the
        shape model's prediction from the visible ones.
        """
        pts = np.asarray(landmarks_px, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[0] < NUM_MESH or pts.shape[1] not in (2, 3):
            raise ShapeError(f"landmarks must be (468 or 478, 2 or 3) crop pixels, got {pts.shape}")
        uv = (pts[:NUM_MESH, :2] + 0.5) / crop_size
        weight = np.ones(NUM_MESH)
        if occlusion_f32 is not None:
            occ = self._grown(occlusion_f32)
            ij = np.clip(np.rint(pts[:NUM_MESH, :2]).astype(int), 0, crop_size - 1)
            hidden = occ[ij[:, 1], ij[:, 0]]
            weight = 1.0 - hidden * (1.0 - self.config.occluded_landmark_weight)
        m = self.model
        basis = m.shape_basis_flat  # (936, Ks)
        w2 = np.repeat(weight, 2)
        lhs = (basis * w2[:, None]).T @ basis + np.diag(self._shape_ridge)
        rhs = (basis * w2[:, None]).T @ (uv.reshape(-1) - m.shape_mean.reshape(-1))
        coeffs = np.linalg.solve(lhs, rhs)
        fitted = (m.shape_mean.reshape(-1) + basis @ coeffs).reshape(NUM_MESH, 2)
        mix = weight[:, None]
        mesh = mix * uv + (1.0 - mix) * fitted
        return coeffs.astype(np.float32), extend_vertices(mesh, m.oval).astype(np.float32)

    # --------------------------------------------------------------------------------------- texture
    def sample(
        self, crop_rgb_u8: np.ndarray, occlusion_f32: np.ndarray, vertices_uv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """((P, 3) float32 rgb01 texture, (P,) float32 visibility in {0, 1}) of the crop in the texture frame."""
        s = _check_crop(crop_rgb_u8, occlusion_f32)
        t = self.model.tex_size
        small = cv2.resize(crop_rgb_u8, (t, t), interpolation=cv2.INTER_AREA)
        occ = cv2.resize(self._grown(occlusion_f32), (t, t), interpolation=cv2.INTER_AREA)
        pos = self.model.raster.positions(vertices_uv) * t - 0.5
        mx, my = np.ascontiguousarray(pos[None, :, 0]), np.ascontiguousarray(pos[None, :, 1])
        tex = cv2.remap(small, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]
        hidden = cv2.remap(occ, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)[0]
        del s
        # Area resize and bilinear sampling both spread a pixel into its neighbours; a sample is visible
        # only if no occluded pixel contributes to it, so occluder colour cannot leak into the fit.
        visible = (hidden <= 0.0).astype(np.float32)
        return tex.astype(np.float32) / 255.0, visible

    def fit_texture(
        self,
        texture_rgb01: np.ndarray,
        visible: np.ndarray,
        prior: TexturePrior | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """((Kt,) texture coefficients, (6,) colour, diagnostics) fitted to the visible texture values."""
        c, m = self.config, self.model
        kt = m.num_texture
        x = texture_rgb01.reshape(-1) - self._tex_mean
        w_pix = visible.astype(np.float32)
        keep = np.flatnonzero(w_pix > 0.05)
        target = np.zeros(kt + NUM_COLOUR, dtype=np.float64)
        if prior is not None:
            if prior.coeffs.shape != (kt,):
                raise ShapeError(f"texture prior must be ({kt},), got {prior.coeffs.shape}")
            target[:kt] = prior.coeffs
        ridge = self._tex_ridge.astype(np.float64).copy()
        if prior is not None:
            ridge[:kt] *= max(prior.strength, 1e-6)
        if keep.size < c.min_visible * w_pix.size:
            # Too little is visible to say anything about the texture: keep the prior's mean and say so.
            self._note("too little of the face is visible: the texture stays the prior's mean")
            return (
                target[:kt].astype(np.float32),
                np.zeros(NUM_COLOUR, np.float32),
                {"irls_outliers": 0.0, "texture_from_visible": 0.0},
            )
        rows = (keep[:, None] * 3 + np.arange(3)).reshape(-1)
        design = self._design[rows]
        xv = x[rows]
        robust = np.ones(keep.size, dtype=np.float32)
        coeffs = target
        outliers = 0.0
        for it in range(c.irls_passes + 1):
            w = np.repeat(w_pix[keep] * robust, 3)
            dw = design * w[:, None]
            lhs = (dw.T @ design).astype(np.float64) + np.diag(ridge)
            rhs = (dw.T @ xv).astype(np.float64) + ridge * target
            coeffs = np.linalg.solve(lhs, rhs)
            if it == c.irls_passes:
                break
            resid = np.linalg.norm((xv - design @ coeffs.astype(np.float32)).reshape(-1, 3), axis=1)
            scale = 1.4826 * float(np.median(resid)) + 1e-4
            robust = (1.0 / (1.0 + (resid / (c.cauchy_scale * scale)) ** 2)).astype(np.float32)
            outliers = float(np.mean(robust < 0.5))
        extras = {"irls_outliers": outliers, "texture_from_visible": 1.0}
        return coeffs[:kt].astype(np.float32), coeffs[kt:].astype(np.float32), extras

    def texture(self, fit: PriorFit) -> np.ndarray:
        """(P, 3) float32 rgb01 texture of a fit (coefficients and colour applied), clipped to [0, 1]."""
        coeffs = np.concatenate([fit.texture_coeffs, fit.colour])
        flat = self._tex_mean + self._design @ coeffs
        return np.clip(flat, 0.0, 1.0).reshape(-1, 3)

    # ------------------------------------------------------------------------------------------- all
    def fit(
        self,
        crop_rgb_u8: np.ndarray,
        occlusion_f32: np.ndarray,
        landmarks_px: np.ndarray | None,
        *,
        texture_prior: TexturePrior | None = None,
    ) -> PriorFit:
        """Fit shape and texture to one canonical crop.

        ``crop_rgb_u8``: (S, S, 3) uint8 RGB canonical crop; ``occlusion_f32``: (S, S) float32 in [0, 1],
        1 = occluded (the detector's mask); ``landmarks_px``: (468 or 478, 2|3) mesh landmarks in crop pixels,
        or None where the mesh found no face (a hand over the face): then the shape is the mean shape,
        which the canonical alignment already puts roughly in place, and only the texture is fitted.
        """
        s = _check_crop(crop_rgb_u8, occlusion_f32)
        if landmarks_px is None:
            self._note("no mesh landmarks: the prior is fitted in the mean shape")
            shape_coeffs = np.zeros(self.model.num_shape, dtype=np.float32)
            vertices = self.model.mean_vertices.astype(np.float32)
        else:
            shape_coeffs, vertices = self.fit_shape(landmarks_px, s, occlusion_f32)
        tex, visible = self.sample(crop_rgb_u8, occlusion_f32, vertices)
        tex_coeffs, colour, extras = self.fit_texture(tex, visible, texture_prior)
        return PriorFit(shape_coeffs, tex_coeffs, colour, vertices, float(np.mean(visible > 0.5)), extras)

    def _note(self, fallback: str) -> None:
        """Log each kind of fallback once per fitter (they can happen every frame); fits count them in extras."""
        if fallback not in self._noted:
            self._noted.add(fallback)
            log.info("face prior: %s (logged once)", fallback)

    def _grown(self, occlusion_f32: np.ndarray) -> np.ndarray:
        s = occlusion_f32.shape[0]
        px = int(round(self.config.mask_grow * s))
        # Binary at a low threshold: a soft mask's faint tail counts as occluded, its ~0 noise does not.
        occ = (occlusion_f32 > OCCLUDED_THRESHOLD).astype(np.float32)
        if px <= 0:
            return occ
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
        return cv2.dilate(occ, kernel)

    @property
    def frame_uv(self) -> np.ndarray:
        """(P, 2) float32 normalised positions of the texture frame's pixel centres (read-only)."""
        return self._frame_uv
