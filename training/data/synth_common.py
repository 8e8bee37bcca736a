"""Shared pieces of occlusion synthesis: the result type, the face's geometry inside the canonical crop,
layer compositing, illumination matching and fabric patterns.

Coordinates: every renderer works in the canonical crop of :mod:`engines.crop` (the same alignment the
stream pipeline uses). Shapes are defined in *face units* ``(a, b)``: ``a`` runs across the face in
eye-distances from the eye midpoint (eyes at a = -0.5 / +0.5), ``b`` runs down the face in eye-to-mouth
distances from the eye line (eyes at b = 0, mouth at b = 1, chin near b = 1.7). Because the crop
geometry is fixed, a face-mask outline written in face units lands on the nose bridge and under the
chin of any aligned face; landmarks of the actual face (if known) bend the frame to that face.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import cv2
import numpy as np

from engines.crop import template


@dataclass(frozen=True)
class Occlusion:
    """A synthesised occlusion on one canonical crop.

    ``image_rgb_u8``: (S, S, 3) uint8 RGB, the occluded face. ``mask_f32``: (S, S) float32 in [0, 1],
    1 = occluded; edges are antialiased, and every pixel with mask 0 is bit-identical to the clean face,
    so ``mask > 0.5`` is the binary annotation. ``kind``: what occludes (e.g. "facemask/surgical").
    """

    image_rgb_u8: np.ndarray
    mask_f32: np.ndarray
    kind: str

    def __post_init__(self) -> None:
        img, m = self.image_rgb_u8, self.mask_f32
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"image_rgb_u8 must be (S, S, 3) uint8, got {img.shape} {img.dtype}")
        if m.shape != img.shape[:2] or m.dtype != np.float32:
            raise ValueError(f"mask_f32 must be {img.shape[:2]} float32, got {m.shape} {m.dtype}")
        if m.size and (float(m.min()) < 0.0 or float(m.max()) > 1.0):
            raise ValueError(f"mask_f32 must lie in [0, 1], got [{m.min():.3f}, {m.max():.3f}]")


@dataclass(frozen=True)
class FaceGeometry:
    """Maps face units (a, b) to crop pixels for one face in an S x S canonical crop.

    ``landmarks``: (5, 2) crop pixel coordinates (left eye, right eye, nose, left and right mouth corner
    as seen in the image); by default the canonical template, i.e. the face exactly as aligned.
    """

    crop_size: int
    landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.landmarks is None:
            object.__setattr__(self, "landmarks", template(self.crop_size))
        lm = np.asarray(self.landmarks, dtype=np.float64)
        if lm.shape != (5, 2) or not np.all(np.isfinite(lm)):
            raise ValueError(f"landmarks must be finite (5, 2) crop coordinates, got {lm.shape}")
        object.__setattr__(self, "landmarks", lm)

    @property
    def points(self) -> np.ndarray:
        """The (5, 2) float64 landmarks (validated; the template when none were given)."""
        assert self.landmarks is not None  # set in __post_init__
        return self.landmarks

    @cached_property
    def _frame(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(origin px, 2x2 matrix face-units -> px, eye distance px, eye-to-mouth px)."""
        lm = self.points
        eye_mid = (lm[0] + lm[1]) / 2
        mouth_mid = (lm[3] + lm[4]) / 2
        across = lm[1] - lm[0]
        ed = float(np.linalg.norm(across))
        down = mouth_mid - eye_mid
        em = float(np.linalg.norm(down))
        if ed < 1e-3 or em < 1e-3:
            raise ValueError("landmarks are degenerate (eyes or mouth coincide)")
        ax = across / ed
        # Why the eye line's normal instead of the eye->mouth vector: a yawed face shifts the mouth
        # sideways, and the outline should stay upright with the head, not lean with the yaw.
        ay = np.array([-ax[1], ax[0]])
        if float(ay @ down) < 0:
            ay = -ay
        em_perp = float(ay @ down)
        basis = np.stack([ax * ed, ay * em_perp], axis=1)
        return eye_mid, basis, ed, em_perp

    @property
    def eye_distance_px(self) -> float:
        return self._frame[2]

    @property
    def eye_mouth_px(self) -> float:
        return self._frame[3]

    @cached_property
    def yaw(self) -> float:
        """Nose offset from the eye/mouth midline in eye-distances (~ +-0.3 for a strongly turned head)."""
        a, _ = self.to_face(self.points)
        return float(a[2] - (a[0] + a[1] + a[3] + a[4]) / 4)

    @cached_property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Face units (a, b) of every crop pixel centre, two (S, S) float32 arrays (read-only)."""
        s = self.crop_size
        ys, xs = np.mgrid[0:s, 0:s].astype(np.float64)
        a, b = self.to_face(np.stack([xs.ravel(), ys.ravel()], axis=1))
        a32, b32 = a.reshape(s, s).astype(np.float32), b.reshape(s, s).astype(np.float32)
        a32.flags.writeable = False
        b32.flags.writeable = False
        return a32, b32

    def to_face(self, points_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        origin, basis, _, _ = self._frame
        ab = (np.asarray(points_xy, dtype=np.float64).reshape(-1, 2) - origin) @ np.linalg.inv(basis).T
        return ab[:, 0], ab[:, 1]

    def to_px(self, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
        """(N, 2) crop pixel coordinates of face-unit points."""
        origin, basis, _, _ = self._frame
        ab = np.stack([np.atleast_1d(np.asarray(a, float)), np.atleast_1d(np.asarray(b, float))], axis=1)
        return ab @ basis.T + origin


Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (exclusive ends) inside the crop


def box_of(alpha: np.ndarray, margin: int = 1) -> Box:
    """Smallest box holding every alpha > 0 pixel (plus ``margin``); (0, 0, 0, 0) when alpha is empty."""
    ys = np.flatnonzero(alpha.max(axis=1) > 0)
    xs = np.flatnonzero(alpha.max(axis=0) > 0)
    if len(ys) == 0:
        return (0, 0, 0, 0)
    h, w = alpha.shape
    return (
        max(0, ys[0] - margin),
        min(h, ys[-1] + 1 + margin),
        max(0, xs[0] - margin),
        min(w, xs[-1] + 1 + margin),
    )


@lru_cache(maxsize=8)
def canonical_geometry(crop_size: int) -> FaceGeometry:
    """The template face's geometry; memoised because its pixel grid is the same for every sample."""
    return FaceGeometry(crop_size)


