"""Rendering a fitted prior into the canonical crop, and blending it into the occluded region.

The texture lives in the model's frame (the mean shape); a face's vertices map that frame piecewise-
affinely into the crop. Rendering rasterises the face's triangles in the crop and maps each pixel back.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engines.errors import ShapeError
from engines.prior.fill import push_pull_fill
from engines.prior.fit import PriorFit, PriorFitter


@dataclass(frozen=True)
class RenderedPrior:
    """The prior drawn into a canonical crop: ``rgb01`` (S, S, 3) float32 RGB in [0, 1] and ``alpha``
    (S, S) float32 in [0, 1], where the model covers the crop (face, plus a band past the face oval)."""

    rgb01: np.ndarray
    alpha: np.ndarray

    def __post_init__(self) -> None:
        s = self.alpha.shape[0]
        if self.rgb01.shape != (s, s, 3) or self.alpha.shape != (s, s):
            raise ValueError(
                f"rgb01 must be (S, S, 3) and alpha (S, S), got {self.rgb01.shape} and {self.alpha.shape}"
            )


def _frame_image(fitter: PriorFitter, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scatter (P, C) per-domain-pixel values into a (T, T, C) frame image filled smoothly outside."""
    m = fitter.model
    t = m.tex_size
    flat = np.zeros((t * t, values.shape[1]), dtype=np.float32)
    flat[m.raster.pixels] = values
    dom = m.raster.domain().astype(np.float32)
    return push_pull_fill(flat.reshape(t, t, -1), dom), dom


def _triangle_maps(src_px: np.ndarray, dst_px: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(F, 2, 3) affine maps taking each triangle's crop-pixel corners to its frame-pixel corners."""
    tri_src, tri_dst = src_px[triangles], dst_px[triangles]  # (F, 3, 2)
    homog = np.concatenate([tri_src, np.ones((len(triangles), 3, 1))], axis=2)  # (F, 3, 3)
    det = np.linalg.det(homog)
    ok = np.abs(det) > 1e-9
    maps = np.zeros((len(triangles), 2, 3))
    maps[ok] = np.transpose(np.linalg.solve(homog[ok], tri_dst[ok]), (0, 2, 1))
    return maps


def render_prior(
    fitter: PriorFitter,
    fit: PriorFit,
    crop_size: int,
    *,
    texture_rgb01: np.ndarray | None = None,
    region: np.ndarray | None = None,
) -> RenderedPrior:
    """Draw ``fit`` into an S x S crop. ``texture_rgb01`` (P, 3) overrides the fit's PCA texture (memory).

    The face's triangles are rasterised in the crop (triangle ids; where triangles fold over at an
    extreme pose, the later one wins), each pixel is mapped by its triangle's affine map back into the
    texture frame, and the frame is sampled bilinearly. With ``region`` (S, S) (e.g. the occlusion mask),
    only triangles that reach its bounding box are drawn (alpha 0 elsewhere): the rest is never shown.
    """
    m = fitter.model
    t = m.tex_size
    tex = fitter.texture(fit) if texture_rgb01 is None else np.asarray(texture_rgb01, dtype=np.float32)
    if tex.shape != m.tex_mean.shape:
        raise ShapeError(f"texture must be {m.tex_mean.shape} (P, 3) rgb01, got {tex.shape}")
    frame_rgb, dom = _frame_image(fitter, tex)
    crop_px = fit.vertices_uv.astype(np.float64) * crop_size - 0.5
    frame_px = m.mean_vertices * t - 0.5
    maps = _triangle_maps(crop_px, frame_px, m.triangles)
    ids = np.zeros((crop_size, crop_size), dtype=np.int32)
    tri_px = crop_px[m.triangles]  # (F, 3, 2)
    todo = np.arange(len(m.triangles))
    if region is not None:
        if region.shape != (crop_size, crop_size):
            raise ShapeError(f"region must be ({crop_size}, {crop_size}), got {region.shape}")
        ys, xs = np.nonzero(region > 0)
        if ys.size == 0:
            return RenderedPrior(
                np.zeros((crop_size, crop_size, 3), np.float32), np.zeros((crop_size, crop_size), np.float32)
            )
        lo, hi = tri_px.min(1), tri_px.max(1)
        todo = np.flatnonzero(
            (hi[:, 0] >= xs.min() - 1)
            & (lo[:, 0] <= xs.max() + 1)
            & (hi[:, 1] >= ys.min() - 1)
            & (lo[:, 1] <= ys.max() + 1)
        )
    corners = np.round(tri_px * 16.0).astype(np.int32)  # 4 fractional bits
    for i in todo:
        cv2.fillConvexPoly(ids, corners[i], int(i) + 1, lineType=cv2.LINE_8, shift=4)
    inside = ids > 0
    ys, xs = np.nonzero(inside)
    a = maps[ids[inside] - 1]  # (N, 2, 3)
    fx = a[:, 0, 0] * xs + a[:, 0, 1] * ys + a[:, 0, 2]
    fy = a[:, 1, 0] * xs + a[:, 1, 1] * ys + a[:, 1, 2]
    mx = np.full((crop_size, crop_size), -10.0, dtype=np.float32)
    my = np.full((crop_size, crop_size), -10.0, dtype=np.float32)
    mx[inside], my[inside] = fx, fy
    rgb = cv2.remap(frame_rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.remap(dom, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    alpha[~inside] = 0.0
    return RenderedPrior(np.clip(rgb, 0.0, 1.0).astype(np.float32), alpha.astype(np.float32))


def blend_prior(
    crop_rgb01: np.ndarray,
    prior: RenderedPrior,
    region_f32: np.ndarray,
    *,
    seam_correction: bool = True,
) -> np.ndarray:
    """(S, S, 3) float32 rgb01: the crop with ``region_f32`` (S, S) in [0, 1] replaced by the prior.

    Inside the region, where the prior has no coverage (alpha 0), the crop is filled smoothly from its
    visible surroundings. With ``seam_correction`` the difference between the crop and the prior on
    the visible pixels is interpolated into the region and added (a Poisson-like blend: no colour step at
    the region's edge, the prior's own detail kept inside).
    """
    s = region_f32.shape[0]
    if crop_rgb01.shape != (s, s, 3) or prior.rgb01.shape != (s, s, 3) or region_f32.shape != (s, s):
        raise ShapeError(
            f"crop (S, S, 3), prior (S, S, 3) and region (S, S) must agree, got {crop_rgb01.shape}, "
            f"{prior.rgb01.shape}, {region_f32.shape}"
        )
    region = np.clip(region_f32.astype(np.float32), 0.0, 1.0)
    out = crop_rgb01.astype(np.float32).copy()
    ys, xs = np.nonzero(region > 0)
    if ys.size == 0:
        return out
    # Work on the region's bounding box plus a margin: the fills only need the region's surroundings.
    pad = max(4, s // 8)
    y0, y1 = max(0, int(ys.min()) - pad), min(s, int(ys.max()) + pad + 1)
    x0, x1 = max(0, int(xs.min()) - pad), min(s, int(xs.max()) + pad + 1)
    box = (slice(y0, y1), slice(x0, x1))
    crop, reg = crop_rgb01[box].astype(np.float32), region[box]
    visible = (reg < 0.5).astype(np.float32)
    fill = push_pull_fill(crop, visible)
    a = prior.alpha[box][..., None]
    base = a * prior.rgb01[box] + (1.0 - a) * fill
    if seam_correction:
        base = base + push_pull_fill(crop - base, visible)
    r = reg[..., None]
    out[box] = r * base + (1.0 - r) * crop
    return np.clip(out, 0.0, 1.0)