@dataclass
class Layer:
    """One painted layer inside ``box`` of the crop: rgb01 (h, w, 3) float32 colour and alpha (h, w)
    float32 in [0, 1]. Renderers work inside the occluder's box because most occluders cover a fifth of
    the crop, and whole-crop arithmetic made synthesis several times slower."""

    rgb01: np.ndarray
    alpha: np.ndarray
    box: Box

    @classmethod
    def from_full(
        cls, alpha_full: np.ndarray, rgb_full: np.ndarray | None = None, colour: np.ndarray | None = None
    ) -> Layer:
        """Crops a whole-crop alpha (and colour field, or one colour times nothing) to its box."""
        y0, y1, x0, x1 = box = box_of(alpha_full)
        if rgb_full is not None:
            rgb = rgb_full[y0:y1, x0:x1]
        else:
            rgb = np.broadcast_to(np.asarray(colour, np.float32), (y1 - y0, x1 - x0, 3))
        return cls(np.asarray(rgb, np.float32), alpha_full[y0:y1, x0:x1], box)

    @classmethod
    def lit(cls, alpha_full: np.ndarray, colour: np.ndarray, light: np.ndarray) -> Layer:
        """A one-colour layer (strings, straps, frames) shaded by the (S, S, 3) ``light`` multiplier."""
        y0, y1, x0, x1 = box = box_of(alpha_full)
        rgb = np.asarray(colour, np.float32) * light[y0:y1, x0:x1]
        return cls(rgb.astype(np.float32), alpha_full[y0:y1, x0:x1], box)


def composite(face_rgb_u8: np.ndarray, layers: list[Layer], kind: str) -> Occlusion:
    """Paints layers over the face in order; pixels no layer touches stay bit-identical."""
    h, w = face_rgb_u8.shape[:2]
    boxes = [layer.box for layer in layers if layer.box[1] > layer.box[0] and layer.box[3] > layer.box[2]]
    mask = np.zeros((h, w), np.float32)
    image = face_rgb_u8.copy()
    if not boxes:
        return Occlusion(image_rgb_u8=image, mask_f32=mask, kind=kind)
    # Arithmetic runs over the union box of the layers only.
    uy0, uy1 = min(b[0] for b in boxes), max(b[1] for b in boxes)
    ux0, ux1 = min(b[2] for b in boxes), max(b[3] for b in boxes)
    face = face_rgb_u8[uy0:uy1, ux0:ux1]
    out = face.astype(np.float32) / 255.0
    keep = np.ones(out.shape[:2], np.float32)
    for layer in layers:
        y0, y1, x0, x1 = layer.box
        if y1 <= y0 or x1 <= x0:
            continue
        ys, xs = slice(y0 - uy0, y1 - uy0), slice(x0 - ux0, x1 - ux0)
        alpha = np.clip(layer.alpha, 0.0, 1.0).astype(np.float32)[..., None]
        out[ys, xs] = out[ys, xs] * (1 - alpha) + np.clip(layer.rgb01, 0, 1) * alpha
        keep[ys, xs] *= 1 - alpha[..., 0]
    local = 1.0 - keep
    painted = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    image[uy0:uy1, ux0:ux1] = np.where(local[..., None] > 0, painted, face)
    mask[uy0:uy1, ux0:ux1] = local
    return Occlusion(image_rgb_u8=image, mask_f32=mask, kind=kind)


def soft_inside(*distances_px: np.ndarray) -> np.ndarray:
    """Antialiased region from signed distances to each edge (positive inside), float32 in [0, 1]."""
    d = np.minimum.reduce([np.asarray(x, np.float32) for x in distances_px])
    return np.clip(d + 0.5, 0.0, 1.0)


def luminance(rgb01: np.ndarray) -> np.ndarray:
    return rgb01[..., 0] * 0.299 + rgb01[..., 1] * 0.587 + rgb01[..., 2] * 0.114


def face_lighting(face_rgb_u8: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) float32 multiplier that carries the face's illumination onto an occluder.

    ``region``: (S, S) alpha of the occluder. Why: an occluder pasted with its own flat lighting is the
    easiest tell of a synthetic sample. The blurred face luminance (normalised over the occluded
    region) gives the shading gradient across the occluder; the skin brightness and the scene's average
    colour give exposure and white balance.
    """
    s = face_rgb_u8.shape[0]
    small = cv2.resize(face_rgb_u8, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    region_small = cv2.resize(region.astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA) > 0.5
    if not np.any(region_small):
        return np.ones((s, s, 3), np.float32)
    lum = luminance(small)
    blurred = cv2.GaussianBlur(lum, (0, 0), sigmaX=64 / 14.0)
    ref = float(np.mean(blurred[region_small])) + 1e-3
    shade = np.clip(blurred / ref, 0.45, 1.6) ** rng.uniform(0.35, 0.8)
    exposure = np.clip(float(np.percentile(lum[region_small], 75)) / 0.6, 0.3, 1.25) ** rng.uniform(0.4, 0.8)
    tint = small.reshape(-1, 3).mean(0) + 1e-3
    tint = (tint / tint.mean()) ** rng.uniform(0.1, 0.35)
    full = cv2.resize(shade.astype(np.float32), (s, s), interpolation=cv2.INTER_LINEAR)
    return (full[..., None] * (exposure * tint)[None, None, :]).astype(np.float32)


def value_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w) float32 smooth noise in about [-1, 1] with ``cells`` blobs across the longer side."""
    cells = max(2, int(cells))
    h, w = shape
    ch, cw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    small = rng.uniform(-1.0, 1.0, (ch + 1, cw + 1)).astype(np.float32)
    return cv2.resize(small, (max(1, w), max(1, h)), interpolation=cv2.INTER_CUBIC)


def grain(shape: tuple[int, int], rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Fine fabric/skin grain: (h, w) float32 multiplier around 1."""
    n: np.ndarray = rng.normal(0.0, 1.0, shape).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), 0.6)
    return 1.0 + amplitude * n


def random_colour(rng: np.random.Generator, family: str | None = None) -> np.ndarray:
    """An rgb01 (3,) fabric colour; ``family`` picks a named family, None any saturated hue."""
    families = {
        "blue": (0.52, 0.72, 0.88),
        "white": (0.93, 0.94, 0.95),
        "black": (0.11, 0.11, 0.12),
        "green": (0.45, 0.72, 0.62),
        "pink": (0.93, 0.70, 0.76),
        "grey": (0.62, 0.63, 0.65),
    }
    if family is not None:
        if family not in families:
            raise ValueError(f"colour family must be one of {sorted(families)}, got {family!r}")
        base = np.array(families[family])
        return np.clip(base + rng.normal(0, 0.035, 3), 0.02, 0.98)
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(40, 230), rng.uniform(40, 245)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64) / 255.0


def fabric_pattern(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, unit: float
) -> tuple[np.ndarray, str]:
    """A printed/woven pattern evaluated at pixel-scaled coordinates ``x``, ``y`` ((S, S) each).

    ``unit`` is a pixel length (about the mask height) that scales the motif. Returns ((S, S, 3) rgb01,
    pattern name). Coordinates may be warped (mask u/v times its size) so prints follow the fabric.
    """
    name = str(
        rng.choice(
            ["solid", "stripes", "dots", "checks", "floral", "camo"], p=[0.3, 0.15, 0.15, 0.15, 0.1, 0.15]
        )
    )
    c1, c2, c3 = random_colour(rng), random_colour(rng), random_colour(rng)
    shape = x.shape
    if name == "solid":
        rgb = np.broadcast_to(c1, shape + (3,))
    elif name == "stripes":
        ang = rng.uniform(0, np.pi)
        period = unit * rng.uniform(0.08, 0.3)
        t = (x * np.cos(ang) + y * np.sin(ang)) / period
        duty = rng.uniform(0.3, 0.6)
        sel = ((t - np.floor(t)) < duty).astype(np.float32)[..., None]
        rgb = c1 * sel + c2 * (1 - sel)
    elif name == "dots":
        period = unit * rng.uniform(0.08, 0.2)
        gx, gy = x / period, y / period
        gx = gx + 0.5 * (np.floor(gy) % 2)
        d = np.hypot(gx - np.floor(gx) - 0.5, gy - np.floor(gy) - 0.5)
        sel = np.clip((rng.uniform(0.15, 0.35) - d) * period + 0.5, 0, 1)[..., None]
        rgb = c1 * (1 - sel) + c2 * sel
    elif name == "checks":
        period = unit * rng.uniform(0.1, 0.35)
        sx = ((x / period) % 1.0 < 0.5).astype(np.float32)
        sy = ((y / period) % 1.0 < 0.5).astype(np.float32)
        # Gingham: where both stripe sets cross the colour is full, where one crosses it is half.
        weight = ((sx + sy) / 2.0)[..., None]
        rgb = c2 * (1 - weight) + c1 * weight
    elif name == "floral":
        period = unit * rng.uniform(0.15, 0.3)
        gx, gy = x / period, y / period
        fx, fy = gx - np.floor(gx) - 0.5, gy - np.floor(gy) - 0.5
        r, th = np.hypot(fx, fy), np.arctan2(fy, fx)
        petals = 0.28 + 0.1 * np.cos(int(rng.integers(4, 7)) * th)
        sel = np.clip((petals - r) * period, 0, 1)[..., None]
        centre = np.clip((0.08 - r) * period, 0, 1)[..., None]
        rgb = c1 * (1 - sel) + c2 * sel
        rgb = rgb * (1 - centre) + c3 * centre
    else:  # camo: thresholded smooth noise in three colours
        cells = max(3, int(max(shape) / max(unit * 0.15, 1.0)))
        n1, n2 = value_noise(shape, cells, rng), value_noise(shape, cells, rng)
        s1 = np.clip(n1 * 8, 0, 1)[..., None]
        s2 = np.clip(n2 * 8, 0, 1)[..., None]
        rgb = c1 * (1 - s1) + c2 * s1
        rgb = rgb * (1 - s2 * 0.7) + c3 * s2 * 0.7
    return np.ascontiguousarray(rgb, dtype=np.float32), name


def finish(rgb01: np.ndarray, rng: np.random.Generator, crop_size: int) -> np.ndarray:
    """Camera-like finish for a painted occluder: slight defocus and sensor noise."""
    sigma = rng.uniform(0.0, 0.7) * crop_size / 128.0
    if sigma > 0.25 and min(rgb01.shape[:2]) > 0:
        rgb01 = cv2.GaussianBlur(rgb01, (0, 0), sigma)
    noise = rng.normal(0.0, rng.uniform(0.0, 0.015), rgb01.shape).astype(np.float32)
    return np.clip(rgb01 + noise, 0.0, 1.0).astype(np.float32)


def draw_polyline_alpha(
    size: int, points_xy: np.ndarray, thickness_px: float, closed: bool = False
) -> np.ndarray:
    """Antialiased (size, size) float32 alpha of a thick polyline (sub-pixel precise, round caps)."""
    canvas = np.zeros((size, size), np.uint8)
    shift = 4
    pts = np.rint(np.asarray(points_xy, np.float64) * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], closed, 255, max(1, int(round(thickness_px))), cv2.LINE_AA, shift)
    return canvas.astype(np.float32) / 255.0


def fill_polygon_alpha(size: int, polygons_xy: list[np.ndarray]) -> np.ndarray:
    """Antialiased (size, size) float32 alpha of filled polygons."""
    canvas = np.zeros((size, size), np.uint8)
    shift = 4
    pts = [
        np.rint(np.asarray(p, np.float64) * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
        for p in polygons_xy
    ]
    cv2.fillPoly(canvas, pts, 255, cv2.LINE_AA, shift)
    return canvas.astype(np.float32) / 255.0


def bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 24) -> np.ndarray:
    """(n, 2) points of the quadratic Bezier curve p0 -> p2 pulled towards p1."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
